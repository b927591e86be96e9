package queue

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
)

// StopWorkers used to wait for every delivery queued for intake's turn: a
// delivery waited its turn and only then saw that shutdown began (the
// turn came before the shutdown check, and nothing woke it). With the
// default pool (2 queues × 50 jobs × 16 keys = 1,600 deliveries, each
// holding a turn 1 ms after the one before) that is 1.6 s of a 7 s
// shutdown spent on turns for calls that will not be made; each job's
// remaining keys then take a turn each while intake stays busy (requests
// still being answered during the shutdown, and slowHold after).
func TestStopWorkersDoesNotWaitForIntakeTurns(t *testing.T) {
	sink := &recordingSink{}
	s := openStore(t, drivers()[0].opts(t), sink)
	ctx := context.Background()
	stop := busyIntake(s)
	defer stop()
	// Other deliveries hold the next 30 s of turns (30,000 reserved, as
	// call reserves them). The horizon is far beyond what StopWorkers takes
	// on its own (River's stop: up to a second or two under -race on a
	// starved machine), so the bound below tells a wait from no wait
	// without depending on the machine's speed.
	queued := takeTurns(t, s, 30_000)
	require.NoError(t, s.Enqueue(ctx, []Item{item("shutdown-turn", "firing")}))
	queued(10 * time.Second)
	require.Empty(t, sink.all())

	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, s.StopWorkers(sctx))
	took := time.Since(start)
	require.Empty(t, sink.all())
	require.Less(t, took, 10*time.Second, "shutdown waited for intake's turns with no call in flight")
}

// downSink answers every call with a network error: the target is down.
type downSink struct{ calls atomic.Int64 }

func (d *downSink) Deliver(ctx context.Context, n *sinks.Notification) error {
	d.calls.Add(1)
	return sinks.Retryable(sinks.ReasonNetwork, 0, errors.New("connection refused"))
}

// A delivery takes intake's turn before it learns that its target is down
// (health.admit) and parks without calling, and it counts as a started
// call for "heavy". While a target with a backlog is down, its jobs keep
// being fetched and parked (every 100 ms to 5 s), each key queuing for a
// turn: a healthy target's delivery waits behind ~800 turns (50 jobs × 16
// keys) that make no call. (The healthy delivery's latency is only logged:
// it also varies with the parked jobs' re-fetches and snoozes on the
// store, 0.25–0.8 s here with or without the turns.)
func TestParkedDeliveriesTakeNoIntakeTurn(t *testing.T) {
	down := &downSink{}
	healthy := &recordingSink{}
	s := openStore(t, drivers()[0].opts(t), down)
	ctx := context.Background()
	require.NoError(t, s.SetTargets(ctx, map[string]Target{
		"r/pagerduty/0": {ID: "r/pagerduty/0", Kind: "pagerduty", Receiver: "r", Sink: down},
		"r/backlog/0":   {ID: "r/backlog/0", Kind: "backlog", Receiver: "r", Sink: healthy},
	}))

	downWithBacklog(t, s)

	const waitMetric = "alertfan_delivery_intake_wait_seconds_total"
	waitedBefore := counterValue(t, s, waitMetric)
	stop := busyIntake(s) // a storm
	defer stop()
	time.Sleep(500 * time.Millisecond) // the parked jobs queue for turns
	callsBefore := down.calls.Load()
	waited := counterValue(t, s, waitMetric) - waitedBefore

	it := item("to-backlog", "firing")
	it.Target, it.Kind = "r/backlog/0", "backlog"
	start := time.Now()
	require.NoError(t, s.Enqueue(ctx, []Item{it}))
	require.Eventually(t, func() bool { return len(healthy.all()) == 1 }, 10*time.Second, time.Millisecond)
	took := time.Since(start)
	t.Logf("in 500 ms deliveries that made no call waited %.1f s for turns; then the healthy target's delivery took %v; the down target was called %d times meanwhile",
		waited, took, down.calls.Load()-callsBefore)
	require.Less(t, waited, 0.1, "deliveries that never call queued for intake's turns")
}

// Parks counted as started calls: a down target's backlog, re-fetched and
// parked without a single call, made deliveries "heavy", so any slow
// accept then paced every other target for a second.
func TestParkedDeliveriesAreNotHeavy(t *testing.T) {
	down := &downSink{}
	s := openStore(t, drivers()[0].opts(t), down)
	downWithBacklog(t, s)
	callsBefore := down.calls.Load()
	heavy := false
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) && !heavy {
		heavy = s.intake.heavy(time.Now())
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the down target was called %d times meanwhile", down.calls.Load()-callsBefore)
	require.False(t, heavy, "deliveries that only parked count as more than 2,000 calls a second")
}

// downWithBacklog takes the PagerDuty target r/pagerduty/0 (a downSink)
// down, then queues a backlog of 60 jobs for it.
func downWithBacklog(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, s.Enqueue(ctx, []Item{item("first", "firing")}))
	require.Eventually(t, func() bool { _, ok := s.Down()["r/pagerduty/0"]; return ok }, 5*time.Second, 5*time.Millisecond)
	var backlog []Item
	for i := range 60 * maxKeysPerJob {
		backlog = append(backlog, item(fmt.Sprintf("k%05d", i), "firing"))
	}
	require.NoError(t, s.Enqueue(ctx, backlog))
}
