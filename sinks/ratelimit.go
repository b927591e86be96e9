package sinks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"

	"golang.org/x/time/rate"
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

// Limiter paces calls for one key.
type Limiter struct {
	lim       *rate.Limiter
	perMinute int

	mu sync.Mutex
	// demand estimates calls parked for this key and not yet made; it
	// drains at the limiter's rate. A parked call comes back after
	// demand/rate, about when its turn comes, instead of all parked calls
	// polling the limiter together.
	demand float64
	last   time.Time
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
		lim = &Limiter{lim: rate.NewLimiter(perMinuteLimit(perMinute), burst(perMinute)), perMinute: perMinute}
		l.m[id] = lim
		return lim
	}
	if perMinute < lim.perMinute {
		lim.perMinute = perMinute
		lim.lim.SetLimit(perMinuteLimit(perMinute))
		lim.lim.SetBurst(burst(perMinute))
	}
	return lim
}

// Reset forgets which rates were configured (not the buckets' state), so a
// reload that raises a key's rate takes effect.
func (l *Limiters) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, lim := range l.m {
		lim.perMinute = int(^uint(0) >> 1)
	}
}

func perMinuteLimit(n int) rate.Limit { return rate.Limit(float64(n) / 60) }

// burst of one keeps the pace even: a target that counts per minute window
// must never see a minute's budget spent in the first second and then a
// second minute's budget right after the window turns.
func burst(int) int { return 1 }

// Wait blocks until a call may be made. If the wait would be longer than
// maxWait it takes nothing and returns a retryable Error carrying the wait,
// so the queue can park the job instead of holding a worker.
func (l *Limiter) Wait(ctx context.Context, maxWait time.Duration) (time.Duration, error) {
	r := l.lim.Reserve()
	d := r.Delay()
	if d == 0 {
		return 0, nil
	}
	if d > maxWait {
		r.Cancel()
		return d, Retryable(ReasonRateLimitWait, d, nil)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return d, nil
	case <-ctx.Done():
		r.Cancel()
		return d, ctx.Err()
	}
}

// Admit tells whether a call could be made within maxWait. If not, the
// call is counted as parked and the returned duration says when to come
// back; nothing is reserved either way.
func (l *Limiter) Admit(maxWait time.Duration) time.Duration {
	now := time.Now()
	r := l.lim.ReserveN(now, 1)
	d := r.DelayFrom(now)
	r.CancelAt(now)
	if d <= maxWait {
		return 0
	}
	perSec := float64(l.lim.Limit())
	if perSec <= 0 {
		return d
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		l.demand = max(0, l.demand-now.Sub(l.last).Seconds()*perSec)
	}
	l.last = now
	l.demand++
	return max(d, time.Duration(l.demand/perSec*float64(time.Second)))
}

// Schedule books n calls and returns when the first of them can expect a
// token, given the calls booked or parked before it (0 when that is within
// maxWait). The queue uses it to schedule a delivery job for its turn
// instead of fetching and parking it again and again.
func (l *Limiter) Schedule(n int, maxWait time.Duration) time.Duration {
	perSec := float64(l.lim.Limit())
	if perSec <= 0 || n <= 0 {
		return 0
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		l.demand = max(0, l.demand-now.Sub(l.last).Seconds()*perSec)
	}
	l.last = now
	ahead := l.demand
	l.demand += float64(n)
	d := time.Duration(ahead / perSec * float64(time.Second))
	if d <= maxWait {
		return 0
	}
	return d
}

// PerMinute is the rate in force.
func (l *Limiter) PerMinute() int { return l.perMinute }
