package sinks

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHandOver: a sink that moves to another limiter of its budget (a
// Backlog key whose user is learnt after start moves to the user's) must
// not double the rate while the calls waiting in the old one drain: the
// new limiter starts no call before they would all have started. Alone
// and with a shared (PostgreSQL) budget.
func TestHandOver(t *testing.T) {
	const perMinute = 600 // 100 ms apart
	iv := interval(perMinute)
	cases := []struct {
		name   string
		shared bool
	}{
		{"in memory", false},
		{"shared budget", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ls := NewLimiters()
			if c.shared {
				ls.SetBudget(&memBudget{next: map[string]time.Time{}})
			}
			old := ls.Get("backlog", "key", perMinute)
			ctx := context.Background()
			// One call made, two waiting: the old limiter is busy for
			// about three intervals.
			_, err := old.Wait(ctx, time.Second)
			require.NoError(t, err)
			done := make(chan struct{}, 2)
			for range 2 {
				go func() {
					old.Wait(ctx, time.Second) //nolint:errcheck
					done <- struct{}{}
				}()
			}
			require.Eventually(t, func() bool { old.mu.Lock(); defer old.mu.Unlock(); return len(old.waiters) == 2 }, time.Second, time.Millisecond)
			next := ls.Get("backlog", "user", perMinute)
			start := time.Now()
			old.HandOver(next)
			_, err = next.Wait(ctx, 2*time.Second)
			require.NoError(t, err)
			require.GreaterOrEqual(t, time.Since(start), 2*iv-20*time.Millisecond, "the new limiter waited for the old one's calls")
			<-done
			<-done
			old.HandOver(old) // a no-op
		})
	}
}
