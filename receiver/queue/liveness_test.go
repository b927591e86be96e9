package queue

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/sinks"
)

// hangingSink holds every call until release is closed or the call's
// context ends, and counts them.
type hangingSink struct {
	calls   atomic.Int64
	release chan struct{}
}

func (h *hangingSink) Deliver(ctx context.Context, n *sinks.Notification) error {
	h.calls.Add(1)
	select {
	case <-h.release:
	case <-ctx.Done():
	}
	return sinks.Retryable(sinks.ReasonTimeout, 0, context.DeadlineExceeded)
}

// A replica's running jobs stay its own while its database session lives,
// however long they run; once the session is gone (the process killed),
// another replica takes them over after deadReplicaSweeps sweeps spanning
// deadReplicaConfirm, not after rescue_after.
func TestDeadReplicasRunningJobsAreTakenOver(t *testing.T) {
	a, opts := replicaRunningAHungJob(t, 100*time.Millisecond, 500*time.Millisecond)
	sink := &recordingSink{}
	b := openStore(t, opts, sink)
	require.True(t, strings.HasPrefix(b.client.ID(), liveIDPrefix))
	time.Sleep(2 * time.Second) // four times deadReplicaConfirm, twenty sweeps
	require.Empty(t, sink.all(), "a live replica's running job is never taken over")
	require.Zero(t, counterValue(t, b, "alertfan_queue_dead_replica_jobs_total"))

	// The first replica's session ends, as at a kill: its lock's backend
	// is terminated and it cannot open another.
	a.live.db.Close()
	require.True(t, endLivenessSession(t, b.db, a.client.ID()))
	require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 10*time.Second, 10*time.Millisecond, "the other replica takes the job over")
	// At least once: unlike a killed process, this one's workers still
	// fetch, and may take the job back before the other replica does
	// (which then takes it over again).
	require.GreaterOrEqual(t, counterValue(t, b, "alertfan_queue_dead_replica_jobs_total"), 1.0)
}

// A database that drops every session again and again (a flapping
// failover) takes no live replica's running job over: each drop ends the
// judging replica's own session too, which drops its suspicions. The
// intervals are the defaults scaled by 1/50 (ticks 5 s, sweeps 10 s,
// 15 s free to be dead, drops every 7 s: a fresh helper's run), at which
// sweeps that kept their suspicions across drops took live replicas'
// jobs over.
func TestFlappingDatabaseTakesNoLiveReplicasJobsOver(t *testing.T) {
	a, opts := replicaRunningAHungJob(t, 200*time.Millisecond, 300*time.Millisecond)
	ctx := context.Background()
	sink := &recordingSink{}
	b := openStore(t, opts, sink)

	admin, err := sql.Open("pgx", opts.DSN)
	require.NoError(t, err)
	defer admin.Close()
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(140 * time.Millisecond) {
		_, err := admin.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
		require.NoError(t, err)
	}
	time.Sleep(time.Second) // the replicas are back
	require.Empty(t, sink.all(), "no live replica's running job taken over")
	require.Zero(t, counterValue(t, b, "alertfan_queue_dead_replica_jobs_total"))
	require.Zero(t, counterValue(t, a, "alertfan_queue_dead_replica_jobs_total"))
}

// A replica whose own sessions alone keep being dropped (its liveness
// lock's, every 140 ms here) takes its lock back at once each time, and the
// other replica's sweeps, 200 ms apart, do not find it free at three in a
// row: nothing is taken over. A fresh helper saw a replica whose sessions
// were dropped every 3 s taken over when it looked at its lock every 5 s.
func TestReplicaWhoseSessionsDropIsNotTakenOver(t *testing.T) {
	a, opts := replicaRunningAHungJob(t, 200*time.Millisecond, 300*time.Millisecond)
	sink := &recordingSink{}
	b := openStore(t, opts, sink)
	ended := 0
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(140 * time.Millisecond) {
		if endLivenessSession(t, b.db, a.client.ID()) {
			ended++
		}
	}
	require.Greater(t, ended, 10, "the replica took its lock back each time")
	time.Sleep(time.Second)
	require.Empty(t, sink.all(), "no live replica's running job taken over")
	require.Zero(t, counterValue(t, b, "alertfan_queue_dead_replica_jobs_total"))
}

// endLivenessSession terminates the session holding client's liveness
// lock, as PostgreSQL ends a killed process's, and reports whether one
// held it.
func endLivenessSession(t *testing.T, db *sql.DB, client string) bool {
	t.Helper()
	key := livenessKey(client)
	var ended bool
	err := db.QueryRowContext(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND classid = $1 AND objid = $2`,
		int64(uint32(uint64(key)>>32)), int64(uint32(key))).Scan(&ended)
	if errors.Is(err, sql.ErrNoRows) {
		return false
	}
	require.NoError(t, err)
	return ended
}

func TestLiveClientID(t *testing.T) {
	now := time.Date(2026, 12, 7, 20, 0, 0, 123456000, time.UTC)
	id := liveClientID(now)
	require.True(t, strings.HasPrefix(id, liveIDPrefix), id)
	require.LessOrEqual(t, len(id), 100, "River refuses a client id over 100 bytes")
	require.True(t, strings.HasSuffix(id, "_2026_12_07T20_00_00_123456"), id)
	require.NotEqual(t, id, liveClientID(now.Add(time.Microsecond)))
}

// replicaRunningAHungJob starts a replica on a fresh PostgreSQL database
// whose one job's call hangs until the test ends, with liveness ticks of
// 100 ms and sweeps and confirmation as given, and returns it and the
// options another replica of it opens with.
func replicaRunningAHungJob(t *testing.T, sweep, confirm time.Duration) (*Store, Options) {
	t.Helper()
	dsn := testenv.PostgresDSN(t)
	for v, d := range map[*time.Duration]time.Duration{&livenessEvery: 100 * time.Millisecond, &deadReplicaEvery: sweep, &deadReplicaConfirm: confirm} {
		old := *v
		*v = d
		t.Cleanup(func() { *v = old })
	}
	opts := Options{Driver: DriverPostgres, DSN: dsn}
	hang := &hangingSink{release: make(chan struct{})}
	a := openStore(t, opts, hang)
	t.Cleanup(func() { close(hang.release) }) // before the stores close
	require.NoError(t, a.Enqueue(context.Background(), []Item{item("k", "firing")}))
	require.Eventually(t, func() bool { return hang.calls.Load() == 1 }, 10*time.Second, 10*time.Millisecond)
	return a, opts
}
