package sinks

import (
	"container/heap"
	"context"
	"time"
)

// Budget is a rate budget that several processes share: the replicas of
// one deployment on one PostgreSQL database (receiver/queue implements it
// there). A key limited to N calls per minute then gets N per minute from
// the whole deployment, not N from each replica.
//
// The budget is a sequence of call slots per key, interval apart, that
// every process books from in turn; a process may start a call only at a
// slot it booked. Slots are booked a few at a time for calls already
// waiting, so a process that dies wastes at most those few.
type Budget interface {
	// Claim books n consecutive slots of key, interval apart, after every
	// slot any process booked before, and returns the start of the first
	// and the end of the key's hold by a 429 (Hold; zero or past: none), in
	// the local clock. key is the limiter's hashed id (no secret).
	Claim(ctx context.Context, key string, n int, interval time.Duration) (first, heldUntil time.Time, err error)
	// Hold books nothing for d from now: no process gets a slot of key
	// before then (the target answered 429 with Retry-After d).
	Hold(ctx context.Context, key string, d time.Duration) error
}

const (
	// claimBatch is the most slots one claim books, at rates where that is
	// more than claimSpan's worth: one database round trip per few calls,
	// and few slots lost when a replica dies. Faster rates book claimSpan's
	// worth at once (up to maxClaim), so the round trips keep up.
	claimBatch = 4
	claimSpan  = 50 * time.Millisecond
	maxClaim   = 64
	// staleSlot is how late a booked slot may still be used. The pacing
	// interval has 1% headroom, 0.6 s per minute whatever the rate: a call
	// later than that behind its slot could let N+1 calls into a minute
	// with the slots other processes use on time. A slot older than this
	// is dropped unused.
	staleSlot = 250 * time.Millisecond
	// claimRetry is the pause after a failed claim (database away): calls
	// wait, none is made without a slot.
	claimRetry = 500 * time.Millisecond
	// budgetTimeout bounds one claim or hold round trip.
	budgetTimeout = 5 * time.Second
)

// SetBudget makes every limiter, present and future, book its calls from
// b. Within a process, each slot booked still goes to the best waiting
// priority class. Call it before the limiters are used.
func (l *Limiters) SetBudget(b Budget) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.budget = b
	for id, lim := range l.m {
		lim.mu.Lock()
		lim.budget, lim.key = b, id
		lim.mu.Unlock()
	}
}

// sharedState is the part of a Limiter used with a Budget.
type sharedState struct {
	budget Budget
	key    string // the hashed id the budget knows the key by
	// slots are booked starts not yet handed out, earliest first (claims
	// are made one at a time and the budget's sequence only moves on, so
	// appending keeps the order).
	slots    []time.Time
	claiming bool
	// heldUntil: no call before (a 429's Retry-After).
	heldUntil time.Time
	// notBefore: no call before either, while the calls of the limiter
	// this one took over from drain (HandOver); slots before it go unused.
	notBefore time.Time
	// share is the estimated fraction of the key's slots this process
	// gets while the key is busy (1 alone); the waits it predicts for
	// parked and scheduled work stretch by 1/share.
	share float64
	// lastEnd is the end of the slots this process booked last.
	lastEnd time.Time
}

// estInterval is the interval between this process's calls of the key
// when its budget is the bottleneck: the pacing interval, stretched by the
// share of a budget other processes also book from.
func (l *Limiter) estInterval() time.Duration {
	if l.budget == nil || l.share <= 0 || l.share >= 1 {
		return l.interval
	}
	return time.Duration(float64(l.interval) / l.share)
}

// sharedBase is how long until this process could start a call of the
// key, given the slots it holds and the 429 hold (under l.mu).
func (l *Limiter) sharedBase(now time.Time) time.Duration {
	d := max(0, l.heldUntil.Sub(now), l.notBefore.Sub(now))
	if len(l.slots) > len(l.waiters) {
		return max(d, l.slots[len(l.waiters)].Sub(now))
	}
	return max(d, max(0, l.lastEnd.Sub(now)))
}

