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
	var logs testenv.LogBuffer
	opts := drivers()[0].opts(t)
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := openStore(t, opts, sink)
	ctx := context.Background()
	require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
	require.Eventually(t, func() bool { return len(s.Down()) == 1 }, 10*time.Second, 5*time.Millisecond)
	var held []Item
	for i := range 20 {
		held = append(held, item(fmt.Sprintf("b%02d", i), "firing"))
	}
	require.NoError(t, s.Enqueue(ctx, held))
	require.NoError(t, s.Enqueue(ctx, []Item{item("noop", "firing")}))
	require.Eventually(t, func() bool { return sink.done.Load() > 0 }, 15*time.Second, 5*time.Millisecond)
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
