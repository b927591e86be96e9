package sinks

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"
)

// Limiters hands out one token-bucket limiter per API key, so that configs
// sharing a key share a budget. The lowest configured rate for a key wins,
// because the target counts per key, not per config.
//
// Keys are hashed before they are kept so that no secret sits in a map that
// a debugger or a dump could print.
type Limiters struct {
	mu sync.Mutex
	m  map[string]*Limiter
	// budget, when set, is shared with other processes (SetBudget).
	budget Budget
}

// NewLimiters returns an empty registry.
func NewLimiters() *Limiters { return &Limiters{m: map[string]*Limiter{}} }

// Limiter paces calls for one key: each call starts at least 60/N seconds
// after the previous one, so no window of a minute ever holds more than N
// calls — which is how Backlog counts. (A token bucket with a burst of one
// would allow N+1 when a call runs late and the next follows at once.)
//
// When the key's budget is the bottleneck, calls are served by priority
// class (see Priority), FIFO within a class: each free slot goes to the
// best waiting call, and estimates for parked work count only the work of
// its class and better.
type Limiter struct {
	mu        sync.Mutex
	interval  time.Duration
	next      time.Time // earliest start of the next call
	perMinute int
	// demand estimates, per class, calls booked or parked for this key and
	// not yet made; it drains at the limiter's rate, best class first.
	// Parked or scheduled work comes back about when its turn comes
	// instead of polling the limiter.
	demand  [NumPriorities]float64
	last    time.Time
	waiters waiterHeap
	seq     uint64
	timer   *time.Timer
	// onGrant, in tests, sees each call's start.
	onGrant func(time.Time)
	// sharedState is used when the key's budget is shared with other
	// processes (Limiters.SetBudget); budget is nil otherwise.
	sharedState
}

func newLimiter(perMinute int) *Limiter {
	return &Limiter{perMinute: perMinute, interval: interval(perMinute)}
}

// interval leaves 1% headroom: a call that starts a few milliseconds late
// (goroutine scheduling, GC) must not let N+1 calls into one minute.
func interval(perMinute int) time.Duration {
	return time.Duration(1.01 * float64(time.Minute) / float64(perMinute))
}

// Get returns the limiter for (kind, key), created or lowered to perMinute.
// A registry survives config reloads so that a reload does not reset the
// budget the target already counted.
func (l *Limiters) Get(kind, key string, perMinute int) *Limiter {
	sum := sha256.Sum256([]byte(kind + "\x00" + key))
	id := hex.EncodeToString(sum[:])
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[id]
	if !ok {
		lim = newLimiter(perMinute)
		lim.budget, lim.key = l.budget, id
		l.m[id] = lim
		return lim
	}
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if perMinute < lim.perMinute {
		lim.perMinute = perMinute
		if iv := interval(perMinute); iv != lim.interval {
			lim.interval = iv
			// Slots booked at another rate are given up (at most a few).
			lim.slots, lim.lastEnd = nil, time.Time{}
		}
	}
	return lim
}

// Reset forgets which rates were configured (not when the next call may
// start), so a reload that raises a key's rate takes effect.
func (l *Limiters) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, lim := range l.m {
		lim.mu.Lock()
		lim.perMinute = int(^uint(0) >> 1)
		lim.mu.Unlock()
	}
}

