package queue

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
)

// A delivery that waited for intake's turn (a storm: the very time
// resolves arrive) calls with the alert's state as it is after the wait,
// not as its job read it: a trigger whose alert resolved meanwhile is
// never sent (it was, and paged for an alert already resolved, then
// resolved it).
func TestStateReadAgainAfterWaitingForIntake(t *testing.T) {
	t.Parallel() // waits on timers and the store, not the CPU
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			sink := &recordingSink{}
			s := openStore(t, d.opts(t), sink)
			ctx := context.Background()
			exit := sync.OnceFunc(busyIntake(s))
			defer exit()
			queued := takeTurns(t, s, 1000) // a second of turns ahead
			require.NoError(t, s.Enqueue(ctx, []Item{item("flap", "firing")}))
			queued(3 * time.Second)
			require.NoError(t, s.Enqueue(ctx, []Item{item("flap", "resolved")}))
			exit()
			waitIdle(t, s)
			require.Empty(t, sink.all(), "a trigger for an alert that resolved while its call waited")
		})
	}
}

// A two-step plan (resolve the old occurrence, then trigger the new one):
// the new occurrence resolves while step 1's call is in flight (a slow
// target, 300 ms). Step 2 does not page for the occurrence already
// resolved: it was sent with the state read before step 1 (found by a
// fresh helper).
func TestSecondStepAfterASlowFirstStep(t *testing.T) {
	t.Parallel() // waits on timers and the store, not the CPU
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			sink := &fnSink{answer: func(n *sinks.Notification, call int) error { return nil }}
			s := openStore(t, d.opts(t), sink)
			require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
			waitIdle(t, s)
			entered, release := make(chan struct{}), make(chan struct{})
			sink.set(func(n *sinks.Notification, call int) error {
				if call == 2 {
					close(entered)
					<-release
				}
				return nil
			})
			// Resolve and a new occurrence in one commit: plan = [resolve old, trigger new].
			require.NoError(t, s.Enqueue(ctx, []Item{item("a", "resolved"), item("a", "firing")}))
			<-entered
			require.NoError(t, s.Enqueue(ctx, []Item{item("a", "resolved")})) // occurrence 2 resolves
			time.Sleep(300 * time.Millisecond)                                // the slow call
			close(release)
			waitIdle(t, s)
			st := sink.statuses()
			t.Logf("calls: %v", st)
			require.NotContains(t, st[2:], sinks.StatusFiring, "a trigger sent for an occurrence that resolved before the call")
		})
	}
}

// A key whose alert changes more often than its rate-limit spacing: each
// delivery waited for its pace, read the state again, found it moved and
// started over, a slot spent and no call made, for as long as the alert
// kept changing (found by a fresh helper). The newer state takes over the
// slot and is sent.
func TestFlappingKeyUnderPaceStillCalls(t *testing.T) {
	t.Parallel() // waits on timers and the store, not the CPU
	ctx := context.Background()
	opts := drivers()[0].opts(t)
	sink := &limitedSink{l: sinks.NewLimiters().Get("pagerduty", "rk", 120)} // 500 ms apart
	sink.answer = func(n *sinks.Notification, call int) error { return nil }
	s := openStore(t, opts, sink)
	require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
	require.Eventually(t, func() bool { return sink.count() == 1 }, 5*time.Second, 5*time.Millisecond)
	start := time.Now()
	i := 0
	for time.Since(start) < 4*time.Second {
		i++
		it := item("a", "firing")
		it.Digest = fmt.Sprintf("firing %d", i)
		require.NoError(t, s.Enqueue(ctx, []Item{it}))
		time.Sleep(100 * time.Millisecond)
	}
	n := sink.count()
	t.Logf("calls during 4 s of updates every 100 ms at 120/min: %d", n-1)
	require.GreaterOrEqual(t, n-1, 3, "the key made (almost) no call while its alert kept changing")
}

// TestRetryAfterHoldEndsAtMaxAge with two PostgreSQL replicas sharing the
// key's rate budget: replica A's call is answered 429 (Retry-After 30 s,
// max_age 2 s); A then stops and replica B runs the retry. The hold is in
// force for B too (held_until in alertfan_rate, told with B's claim), so
// the key is dead-lettered at max_age, not called after the Retry-After;
// and B's pace never waits past maxPaceWait for the slot it claimed
// (found by a fresh helper: B waited 28 s holding a worker, then called).
func TestRetryAfterHoldEndsAtMaxAgeOnAnotherReplica(t *testing.T) {
	t.Parallel() // waits on timers and the store, not the CPU
	ctx := context.Background()
	opts := drivers()[1].opts(t)
	opts.MaxAge = 2 * time.Second
	answer := func(n *sinks.Notification, call int) error {
		return sinks.StatusError(429, 30*time.Second, fmt.Errorf("pagerduty answered 429"))
	}
	limA := sinks.NewLimiters()
	sinkA := &limitedSink{}
	sinkA.answer = answer
	a := openStoreWith(t, opts, sinkA, func(s *Store) { limA.SetBudget(s.RateBudget()); sinkA.l = limA.Get("pagerduty", "rk", 120) })
	start := time.Now()
	require.NoError(t, a.Enqueue(ctx, []Item{item("a", "firing")}))
	require.Eventually(t, func() bool { return sinkA.count() == 1 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { n, _, _ := stateAttempts(t, a, "a"); return n == 1 }, 10*time.Second, 5*time.Millisecond)
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	require.NoError(t, a.StopWorkers(sctx))
	limB := sinks.NewLimiters()
	sinkB := &limitedSink{}
	sinkB.answer = answer
	b := openStoreWith(t, opts, sinkB, func(s *Store) { limB.SetBudget(s.RateBudget()); sinkB.l = limB.Get("pagerduty", "rk", 120) })
	deadline := time.Now().Add(12 * time.Second)
	for {
		dead, err := b.DeadLetters(ctx)
		require.NoError(t, err)
		if len(dead) == 1 {
			t.Logf("dead-lettered after %v: %s", time.Since(start).Round(100*time.Millisecond), dead[0].Error)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not dead-lettered %v after the 429 (max_age 2s); B's calls: %d", time.Since(start).Round(time.Second), sinkB.count())
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.Zero(t, sinkB.count(), "B called during the 429's hold")
}