// pump hands booked slots that are due to the best waiters, books more
// when waiters outnumber the slots held, and arms a timer for the next
// slot (under l.mu).
func (l *Limiter) pump(now time.Time) {
	if now.Before(l.notBefore) {
		// Taking over from another limiter (HandOver): book nothing
		// before its calls are done, or the slots would go unused.
		if l.timer == nil && len(l.waiters) > 0 {
			l.timer = time.AfterFunc(l.notBefore.Sub(now), l.pumpTimer)
		}
		return
	}
	for len(l.slots) > 0 && (l.slots[0].Before(now.Add(-staleSlot)) || l.slots[0].Before(l.heldUntil) || l.slots[0].Before(l.notBefore)) {
		l.slots = l.slots[1:]
	}
	for len(l.waiters) > 0 && len(l.slots) > 0 && !l.slots[0].After(now.Add(dispatchSlack)) {
		w := heap.Pop(&l.waiters).(*waiter)
		w.granted = true
		w.at = l.slots[0]
		if w.at.Before(now) {
			w.at = now
		}
		l.slots = l.slots[1:]
		if l.onGrant != nil {
			l.onGrant(w.at)
		}
		close(w.ready)
	}
	// A process holds at most two claims' worth booked and unused.
	batch := l.claimSize()
	if need := len(l.waiters) - len(l.slots); need > 0 && !l.claiming && len(l.slots) < 2*batch {
		n := min(need, batch, 2*batch-len(l.slots))
		l.claiming = true
		go l.claim(n, l.interval)
	}
	if l.timer == nil && len(l.waiters) > 0 && len(l.slots) > 0 {
		l.timer = time.AfterFunc(l.slots[0].Sub(now), l.pumpTimer)
	}
}

// claimSize is how many slots one claim books at most (under l.mu).
func (l *Limiter) claimSize() int {
	if l.interval <= 0 {
		return maxClaim
	}
	return max(claimBatch, min(maxClaim, int(claimSpan/l.interval)))
}

func (l *Limiter) pumpTimer() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timer = nil
	l.pump(time.Now())
}

// claim books n slots from the budget and hands them out.
func (l *Limiter) claim(n int, interval time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), budgetTimeout)
	asked := time.Now()
	start, held, err := l.budget.Claim(ctx, l.key, n, interval)
	cancel()
	if err != nil {
		time.Sleep(claimRetry)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.claiming = false
	if err == nil {
		// Another process's 429 holds the key here too (HeldUntil).
		if held.After(l.heldUntil) {
			l.heldUntil = held
		}
		l.learnShare(asked, start, n, interval)
		for i := range n {
			l.slots = append(l.slots, start.Add(time.Duration(i)*interval))
		}
		l.lastEnd = start.Add(time.Duration(n) * interval)
	}
	l.pump(time.Now())
}

// learnShare updates the estimate of this process's share of the key's
// slots: when the key was booked ahead (busy), the slots between the end of
// this process's previous claim and the start of this one went to others.
func (l *Limiter) learnShare(asked, start time.Time, n int, interval time.Duration) {
	if l.share == 0 {
		l.share = 1
	}
	sample := 1.0
	if start.After(asked.Add(interval/2)) && !l.lastEnd.IsZero() && start.After(l.lastEnd) {
		others := float64(start.Sub(l.lastEnd)) / float64(interval)
		sample = float64(n) / (float64(n) + others)
	}
	l.share = 0.7*l.share + 0.3*sample
}

// holdShared keeps every process's calls of the key back for d.
func (l *Limiter) holdShared(d time.Duration) {
	l.mu.Lock()
	if until := time.Now().Add(d); until.After(l.heldUntil) {
		l.heldUntil = until
	}
	b, key := l.budget, l.key
	l.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), budgetTimeout)
		defer cancel()
		b.Hold(ctx, key, d) //nolint:errcheck // the local hold stands; the next 429 holds the others
	}()
}