// Wait blocks until a call may be made; the call's priority class comes
// from ctx (WithPriority). If the wait would be longer than maxWait it
// books nothing and returns a retryable Error carrying the wait, so the
// queue can park the work instead of holding a worker.
func (l *Limiter) Wait(ctx context.Context, maxWait time.Duration) (time.Duration, error) {
	if p, ok := ctx.Value(prepaidKey{}).(*atomic.Bool); ok && p.CompareAndSwap(true, false) {
		return 0, nil // the caller already waited for this call's slot
	}
	class := PriorityFrom(ctx)
	now := time.Now()
	l.mu.Lock()
	if l.budget == nil {
		if !l.next.After(now) && len(l.waiters) == 0 {
			l.next = now.Add(l.interval)
			if l.onGrant != nil {
				l.onGrant(now)
			}
			l.mu.Unlock()
			return 0, nil
		}
	}
	d := l.estimate(now, class)
	if d > maxWait {
		l.mu.Unlock()
		return d, Retryable(ReasonRateLimitWait, d, nil)
	}
	w := &waiter{class: class, seq: l.seq, ready: make(chan struct{})}
	l.seq++
	heap.Push(&l.waiters, w)
	if l.budget != nil {
		l.pump(now)
	} else {
		l.arm(now)
	}
	l.mu.Unlock()
	// The estimate can fall short: a 429's hold after it, a claim that
	// finds another replica's hold or its slots booked far ahead. The wait
	// stays within maxWait all the same, or the worker would sit holding a
	// key's state for as long (seconds, a Retry-After's minutes).
	bound := time.NewTimer(maxWait)
	defer bound.Stop()
	select {
	case <-w.ready:
	case <-bound.C:
		l.mu.Lock()
		if !w.granted {
			heap.Remove(&l.waiters, w.index)
			later := max(l.estimate(time.Now(), class), time.Millisecond)
			l.mu.Unlock()
			return later, Retryable(ReasonRateLimitWait, later, nil)
		}
		l.mu.Unlock() // granted meanwhile: take the slot
	case <-ctx.Done():
		l.mu.Lock()
		if !w.granted {
			heap.Remove(&l.waiters, w.index)
		}
		l.mu.Unlock()
		return d, ctx.Err()
	}
	// The slot may start a moment after it was handed out (dispatch
	// hands out the slots due within dispatchSlack at once).
	if wait := time.Until(w.at); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return d, ctx.Err()
		}
	}
	return d, nil
}

// estimate is how long a call of the class would wait for its slot now,
// behind the waiters ahead of it (under l.mu).
func (l *Limiter) estimate(now time.Time, class int) time.Duration {
	if l.budget == nil {
		return max(0, l.next.Sub(now)) + time.Duration(l.waiters.ahead(class))*l.interval
	}
	return l.sharedBase(now) + time.Duration(max(0, l.waiters.ahead(class)-len(l.slots)))*l.estInterval()
}

// arm makes sure the next free slot is handed to the best waiter.
func (l *Limiter) arm(now time.Time) {
	if l.timer != nil || len(l.waiters) == 0 {
		return
	}
	l.timer = time.AfterFunc(max(0, l.next.Sub(now)), l.dispatch)
}

// dispatchSlack is how far ahead dispatch hands out slots: every slot due
// within it goes to the best waiters at once (each still starts at its own
// slot), so a fast rate is not held to one timer per call.
const dispatchSlack = time.Millisecond

func (l *Limiter) dispatch() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timer = nil
	now := time.Now()
	for len(l.waiters) > 0 && !l.next.After(now.Add(dispatchSlack)) {
		w := heap.Pop(&l.waiters).(*waiter)
		w.granted = true
		w.at = l.next
		if w.at.Before(now) {
			w.at = now
		}
		l.next = w.at.Add(l.interval)
		if l.onGrant != nil {
			l.onGrant(w.at)
		}
		close(w.ready)
	}
	l.arm(now)
}

// Hold keeps the key's calls back for d: the target answered 429 for the
// key (PagerDuty counts per routing key, Backlog per user), so no other
// call of the key may go before its wait is over.
func (l *Limiter) Hold(d time.Duration) {
	if d <= 0 {
		return
	}
	if l.budget != nil {
		l.holdShared(d)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	until := time.Now().Add(d)
	if until.After(l.next) {
		l.next = until
	}
	if until.After(l.heldUntil) {
		l.heldUntil = until
	}
}

// HandOver makes next take over l's calls: next starts none before the
// calls l has granted or has waiting would all have started, so the two
// together keep to the rate while l's waiting calls drain. A sink whose
// budget turns out to be another's (Backlog learns a key's user, whose
// budget all the user's keys share, only when it resolves names) moves
// to the shared limiter with it. next may be l.
func (l *Limiter) HandOver(next *Limiter) {
	if l == nil || next == nil || l == next {
		return
	}
	now := time.Now()
	l.mu.Lock()
	free := now.Add(l.estimate(now, NumPriorities-1))
	l.mu.Unlock()
	next.mu.Lock()
	defer next.mu.Unlock()
	if next.budget != nil {
		if free.After(next.notBefore) {
			next.notBefore = free
		}
		return
	}
	if free.After(next.next) {
		next.next = free
	}
}

// HeldUntil is when the hold of the key's last 429 (Hold) ends: no call
// before it. Zero, or a past time, when no hold is in force.
func (l *Limiter) HeldUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heldUntil
}

