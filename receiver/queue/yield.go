package queue

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// intakeFirst gives intake precedence over deliveries on a busy process.
//
// Intake and deliveries share the CPU and the store's writer. A queue
// draining at full speed to a fast target spends most of the CPU on
// deliveries (render, call, ack), and intake then waits behind them:
// measured on 2 cores, intake fell to a third of its throughput and a
// 500/s flow's p50 to 300 ms, long enough for Alertmanager to time out and
// send the storm again. So while busyAt or more requests are being
// accepted at once (and for busyHold after), deliveries start their calls
// at most busyCallRate a second, in turn, and intake gets the rest of the
// CPU. Nothing is held while a call runs: a slow or hung target costs the
// others nothing. By Little's law busyAt is a latency target: at 500
// requests/s, 8 in flight is 16 ms each. Deliveries never stop: the queue
// keeps draining through any storm, and catches up afterwards.
//
// Source: the measurements in BENCHMARKS.md ("Intake goes first").
type intakeFirst struct {
	inflight  atomic.Int64
	busyUntil atomic.Int64 // Unix ns: intake counts as busy until then
	calls     *rate.Limiter
	waited    func(seconds float64)
}

const (
	// busyAt is how many requests being accepted at once make intake
	// busy. Fewer is a flow the deliveries do not slow: at 200
	// notifications/s it keeps accept→delivered within its target
	// (BENCHMARKS.md), which 4 did not.
	busyAt = 8
	// busyHold keeps intake busy that long after the last request that
	// found it so. A group commit answers many requests at once, and
	// their senders come back a moment later: without it every commit
	// would let every waiting delivery through at once.
	busyHold = 50 * time.Millisecond
	// busyCallRate is how many calls a second deliveries start while
	// intake is busy: what 200 notifications/s of 5 new alerts each need,
	// about half a core on the 2-core reference machine.
	busyCallRate = 1000
)

func newIntakeFirst(waited func(seconds float64)) *intakeFirst {
	return &intakeFirst{calls: rate.NewLimiter(busyCallRate, 1), waited: waited}
}

// enter marks a request being accepted until the returned func is called.
func (g *intakeFirst) enter() (exit func()) {
	if g.inflight.Add(1) >= busyAt {
		g.busyUntil.Store(time.Now().Add(busyHold).UnixNano())
	}
	return func() { g.inflight.Add(-1) }
}

// busy reports whether deliveries must take turns at now.
func (g *intakeFirst) busy(now time.Time) bool {
	return g.inflight.Load() >= busyAt || now.UnixNano() < g.busyUntil.Load()
}

// call returns at once while intake is not busy; while it is, it waits for
// the delivery's turn (a turn taken is not given back when intake calms
// down: the queue of turns drains at busyCallRate, under a second for a
// full worker pool). It returns ctx's error if ctx ends first.
func (g *intakeFirst) call(ctx context.Context) error {
	now := time.Now()
	if !g.busy(now) {
		return nil
	}
	r := g.calls.ReserveN(now, 1)
	d := r.DelayFrom(now)
	if d <= 0 {
		return nil
	}
	if g.waited != nil {
		g.waited(d.Seconds())
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return ctx.Err()
	}
}
