package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/sinks"
)

// downStore opens a store whose one target (sink) is down: a first
// alert's delivery failed with a network error. logs is its log.
func downStore(t *testing.T, sink Sink) (*Store, *testenv.LogBuffer) {
	t.Helper()
	logs := &testenv.LogBuffer{}
	opts := drivers()[0].opts(t)
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	s := openStore(t, opts, sink)
	require.NoError(t, s.Enqueue(context.Background(), []Item{item("a", "firing")}))
	require.Eventually(t, func() bool { return len(s.Down()) == 1 }, 10*time.Second, 5*time.Millisecond)
	return s, logs
}

// noCallSink is down (a network error) for every key but those it has
// nothing to send for, which it answers without a call, as the Backlog
// sink does for a change event, a resolve with on_resolved: none, or a
// resolve of an issue it never created.
type noCallSink struct {
	calls atomic.Int64 // calls that reached the (down) target
	mu    sync.Mutex
	noop  map[string]bool
	done  atomic.Int64 // deliveries answered without a call
}

func (s *noCallSink) Deliver(ctx context.Context, n *sinks.Notification) error {
	s.mu.Lock()
	noop := s.noop[n.Key]
	s.mu.Unlock()
	if noop {
		s.done.Add(1)
		return nil // nothing to send: sinks.CallFrom(ctx) stays empty
	}
	sinks.CallFrom(ctx).Action = "trigger"
	s.calls.Add(1)
	return sinks.Retryable(sinks.ReasonNetwork, 0, errors.New("connection refused"))
}

// A probe that made no call is not an answer of the target: it brought
// the target back and released its whole queue onto a target still down,
// every held delivery calling it and spending an attempt (found by a
// fresh helper breaking the probe change).
func TestProbeWithoutACallDoesNotBringATargetBack(t *testing.T) {
	sink := &noCallSink{noop: map[string]bool{"noop": true}}
	s, logs := downStore(t, sink)
	ctx := context.Background()
	var held []Item
	for i := range 20 {
		held = append(held, item(fmt.Sprintf("b%02d", i), "firing"))
	}
	require.NoError(t, s.Enqueue(ctx, held))
	require.NoError(t, s.Enqueue(ctx, []Item{item("noop", "firing")}))
	// The no-op key gets its turn to probe among the held keys, and a
	// parked key wakes only when River's scheduler moves its snoozed job
	// back (every few seconds): it came within 2 s in most runs, but
	// after 15 s in 1 of 30 and 47 s in 1 of 40, so the bound is wide.
	require.Eventually(t, func() bool { return sink.done.Load() > 0 }, 90*time.Second, 5*time.Millisecond)
	require.NotContains(t, logs.String(), "Target is back", "a delivery that made no call brought the target back")
	require.Len(t, s.Down(), 1)
}

// A reload carries a target's health with its destination: a target
// removed while down is not reported down for ever, an id that now sends
// to another destination starts up, and a destination that moved to
// another id is still down there (found by the same helper).
func TestReloadCarriesHealthWithTheDestination(t *testing.T) {
	const id, nid = "r/pagerduty/0", "r2/pagerduty/0"
	tests := []struct {
		name     string
		after    func(down, healthy Sink) map[string]Target
		downIDs  []string
		gaugeIDs map[string]float64 // alertfan_target_up per configured id; absent ids have no series
	}{
		{"target removed", func(down, healthy Sink) map[string]Target {
			return map[string]Target{"r/backlog/0": {ID: "r/backlog/0", Kind: "backlog", Receiver: "r", Sink: healthy, Destination: "bl:x"}}
		}, []string{RetiredPrefix + "pd:one"}, map[string]float64{"r/backlog/0": 1}},
		{"id now sends to another destination", func(down, healthy Sink) map[string]Target {
			return map[string]Target{id: {ID: id, Kind: "pagerduty", Receiver: "r", Sink: healthy, Destination: "pd:other"}}
		}, []string{RetiredPrefix + "pd:one"}, map[string]float64{id: 1}},
		{"destination moved to another id", func(down, healthy Sink) map[string]Target {
			return map[string]Target{nid: {ID: nid, Kind: "pagerduty", Receiver: "r2", Sink: down, Destination: "pd:one"}}
		}, []string{nid}, map[string]float64{nid: 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			down, healthy := &downSink{}, &recordingSink{}
			s := openStore(t, drivers()[0].opts(t), down)
			ctx := context.Background()
			require.NoError(t, s.SetTargets(ctx, map[string]Target{id: {ID: id, Kind: "pagerduty", Receiver: "r", Sink: down, Destination: "pd:one"}}))
			require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
			require.Eventually(t, func() bool { _, ok := s.Down()[id]; return ok }, 10*time.Second, 5*time.Millisecond)

			require.NoError(t, s.SetTargets(ctx, tc.after(down, healthy)))
			var downIDs []string
			for d := range s.Down() {
				downIDs = append(downIDs, d)
			}
			require.ElementsMatch(t, tc.downIDs, downIDs)
			require.Equal(t, tc.gaugeIDs, targetUpSeries(t, s))
		})
	}
}

