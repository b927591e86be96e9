package queue

import (
	"context"
	"math"
	"sync"
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
// send the storm again. So while intake is busy, deliveries start their
// calls at most busyCallRate a second, in turn, and intake gets the rest
// of the CPU. Nothing is held while a call runs: a slow or hung target
// costs the others nothing. Deliveries never stop: the queue keeps
// draining through any storm, and catches up afterwards.
//
// Intake is busy
//   - while busyAt or more requests are being accepted at once, and for
//     busyHold after (a storm: by Little's law busyAt is a latency target,
//     at 500 requests/s 8 in flight is 16 ms each);
//   - for slowHold after an accept that took longer than slowAt while
//     deliveries started more than heavyCallRate calls a second (a steady
//     flow, one or two requests at a time, that deliveries slow by taking
//     the CPU rather than by crowding it out). A lighter delivery load is
//     never paced, whatever the accept took: a flow of 200 notifications/s
//     needs 1,000 calls a second, and pacing them at that rate would queue
//     its own deliveries.
//
// Source: the measurements in BENCHMARKS.md ("Intake goes first", and
// "Intake's tail while a queue drains").
type intakeFirst struct {
	// epoch holds a monotonic reading: every instant below is ns since
	// it, so a step of the wall clock changes nothing.
	epoch     time.Time
	inflight  atomic.Int64
	busyUntil atomic.Int64 // intake counts as busy until then
	calls     *rate.Limiter
	waited    func(seconds float64)

	// Calls started: the window under way (from windowStart) and
	// the rate of the last one, in calls a second (see heavy).
	windowStart atomic.Int64
	windowCalls atomic.Int64
	lastRate    atomic.Int64

	// The fastest accept of the last minWindow or two (ns): what the
	// store costs on its own (round trips, fsync), which no pacing of
	// deliveries removes. An accept is slow at slowAt over it.
	minStart, minCur, minPrev atomic.Int64

	stopOnce sync.Once
	stopped  chan struct{} // closed at shutdown: no more turns
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
	// slowAt is how long an accept may take before intake counts as busy
	// however few requests are in flight: half the 20 ms that intake's
	// p99 is held to while a queue drains (issue 14).
	slowAt = 10 * time.Millisecond
	// slowHold keeps intake busy that long after a slow accept, so that
	// a flow's requests are not each slowed again by the deliveries let
	// through between them.
	slowHold = time.Second
	// heavyCallRate is the delivery rate above which a slow accept makes
	// intake busy: twice busyCallRate, so the flow busyCallRate is sized
	// for (200 notifications/s) never sets it off. heavyWindow is the
	// window it is measured over.
	heavyCallRate = 2000
	heavyWindow   = 100 * time.Millisecond
	// busyCallRate is how many calls a second deliveries start while
	// intake is busy: what 200 notifications/s of 5 new alerts each need,
	// about half a core on the 2-core reference machine.
	busyCallRate = 1000
	// minWindow is how long the fastest accept stays the store's own cost.
	minWindow = 10 * time.Second
)

func newIntakeFirst(waited func(seconds float64)) *intakeFirst {
	g := &intakeFirst{epoch: time.Now(), calls: rate.NewLimiter(busyCallRate, 1), waited: waited, stopped: make(chan struct{})}
	g.windowStart.Store(math.MinInt64 / 4) // the first call starts a window
	g.minStart.Store(math.MinInt64 / 4)
	g.minCur.Store(math.MaxInt64)
	g.minPrev.Store(math.MaxInt64)
	return g
}

// ns is t as ns since epoch, on the monotonic clock.
func (g *intakeFirst) ns(t time.Time) int64 { return int64(t.Sub(g.epoch)) }

// stop ends every wait for a turn, now and later: shutdown began.
func (g *intakeFirst) stop() { g.stopOnce.Do(func() { close(g.stopped) }) }

// enter marks a request being accepted until the returned func is called.
func (g *intakeFirst) enter() (exit func()) {
	start := time.Now()
	if g.inflight.Add(1) >= busyAt {
		g.hold(start, busyHold)
	}
	return func() {
		g.inflight.Add(-1)
		g.accepted(time.Now(), start)
	}
}

// accepted judges an accept that ran from start to now.
func (g *intakeFirst) accepted(now, start time.Time) {
	d := int64(now.Sub(start))
	if d > g.baseline(g.ns(now), d)+int64(slowAt) && g.heavy(now) {
		g.hold(now, slowHold)
	}
}

// baseline counts an accept of d ns in and returns the fastest of the
// last minWindow or two, d included: an accept is never slow against
// itself, so the first on a slow store sets nothing off.
func (g *intakeFirst) baseline(now, d int64) int64 {
	if s := g.minStart.Load(); now-s >= int64(minWindow) && g.minStart.CompareAndSwap(s, now) {
		g.minPrev.Store(g.minCur.Swap(math.MaxInt64))
	}
	for {
		cur := g.minCur.Load()
		if d >= cur || g.minCur.CompareAndSwap(cur, d) {
			break
		}
	}
	return min(g.minCur.Load(), g.minPrev.Load())
}

// hold makes intake busy until at least now+d.
func (g *intakeFirst) hold(now time.Time, d time.Duration) {
	until := g.ns(now) + int64(d)
	for {
		cur := g.busyUntil.Load()
		if cur >= until || g.busyUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

// heavy reports whether deliveries started calls faster than
// heavyCallRate in the last window or in the one under way.
func (g *intakeFirst) heavy(now time.Time) bool {
	g.roll(now)
	return g.lastRate.Load() > heavyCallRate ||
		g.windowCalls.Load() > int64(heavyCallRate*heavyWindow.Seconds())
}

// started counts a call started at now: deliver counts it just before
// the call, never for a delivery that parks.
func (g *intakeFirst) started(now time.Time) {
	g.roll(now)
	g.windowCalls.Add(1)
}

// roll closes the window under way once heavyWindow has passed, keeping
// its rate over the time it really lasted (no call may have rolled it
// for a while).
func (g *intakeFirst) roll(now time.Time) {
	n := g.ns(now)
	start := g.windowStart.Load()
	elapsed := n - start
	if elapsed < int64(heavyWindow) || !g.windowStart.CompareAndSwap(start, n) {
		return
	}
	g.lastRate.Store(g.windowCalls.Swap(0) * int64(time.Second) / elapsed)
}

// busy reports whether deliveries must take turns at now.
func (g *intakeFirst) busy(now time.Time) bool {
	return g.inflight.Load() >= busyAt || g.ns(now) < g.busyUntil.Load()
}

// call returns at once while intake is not busy; while it is, it waits for
// the delivery's turn. A turn taken is kept when intake calms down: the
// queue of turns drains at busyCallRate (1.6 s for the default pool's
// 1,600 deliveries). Releasing them all at once was tried: the burst of
// calls slowed intake again at once (BENCHMARKS.md). It returns how long
// it waited, ctx's error if ctx ends first, and errDraining once shutdown
// began (stop).
func (g *intakeFirst) call(ctx context.Context) (time.Duration, error) {
	select {
	case <-g.stopped:
		return 0, errDraining
	default:
	}
	now := time.Now()
	if !g.busy(now) {
		return 0, nil
	}
	r := g.calls.ReserveN(now, 1)
	d := r.DelayFrom(now)
	if d <= 0 {
		return 0, nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-g.stopped:
		r.Cancel()
		return 0, errDraining
	case <-ctx.Done():
		r.Cancel()
		return 0, ctx.Err()
	}
	if g.waited != nil {
		g.waited(d.Seconds()) // a wait given up is not counted
	}
	return d, nil
}