// Admit tells whether a call of the class could be made within maxWait.
// If not, the call is counted as parked and the returned duration says
// when to come back; nothing is booked either way.
func (l *Limiter) Admit(class int, maxWait time.Duration) time.Duration {
	class = clampPriority(class)
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.estimate(now, class)
	if d <= maxWait {
		return 0
	}
	l.drain(now)
	l.demand[class]++
	return max(d, time.Duration(l.ahead(class)*float64(l.estInterval())))
}

// Schedule books n calls of the class and returns when the first of them
// can expect its turn, given the calls of its class and better booked or
// parked before it (0 when that is within maxWait). The queue uses it to
// schedule a delivery job for its turn instead of fetching and parking it
// again and again.
func (l *Limiter) Schedule(n, class int, maxWait time.Duration) time.Duration {
	if n <= 0 {
		return 0
	}
	class = clampPriority(class)
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drain(now)
	ahead := l.ahead(class)
	l.demand[class] += float64(n)
	d := time.Duration(ahead * float64(l.estInterval()))
	if d <= maxWait {
		return 0
	}
	return d
}

// Release gives back n calls of the class that Schedule booked and that
// will not be made: their work needed no call after all (the alerts of a
// storm resolved before their triggers' turn). Without it the calls
// booked after them would be planned behind calls that never come — a
// new page minutes late behind a storm that resolved (a fresh helper: 8
// minutes after 1,000 warnings resolved at 120/min).
func (l *Limiter) Release(n, class int) {
	if n <= 0 {
		return
	}
	class = clampPriority(class)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drain(time.Now())
	l.demand[class] = max(0, l.demand[class]-float64(n))
}

// ahead is the demand that goes before a call of the class.
func (l *Limiter) ahead(class int) float64 {
	var a float64
	for c := 0; c <= class; c++ {
		a += l.demand[c]
	}
	return a
}

// drain removes from demand the calls the rate has allowed since last,
// best class first (that is the order they are served in).
func (l *Limiter) drain(now time.Time) {
	if iv := l.estInterval(); !l.last.IsZero() && iv > 0 {
		served := float64(now.Sub(l.last)) / float64(iv)
		for c := range l.demand {
			take := min(served, l.demand[c])
			l.demand[c] -= take
			served -= take
		}
	}
	l.last = now
}

// PerMinute is the rate in force.
func (l *Limiter) PerMinute() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.perMinute
}

// waiter is a call waiting for a slot.
type waiter struct {
	class   int
	seq     uint64
	ready   chan struct{}
	index   int
	granted bool
	at      time.Time // the start of the slot handed out
}

// waiterHeap orders waiting calls: best class first, then first come.
type waiterHeap []*waiter

func (h waiterHeap) Len() int { return len(h) }
func (h waiterHeap) Less(i, j int) bool {
	if h[i].class != h[j].class {
		return h[i].class < h[j].class
	}
	return h[i].seq < h[j].seq
}
func (h waiterHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *waiterHeap) Push(x any) {
	w := x.(*waiter)
	w.index = len(*h)
	*h = append(*h, w)
}
func (h *waiterHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	*h = old[:len(old)-1]
	return w
}

// ahead counts the waiters a call of the class waits behind.
func (h waiterHeap) ahead(class int) int {
	n := 0
	for _, w := range h {
		if w.class <= class {
			n++
		}
	}
	return n
}

type prepaidKey struct{}

// WithPrepaid marks ctx as holding one call's slot already waited for: the
// next Wait under it returns at once, later ones wait as usual. The queue
// paces a call, looks at the alert's state once more, and only then lets
// the sink make the call.
func WithPrepaid(ctx context.Context) context.Context {
	p := &atomic.Bool{}
	p.Store(true)
	return context.WithValue(ctx, prepaidKey{}, p)
}
