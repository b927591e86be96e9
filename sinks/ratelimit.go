package sinks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
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
}

// NewLimiters returns an empty registry.
func NewLimiters() *Limiters { return &Limiters{m: map[string]*Limiter{}} }

// Limiter paces calls for one key: each call starts at least 60/N seconds
// after the previous one, so no window of a minute ever holds more than N
// calls — which is how Backlog counts. (A token bucket with a burst of one
// would allow N+1 when a call runs late and the next follows at once.)
type Limiter struct {
	mu        sync.Mutex
	interval  time.Duration
	next      time.Time // earliest start of the next call
	perMinute int
	// demand estimates calls booked or parked for this key and not yet
	// made; it drains at the limiter's rate. Parked or scheduled work comes
	// back about when its turn comes instead of polling the limiter.
	demand float64
	last   time.Time
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
		l.m[id] = lim
		return lim
	}
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if perMinute < lim.perMinute {
		lim.perMinute = perMinute
		lim.interval = interval(perMinute)
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

// reserve books the next start time and returns the wait until it.
func (l *Limiter) reserve(now time.Time) (time.Time, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.next
	if t.Before(now) {
		t = now
	}
	l.next = t.Add(l.interval)
	return t, t.Sub(now)
}

// cancel gives a booked start back if no later one was booked after it.
func (l *Limiter) cancel(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.next.Equal(t.Add(l.interval)) {
		l.next = t
	}
}

// Wait blocks until a call may be made. If the wait would be longer than
// maxWait it books nothing and returns a retryable Error carrying the wait,
// so the queue can park the work instead of holding a worker.
func (l *Limiter) Wait(ctx context.Context, maxWait time.Duration) (time.Duration, error) {
	t, d := l.reserve(time.Now())
	if d == 0 {
		return 0, nil
	}
	if d > maxWait {
		l.cancel(t)
		return d, Retryable(ReasonRateLimitWait, d, nil)
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return d, nil
	case <-ctx.Done():
		l.cancel(t)
		return d, ctx.Err()
	}
}

// Admit tells whether a call could be made within maxWait. If not, the
// call is counted as parked and the returned duration says when to come
// back; nothing is booked either way.
func (l *Limiter) Admit(maxWait time.Duration) time.Duration {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	d := max(0, l.next.Sub(now))
	if d <= maxWait {
		return 0
	}
	l.drain(now)
	l.demand++
	return max(d, time.Duration(l.demand*float64(l.interval)))
}

// Schedule books n calls and returns when the first of them can expect its
// turn, given the calls booked or parked before it (0 when that is within
// maxWait). The queue uses it to schedule a delivery job for its turn
// instead of fetching and parking it again and again.
func (l *Limiter) Schedule(n int, maxWait time.Duration) time.Duration {
	if n <= 0 {
		return 0
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drain(now)
	ahead := l.demand
	l.demand += float64(n)
	d := time.Duration(ahead * float64(l.interval))
	if d <= maxWait {
		return 0
	}
	return d
}

// drain removes from demand the calls the rate has allowed since last.
func (l *Limiter) drain(now time.Time) {
	if !l.last.IsZero() && l.interval > 0 {
		l.demand = max(0, l.demand-float64(now.Sub(l.last))/float64(l.interval))
	}
	l.last = now
}

// PerMinute is the rate in force.
func (l *Limiter) PerMinute() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.perMinute
}
