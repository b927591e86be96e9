package queue

import (
	"context"
	"fmt"
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

type slowSink struct{ recordingSink }

func (s *slowSink) Deliver(ctx context.Context, n *sinks.Notification) error {
	time.Sleep(30 * time.Millisecond) // a remote API's round trip
	return s.recordingSink.Deliver(ctx, n)
}

// Busy intake paces the starts of calls, and holds nothing while they run:
// a target slower than the pace (any remote API) still gets its calls in
// parallel. (A first version held a slot for up to 20 ms per call, which
// capped every remote target at 50 calls/s while intake was busy.)
func TestBusyIntakeDoesNotSerializeSlowCalls(t *testing.T) {
	for _, busy := range []bool{false, true} {
		opts := drivers()[0].opts(t)
		sink := &slowSink{}
		s := openStore(t, opts, sink)
		ctx := context.Background()
		if busy {
			for range busyAt {
				defer s.intake.enter()()
			}
		}
		var items []Item
		for i := range 64 {
			items = append(items, item(fmt.Sprintf("slow-%d", i), "firing"))
		}
		start := time.Now()
		require.NoError(t, s.Enqueue(ctx, items))
		require.Eventually(t, func() bool { return len(sink.all()) == 64 }, 20*time.Second, 5*time.Millisecond)
		took := time.Since(start)
		t.Logf("intake busy=%v: 64 calls of 30 ms took %v", busy, took.Round(time.Millisecond))
		require.Less(t, took, 900*time.Millisecond, "64 calls one after another would take 1.9 s")
	}
}