// targetUpSeries is alertfan_target_up by target.
func targetUpSeries(t *testing.T, s *Store) map[string]float64 {
	t.Helper()
	mfs, err := s.opts.Registerer.(prometheus.Gatherer).Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "alertfan_target_up" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "target" {
					out[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}

// Two replicas on one PostgreSQL database each keep their own health. The
// replica that reloads second finds the destination already moved in the
// shared store; its health must follow the destination all the same
// (found by a second helper breaking the reload change).
func TestReloadCarriesHealthOnEveryReplica(t *testing.T) {
	ctx := context.Background()
	shared := Options{Driver: DriverPostgres, DSN: testenv.PostgresDSN(t)}
	sink := &downSink{}
	a, b := openStore(t, shared, sink), openStore(t, shared, sink)
	const oldID, newID, dest = "r/pagerduty/0", "r/pagerduty/1", "pd:one"
	before := map[string]Target{oldID: {ID: oldID, Kind: "pagerduty", Receiver: "r", Sink: sink, Destination: dest}}
	after := map[string]Target{
		oldID: {ID: oldID, Kind: "pagerduty", Receiver: "r", Sink: &recordingSink{}, Destination: "pd:inserted"},
		newID: {ID: newID, Kind: "pagerduty", Receiver: "r", Sink: sink, Destination: dest},
	}
	for _, s := range []*Store{a, b} {
		require.NoError(t, s.SetTargets(ctx, before))
		now := time.Now()
		wentDown, _ := s.health.failed(oldID, now, now, 0, 50*time.Millisecond)
		require.True(t, wentDown)
	}
	require.NoError(t, a.SetTargets(ctx, after)) // replica A reloads first
	require.NoError(t, b.SetTargets(ctx, after)) // then replica B
	for name, s := range map[string]*Store{"A": a, "B": b} {
		down := s.Down()
		require.Contains(t, down, newID, "replica %s", name)
		require.NotContains(t, down, oldID, "replica %s", name)
	}
}

// A retired destination (its leftover work delivered under
// retired/<destination>) that fails exports no alertfan_target_up series:
// no reload would remove it, and "a target is down" fired until a restart.
func TestRetiredTargetHasNoTargetUpSeries(t *testing.T) {
	s := openStore(t, drivers()[0].opts(t), &recordingSink{})
	ctx := context.Background()
	const id, dest = "r/pagerduty/0", "pd:gone"
	require.NoError(t, s.SetTargets(ctx, map[string]Target{id: {ID: id, Kind: "pagerduty", Receiver: "r", Sink: &downSink{}, Destination: dest}}))
	require.NoError(t, s.SetTargets(ctx, map[string]Target{"r/backlog/0": {ID: "r/backlog/0", Kind: "backlog", Receiver: "r", Sink: &recordingSink{}, Destination: "bl:x"}}))
	rt, ok := s.target(RetiredPrefix + dest)
	require.True(t, ok)
	// The leftover resolve fails, as deliver records it.
	s.targetFailed(rt, sinks.AsError(sinks.Retryable(sinks.ReasonNetwork, 0, errors.New("connection refused"))), time.Now(), 0, false)
	require.Contains(t, s.Down(), RetiredPrefix+dest, "its leftover work is held")
	require.Equal(t, map[string]float64{"r/backlog/0": 1}, targetUpSeries(t, s))
}

// panicAfterCallSink: the target is down (the first call fails with a
// network error); every later call reaches it and then the sink panics.
type panicAfterCallSink struct{ calls atomic.Int64 }

func (p *panicAfterCallSink) Deliver(ctx context.Context, n *sinks.Notification) error {
	sinks.CallFrom(ctx).Action = "trigger"
	if p.calls.Add(1) == 1 {
		return sinks.Retryable(sinks.ReasonNetwork, 0, errors.New("connection refused"))
	}
	panic("after the call")
}

// A probe that panics moves the back-off as a failed one does: it ended
// the probe at once, and the next was due already, so a down target whose
// sink panics after each call was probed ~40 times a second.
func TestPanickingProbeKeepsTheBackoff(t *testing.T) {
	sink := &panicAfterCallSink{}
	s := openStore(t, drivers()[0].opts(t), sink) // min_backoff 50 ms
	ctx := context.Background()
	var items []Item
	for i := range 20 {
		items = append(items, item(fmt.Sprintf("k%02d", i), "firing"))
	}
	require.NoError(t, s.Enqueue(ctx, items[:1]))
	require.Eventually(t, func() bool { return len(s.Down()) == 1 }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, s.Enqueue(ctx, items[1:]))
	time.Sleep(2 * time.Second)
	// 100+200+400+800 ms of back-off after the first failure's 50 ms: at
	// most ~5 probes in 2 s.
	require.LessOrEqual(t, sink.calls.Load()-1, int64(6), "probes in 2 s of a down target")
	require.Len(t, s.Down(), 1, "a panic is no answer")
}
