package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
)

// A fetch whose answer a cut connection lost leaves its jobs running
// under the replica's client id, with no worker on them. The replica's
// sweep makes them available again within fetchLostAfter + fetchLostEvery
// instead of rescue_after (default job_timeout + 4 min); a job that did
// reach its worker is never touched, however long it runs.
func TestFetchLostJobMadeAvailable(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	ctx := context.Background()
	sink := &recordingSink{block: make(chan struct{}), entered: make(chan struct{})}
	a := openReplica(t, dsn, map[string]Target{"r/pagerduty/0": target("0", destA, sink)})
	state := func(key string) (st string) {
		t.Helper()
		require.NoError(t, a.rdb.QueryRowContext(ctx, `SELECT state FROM river_job WHERE args::text LIKE '%' || $1 || '%'`, key).Scan(&st))
		return st
	}

	// A job at work here for longer than fetchLostAfter is left alone.
	require.NoError(t, a.Enqueue(ctx, []Item{item("working", "firing")}))
	<-sink.entered
	_, err := a.db.ExecContext(ctx, `UPDATE river_job SET attempted_at = now() - interval '1 minute' WHERE state = 'running'`)
	require.NoError(t, err)
	time.Sleep(fetchLostEvery + 2*time.Second)
	require.Equal(t, "running", state("working"), "a job its worker holds stays running")
	require.Zero(t, counterValue(t, a, "alertfan_queue_fetch_lost_total"))
	close(sink.block)
	require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 10*time.Second, 10*time.Millisecond)

	// A job the database marked running for a's fetch, which never reached
	// a's workers (stopped: nothing of a takes it again).
	require.NoError(t, a.StopWorkers(ctx))
	require.NoError(t, a.Enqueue(ctx, []Item{item("lost", "firing")}))
	res, err := a.db.ExecContext(ctx, `UPDATE river_job SET state = 'running', attempt = attempt + 1, attempted_at = now() - interval '1 minute',
		attempted_by = ARRAY[$1::text] WHERE state = 'available'`, a.client.ID())
	require.NoError(t, err)
	n, _ := res.RowsAffected()
	require.EqualValues(t, 1, n)
	require.Eventually(t, func() bool { return state("lost") == "available" }, fetchLostEvery+5*time.Second, 100*time.Millisecond,
		"made available again well before rescue_after (%s)", a.opts.RescueAfter)
	require.Equal(t, 1.0, counterValue(t, a, "alertfan_queue_fetch_lost_total"))

	// Another replica delivers it.
	bSink := &recordingSink{}
	openReplica(t, dsn, map[string]Target{"r/pagerduty/0": target("0", destA, bSink)})
	require.Eventually(t, func() bool { return len(bSink.all()) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "lost", bSink.all()[0].Key)
	require.Len(t, sink.all(), 1, "a delivered only its own job")
}
