package sinks

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// memBudget is the shared budget as the store keeps it (one next-slot
// time per key), in memory: what several processes on one database see.
type memBudget struct {
	mu      sync.Mutex
	next    map[string]time.Time
	held    map[string]time.Time // a 429's hold: no slot before
	claimed int
}

func (b *memBudget) Claim(_ context.Context, key string, n int, interval time.Duration) (time.Time, time.Time, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	start := time.Now()
	if b.next[key].After(start) {
		start = b.next[key]
	}
	if b.held[key].After(start) {
		start = b.held[key]
	}
	b.next[key] = start.Add(time.Duration(n) * interval)
	b.claimed += n
	return start, b.held[key], nil
}

func (b *memBudget) Hold(_ context.Context, key string, d time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held == nil {
		b.held = map[string]time.Time{}
	}
	if until := time.Now().Add(d); until.After(b.held[key]) {
		b.held[key] = until
	}
	return nil
}

// Three processes (three registries) share one budget: together they keep
// the key's pacing, and each still serves its own waiters.
func TestSharedBudgetAcrossProcesses(t *testing.T) {
	b := &memBudget{next: map[string]time.Time{}}
	const perMinute, calls = 6000, 90
	var (
		mu     sync.Mutex
		grants []time.Time
	)
	var lims []*Limiter
	for range 3 {
		ls := NewLimiters()
		ls.SetBudget(b)
		lim := ls.Get("pagerduty", "key", perMinute)
		lim.onGrant = func(at time.Time) { mu.Lock(); grants = append(grants, at); mu.Unlock() }
		lims = append(lims, lim)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := lims[i%3].Wait(context.Background(), time.Minute)
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	iv := interval(perMinute)
	require.GreaterOrEqual(t, time.Since(start), time.Duration(calls-1)*iv, "the three together keep one key's rate")
	sort.Slice(grants, func(i, j int) bool { return grants[i].Before(grants[j]) })
	require.Len(t, grants, calls)
	// Slots are booked interval apart; one handed out late (a timer that
	// fired late on a busy machine) starts at once, at most staleSlot late,
	// which the pacing's 1% headroom (0.6 s per minute) absorbs: a window
	// of a minute never holds more than N calls.
	for i := 1; i < len(grants); i++ {
		require.GreaterOrEqual(t, grants[i].Sub(grants[0]), time.Duration(i)*iv-staleSlot, "call %d", i)
	}
	require.LessOrEqual(t, b.claimed, calls+3*2*claimBatch, "slots booked and left unused stay few")
}

// A 429 seen by one process holds the key in every process.
func TestSharedBudgetHold(t *testing.T) {
	b := &memBudget{next: map[string]time.Time{}}
	one, two := NewLimiters(), NewLimiters()
	one.SetBudget(b)
	two.SetBudget(b)
	a := one.Get("backlog", "key", 6000)
	c := two.Get("backlog", "key", 6000)
	a.Hold(300 * time.Millisecond)
	// Parked work is told to come back after the hold, not before.
	require.Greater(t, a.Admit(PriorityWarning, 0), 200*time.Millisecond)
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.held[c.key].After(time.Now().Add(200 * time.Millisecond))
	}, time.Second, time.Millisecond)
	start := time.Now()
	_, err := c.Wait(context.Background(), time.Second)
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
	require.True(t, c.HeldUntil().After(start), "the other process learns the hold with its claim")
}

// Wait never outlasts maxWait: a hold that comes after its estimate (a
// 429 of another call; on PostgreSQL, a claim that finds another replica's
// hold) parks the call with the time left instead of holding its worker.
func TestWaitStaysWithinMaxWait(t *testing.T) {
	for _, shared := range []bool{false, true} {
		ls := NewLimiters()
		if shared {
			ls.SetBudget(&memBudget{next: map[string]time.Time{}})
		}
		l := ls.Get("pagerduty", "key", 600) // 100 ms apart
		_, err := l.Wait(context.Background(), time.Second)
		require.NoError(t, err)
		go func() {
			time.Sleep(20 * time.Millisecond)
			l.Hold(5 * time.Second)
		}()
		start := time.Now()
		d, err := l.Wait(context.Background(), 300*time.Millisecond)
		require.Less(t, time.Since(start), time.Second, "shared=%v", shared)
		var e *Error
		require.ErrorAs(t, err, &e, "shared=%v", shared)
		require.Equal(t, ReasonRateLimitWait, e.Reason)
		require.Greater(t, d, 4*time.Second, "comes back after the hold, shared=%v", shared)
	}
}
