package queue

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSeenFilter(t *testing.T) {
	f := newSeenFilter()
	require.False(t, f.maybe("am:1"))
	f.add("am:1")
	require.True(t, f.maybe("am:1"))
	require.False(t, f.maybe("am:2"), "a different identity is not seen (up to a hash collision)")

	// Past half full it starts over rather than answer "maybe" for all.
	for i := range seenFilterBits {
		f.add(fmt.Sprint(i))
		if f.count.Load() == 0 {
			break
		}
	}
	require.Less(t, f.count.Load(), int64(seenFilterBits/2))
}

// The filter is only a hint: an alert with a row that the filter has not
// seen (after a restart, or written by another replica) still takes the
// read path, so an out-of-order firing is still told from a new one.
func TestStaleAfterRestartWithEmptySeenFilter(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			opts := d.opts(t)
			sink := &recordingSink{}
			ctx := context.Background()
			start := time.Now().Add(-time.Hour).Truncate(time.Second)
			update := func(want Phase, startsAt, endsAt time.Time) *Intake {
				status := "firing"
				if want == PhaseResolved {
					status = "resolved"
				}
				return &Intake{Updates: []Update{{
					Identity: "am:restart", Input: "alertmanager", Want: want,
					StartsAt: startsAt, EndsAt: endsAt, Ordered: true, Labels: []byte(`{"alertname":"restart"}`),
					Items: []Item{item("restart", status)},
				}}}
			}
			s := openStore(t, opts, sink)
			_, err := s.Accept(ctx, update(PhaseTriggered, start, time.Time{}))
			require.NoError(t, err)
			_, err = s.Accept(ctx, update(PhaseResolved, start, start.Add(time.Minute)))
			require.NoError(t, err)
			require.NoError(t, s.Close(ctx))

			// A new process: its filter has never seen the alert.
			s = openStore(t, opts, sink)
			require.False(t, s.seen.maybe("am:restart"))
			res, err := s.Accept(ctx, update(PhaseTriggered, start, time.Time{}))
			require.NoError(t, err)
			require.Equal(t, 1, res.Stale, "the late firing of the resolved occurrence is stale")
			require.True(t, s.seen.maybe("am:restart"))
		})
	}
}

// The writer's catch-up checkpoint never waits for the background one (it
// skips and tries after a later batch), and runs once it can. (That it
// keeps intake's p99 down under steady load is measured, not asserted:
// BENCHMARKS.md.)
func TestCatchUpNeverWaits(t *testing.T) {
	s := openStore(t, drivers()[0].opts(t), &recordingSink{})
	ctx := context.Background()
	for i := range 50 {
		require.NoError(t, s.Enqueue(ctx, []Item{item(fmt.Sprintf("wal-%d", i), "firing")}))
	}

	// Held by the background checkpoint: the writer does not wait, and
	// keeps the request for a later batch.
	s.ckMu.Lock()
	s.catchUp.Store(true)
	done := make(chan struct{})
	go func() { s.catchUpWAL(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the catch-up waited for the background checkpoint")
	}
	require.True(t, s.catchUp.Load())
	s.ckMu.Unlock()

	// Free: the next batch runs it.
	require.NoError(t, s.Enqueue(ctx, []Item{item("wal-next", "firing")}))
	require.Eventually(t, func() bool { return !s.catchUp.Load() }, 5*time.Second, 10*time.Millisecond)
}
