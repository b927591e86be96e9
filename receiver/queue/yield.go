package queue

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// intakeFirst gives intake precedence over deliveries on a busy process.
//
// Intake and deliveries share the CPU and the store's writer. A queue
// draining at full speed to a fast target spends most of the CPU on
// deliveries (render, call, ack), and intake then waits behind them:
// measured on 2 cores, intake fell to a third of its throughput and a
// 500/s flow's p50 to 300 ms, long enough for Alertmanager to time out and
// send the storm again. So while busyAt or more requests are being
// accepted at once (and for busyHold after), deliveries take turns through
// one slot held for at least minHold — at most 1/minHold calls a second, a
// fraction of a core — and intake gets the rest. By Little's law busyAt
// is a latency target: at 500 requests/s, 4 in flight is 8 ms each.
// Deliveries never stop: the slot keeps the queue draining through any
// storm, and it catches up afterwards.
//
// Source: the measurements in BENCHMARKS.md ("Intake goes first").
type intakeFirst struct {
	inflight  atomic.Int64
	busyUntil atomic.Int64 // Unix ns: intake counts as busy until then
	slots     chan struct{}
	waited    func(seconds float64)
}

const (
	// busyAt is how many requests being accepted at once make intake
	// busy: one or two at a time is a steady flow that deliveries do not
	// slow.
	busyAt = 4
	// busyHold keeps intake busy that long after the last request that
	// found it so. A group commit answers many requests at once, and
	// their senders come back a moment later: without it every commit
	// would let every waiting delivery through at once.
	busyHold = 50 * time.Millisecond
	// minHold is the shortest a call keeps its slot: deliveries then make
	// at most 1/minHold (1,000) calls a second while intake is busy, what
	// 200 notifications/s of 5 new alerts each need to be delivered
	// within the accept→delivered target (BENCHMARKS.md), and about half
	// a core on the 2-core reference machine.
	minHold = time.Millisecond
	// slotHold is the longest a call keeps its slot.
	slotHold = 20 * time.Millisecond
)

func newIntakeFirst(waited func(seconds float64)) *intakeFirst {
	return &intakeFirst{slots: make(chan struct{}, 1), waited: waited}
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

// call waits, while intake is busy, for the delivery slot, and returns
// what gives it back. It returns ctx's error if ctx ends first.
func (g *intakeFirst) call(ctx context.Context) (release func(), err error) {
	var start time.Time
	defer func() {
		if !start.IsZero() && g.waited != nil {
			g.waited(time.Since(start).Seconds())
		}
	}()
	for {
		now := time.Now()
		if !g.busy(now) {
			return func() {}, nil
		}
		if start.IsZero() {
			start = now
		}
		// Look again when the busy spell may be over.
		recheck := time.NewTimer(max(time.Duration(g.busyUntil.Load()-now.UnixNano()), minHold))
		select {
		case g.slots <- struct{}{}:
			recheck.Stop()
			// A call that outlasts slotHold is waiting on its target, not
			// using the CPU: it gives its slot back then, so a slow or hung
			// target never holds up the others' deliveries for longer.
			var once sync.Once
			free := func() { once.Do(func() { <-g.slots }) }
			t, began := time.AfterFunc(slotHold, free), time.Now()
			return func() {
				t.Stop()
				if d := minHold - time.Since(began); d > 0 {
					time.AfterFunc(d, free)
					return
				}
				free()
			}, nil
		case <-recheck.C:
		case <-ctx.Done():
			recheck.Stop()
			return nil, ctx.Err()
		}
	}
}
