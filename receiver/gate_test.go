package receiver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
)

type countingNotifier struct{ delivered atomic.Int32 }

func (c *countingNotifier) Deliver(ctx context.Context, n *sinks.Notification) error {
	c.delivered.Add(1)
	return nil
}
func (c *countingNotifier) Grouped() bool       { return false }
func (c *countingNotifier) Destination() string { return "x" }

// deliverRecovering recovers a panic as the queue's worker does.
func deliverRecovering(g *gatedSink, n *sinks.Notification) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errors.New("panicked")
		}
	}()
	return g.Deliver(context.Background(), n)
}

// A readiness check that panics (Backlog's: decoding the space's
// replies) is recovered by the worker; the gate checks again later rather
// than stay "checking" — every delivery held — until a restart.
func TestGateCheckThatPanicsIsCheckedAgain(t *testing.T) {
	old := gateRecheck
	gateRecheck = 50 * time.Millisecond
	t.Cleanup(func() { gateRecheck = old })
	var checks atomic.Int32
	inner := &countingNotifier{}
	g := newGatedSink(inner, "r/backlog/0", func(context.Context) error {
		if checks.Add(1) == 1 {
			panic("decoding the space's reply")
		}
		return nil
	}, errors.New("401"), slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"}))
	n := &sinks.Notification{Key: "a"}
	time.Sleep(60 * time.Millisecond)
	require.EqualError(t, deliverRecovering(g, n), "panicked")
	// A check that panicked is a failed check: the next waits gateRecheck.
	for range 5 {
		require.ErrorContains(t, deliverRecovering(g, n), "not ready")
	}
	require.Equal(t, int32(1), checks.Load())
	require.Eventually(t, func() bool { return deliverRecovering(g, n) == nil }, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, int32(2), checks.Load())
	require.Equal(t, int32(1), inner.delivered.Load())
}
