package queue

import (
	"context"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
)

// A fetch whose answer a cut connection lost leaves its jobs running
// under the replica's client id, with no worker on them. The replica's
// sweep makes them available again within fetchLostAfter + fetchLostEvery
// (30–40 s; shortened here) instead of rescue_after (default job_timeout
// + 4 min); a job that did reach its worker is never touched, however
// long it runs.
func TestFetchLostJobMadeAvailable(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	every, after := fetchLostEvery, fetchLostAfter
	t.Cleanup(func() { fetchLostEvery, fetchLostAfter = every, after }) // after the stores close
	fetchLostEvery, fetchLostAfter = 500*time.Millisecond, 2*time.Second
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
	time.Sleep(fetchLostAfter + 3*fetchLostEvery)
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
	require.Eventually(t, func() bool { return state("lost") == "available" }, 5*time.Second, 50*time.Millisecond,
		"made available again well before rescue_after (%s)", a.opts.RescueAfter)
	require.Equal(t, 1.0, counterValue(t, a, "alertfan_queue_fetch_lost_total"))

	// Another replica delivers it.
	bSink := &recordingSink{}
	openReplica(t, dsn, map[string]Target{"r/pagerduty/0": target("0", destA, bSink)})
	require.Eventually(t, func() bool { return len(bSink.all()) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "lost", bSink.all()[0].Key)
	require.Len(t, sink.all(), 1, "a delivered only its own job")
}

// A snooze gives the attempt back, so the run after it has the same
// attempt number; the snoozed run's report, arriving after the next run
// reached the worker, must not forget that run (helper 69's find against
// a key of (id, attempt)): runs are told apart by their fetch time.
func TestFetchLostReportOfASnoozedRunKeepsTheNext(t *testing.T) {
	s := &Store{closing: make(chan struct{})}
	first, second := time.Now().Add(-time.Second).Truncate(time.Microsecond), time.Now().Truncate(time.Microsecond)
	k1, _ := keyOf(7, &first)
	k2, _ := keyOf(7, &second)
	s.fetchLost.started(k1)
	s.fetchLost.started(k2) // fetched again, same attempt number
	events := make(chan *river.Event, 1)
	s.wg.Add(1)
	go s.followOutcomes(events, func() {})
	events <- &river.Event{Kind: river.EventKindJobSnoozed, Job: &rivertype.JobRow{ID: 7, Attempt: 1, AttemptedAt: &first}}
	require.Eventually(t, func() bool { return !s.fetchLost.reached(k1) }, time.Second, time.Millisecond)
	require.True(t, s.fetchLost.reached(k2), "the next run is still known to have reached the worker")
	close(s.closing)
	s.wg.Wait()
}
