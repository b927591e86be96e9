package queue

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alertfan/alertfan/sinks"
	"github.com/stretchr/testify/require"
)

// The state upsert flips pending 0→1 and bumps seq exactly when the
// separate UPDATE (sqlMarkPending) did before they were merged.
func TestUpsertFlipsPendingLikeMarkPending(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			sink := &recordingSink{block: make(chan struct{}), entered: make(chan struct{})}
			s := openStore(t, d.opts(t), sink)
			ctx := context.Background()
			read := func() (seq, pending, enq, version int64) {
				require.NoError(t, s.rdb.QueryRowContext(ctx, s.rebind(`SELECT seq, pending, enqueued, version FROM alertfan_state WHERE target = ? AND key = ?`), "r/pagerduty/0", "u").Scan(&seq, &pending, &enq, &version))
				return
			}
			require.NoError(t, s.Enqueue(ctx, []Item{item("u", "firing")}))
			seq, p, e, v := read()
			require.Equal(t, []int64{1, 1, 1, 1}, []int64{seq, p, e, v})
			<-sink.entered
			require.NoError(t, s.Enqueue(ctx, []Item{item("u", "resolved")}))
			seq, p, e, v = read()
			require.Equal(t, []int64{1, 1, 0, 2}, []int64{seq, p, e, v})
			close(sink.block)
			require.Eventually(t, func() bool { _, p, _, _ := read(); return p == 0 }, 10*time.Second, 10*time.Millisecond)
			n := len(sink.all())
			// Repeat: no row changes, no job.
			require.NoError(t, s.Enqueue(ctx, []Item{item("u", "resolved")}))
			seq, p, _, v = read()
			require.Equal(t, []int64{1, 0, 2}, []int64{seq, p, v})
			// New firing: flips pending, bumps seq.
			require.NoError(t, s.Enqueue(ctx, []Item{item("u", "firing")}))
			seq, p, e, v = read()
			require.Equal(t, []int64{2, 1, 1, 3}, []int64{seq, p, e, v})
			require.Eventually(t, func() bool { return len(sink.all()) == n+1 }, 10*time.Second, 10*time.Millisecond)
		})
	}
}

type slowSink struct {
	recordingSink
	inflight, most atomic.Int32
}

func (s *slowSink) Deliver(ctx context.Context, n *sinks.Notification) error {
	now := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for {
		m := s.most.Load()
		if now <= m || s.most.CompareAndSwap(m, now) {
			break
		}
	}
	time.Sleep(30 * time.Millisecond) // a remote API's round trip
	return s.recordingSink.Deliver(ctx, n)
}

// Busy intake paces the starts of calls and holds nothing while they run:
// calls to a target slower than the pace (any remote API) still overlap.
// (A first version held a slot for up to 20 ms per call, which ran such
// calls one at a time, 50 a second, while intake was busy.)
func TestBusyIntakeDoesNotSerializeSlowCalls(t *testing.T) {
	opts := drivers()[0].opts(t)
	sink := &slowSink{}
	s := openStore(t, opts, sink)
	ctx := context.Background()
	defer busyIntake(s)()
	var items []Item
	for i := range 64 {
		items = append(items, item(fmt.Sprintf("slow-%d", i), "firing"))
	}
	require.NoError(t, s.Enqueue(ctx, items))
	require.Eventually(t, func() bool { return len(sink.all()) == 64 }, 30*time.Second, 5*time.Millisecond)
	require.True(t, s.intake.busy(time.Now()))
	require.GreaterOrEqual(t, sink.most.Load(), int32(4), "calls ran one at a time while intake was busy")
}

// A new alert's state is inserted by an Exec (putNewItem); a state that
// is there although the alert's row was not (a store from before the
// alert rows, a row pruned) is upserted as putItem would: the new
// content, the version bumped, pending flipped with a new seq and a job.
func TestNewAlertsStateFoundThereIsUpserted(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			// The calls are held until the test ends: a delivery acked
			// before the states are read would show them not pending (CI's
			// -race pass read am:new delivered).
			sink := &recordingSink{block: make(chan struct{})}
			s := openStore(t, d.opts(t), sink)
			t.Cleanup(func() { close(sink.block) })
			ctx := context.Background()
			_, err := s.db.ExecContext(ctx, s.rebind(`INSERT INTO alertfan_state (target, key, version, delivered, seq, pending, payload, updated_at, want, phase, digest, sent_digest)
				VALUES ('r/pagerduty/0', 'am:old', 1, 1, 1, 0, '{}', 1, 'triggered', 'triggered', 'before', 'before')`))
			require.NoError(t, err)
			_, err = s.Accept(ctx, &Intake{Updates: []Update{
				{Identity: "am:old", Input: "alertmanager", Want: PhaseTriggered, StartsAt: time.Unix(100, 0), Ordered: true, Labels: []byte(`{"alertname":"old"}`), Items: []Item{item("am:old", "firing")}},
				{Identity: "am:new", Input: "alertmanager", Want: PhaseTriggered, StartsAt: time.Unix(100, 0), Ordered: true, Labels: []byte(`{"alertname":"new"}`), Items: []Item{item("am:new", "firing")}},
			}})
			require.NoError(t, err)
			for key, want := range map[string][]any{"am:old": {int64(2), int64(2), int64(1), "firing"}, "am:new": {int64(1), int64(1), int64(1), "firing"}} {
				var version, seq, pending int64
				var digest string
				require.NoError(t, s.rdb.QueryRowContext(ctx, s.rebind(`SELECT version, seq, pending, digest FROM alertfan_state WHERE target = ? AND key = ?`), "r/pagerduty/0", key).Scan(&version, &seq, &pending, &digest))
				require.Equal(t, want, []any{version, seq, pending, digest}, key)
			}
			var jobs int
			require.NoError(t, s.rdb.QueryRowContext(ctx, `SELECT COUNT(*) FROM river_job WHERE kind = 'alertfan_deliver'`).Scan(&jobs))
			require.Equal(t, 1, jobs, "one job carries both keys")
			var args string
			require.NoError(t, s.rdb.QueryRowContext(ctx, `SELECT CAST(args AS TEXT) FROM river_job WHERE kind = 'alertfan_deliver'`).Scan(&args))
			require.Contains(t, args, "am:old") // SQLite keeps args as JSONB
			require.Contains(t, args, "am:new")
		})
	}
}
