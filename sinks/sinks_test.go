package sinks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestClassifyStatus(t *testing.T) {
	cases := []struct {
		code      int
		reason    string
		retryable bool
	}{
		{200, "", false}, {202, "", false},
		{400, ReasonClientError, false}, {401, ReasonClientError, false}, {403, ReasonClientError, false}, {404, ReasonClientError, false},
		{408, ReasonTimeout, true}, {429, ReasonRateLimited, true},
		{500, ReasonServerError, true}, {502, ReasonServerError, true}, {503, ReasonServerError, true},
		{302, ReasonUnexpectedReply, true},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.code), func(t *testing.T) {
			reason, retry := ClassifyStatus(c.code)
			require.Equal(t, c.reason, reason)
			require.Equal(t, c.retryable, retry)
		})
	}
}

func TestErrors(t *testing.T) {
	base := errors.New("boom")
	e := StatusError(429, 3*time.Second, base)
	require.True(t, e.Retryable)
	require.Equal(t, 3*time.Second, e.RetryAfter)
	require.ErrorIs(t, e, base)
	wrapped := fmt.Errorf("deliver: %w", e)
	require.Same(t, e, AsError(wrapped))
	other := AsError(errors.New("unclassified"))
	require.True(t, other.Retryable, "an unclassified error is retried, not dropped")
	require.Equal(t, ReasonOther, other.Reason)
	require.Contains(t, Permanent(ReasonClientError, base).Error(), "permanent failure (client_error): boom")
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	h := http.Header{}
	require.Zero(t, ParseRetryAfter(h, now))
	h.Set("Retry-After", "7")
	require.Equal(t, 7*time.Second, ParseRetryAfter(h, now))
	h.Set("Retry-After", now.Add(90*time.Second).Format(http.TimeFormat))
	require.Equal(t, 90*time.Second, ParseRetryAfter(h, now))
	h.Set("Retry-After", "-1")
	require.Zero(t, ParseRetryAfter(h, now))
	h.Set("Retry-After", "soon")
	require.Zero(t, ParseRetryAfter(h, now))
}

func TestTruncateRunes(t *testing.T) {
	s, cut := TruncateRunes("héllo", 10)
	require.False(t, cut)
	require.Equal(t, "héllo", s)
	s, cut = TruncateRunes("ééééé", 4)
	require.True(t, cut)
	require.Equal(t, "ééé…", s)
	s, _ = TruncateRunes("abcdef", 3)
	require.Equal(t, "abc", s)
}

func TestNotificationStatusAndTemplateData(t *testing.T) {
	n := SampleNotification()
	require.Equal(t, StatusFiring, n.Status())
	second := n.Alerts[0]
	second.Labels = map[string]string{"alertname": "Sample", "instance": "other"}
	second.Status = StatusResolved
	n.Alerts = append(n.Alerts, second)
	d := n.TemplateData()
	require.Equal(t, "firing", d.Status)
	require.Equal(t, map[string]string{"alertname": "Sample"}, map[string]string(d.CommonLabels))
	n.Alerts[0].Status = StatusResolved
	require.Equal(t, StatusResolved, n.Status())
}

// A group message that left alerts out (Alertmanager's truncatedAlerts) is
// not resolved whatever the alerts it lists say: those left out may fire.
// The count is part of the digest only when set, so digests stored before
// it existed are unchanged.
func TestNotificationTruncated(t *testing.T) {
	cases := []struct {
		name      string
		statuses  []string
		truncated uint64
		want      string
	}{
		{"all listed resolved, none left out", []string{StatusResolved, StatusResolved}, 0, StatusResolved},
		{"all listed resolved, two left out", []string{StatusResolved, StatusResolved}, 2, StatusFiring},
		{"the one listed resolved, one left out", []string{StatusResolved}, 1, StatusFiring},
		{"one listed firing, two left out", []string{StatusFiring, StatusResolved}, 2, StatusFiring},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := SampleNotification()
			base := n.Alerts[0]
			n.Alerts = nil
			for i, st := range c.statuses {
				a := base
				a.Identity, a.Status = fmt.Sprintf("am:%d", i), st
				n.Alerts = append(n.Alerts, a)
			}
			before := n.Digest()
			n.Truncated = c.truncated
			require.Equal(t, c.want, n.Status())
			require.Equal(t, c.want, n.TemplateData().Status)
			require.Equal(t, c.truncated == 0, n.Digest() == before, "the digest changes only with alerts left out")
		})
	}
}

// The pacer starts calls at least 60/N s apart (plus 1% headroom) however
// many callers race, so no minute ever holds more than N calls; and Wait
// never returns before the call's start.
func TestLimiterNeverExceedsTheRate(t *testing.T) {
	lims := NewLimiters()
	require.Equal(t, 50500*time.Microsecond, lims.Get("backlog", "key", 1200).interval)
	l := lims.Get("backlog", "fast", 30000) // 2.02 ms apart
	var mu sync.Mutex
	var slots []time.Time
	l.onGrant = func(at time.Time) { slots = append(slots, at) } // under l.mu
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				before := time.Now()
				_, err := l.Wait(WithPriority(context.Background(), g%NumPriorities), 10*time.Second)
				require.NoError(t, err)
				mu.Lock()
				require.LessOrEqual(t, before, time.Now())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Len(t, slots, 800)
	sort.Slice(slots, func(i, j int) bool { return slots[i].Before(slots[j]) })
	for i := 1; i < len(slots); i++ {
		require.GreaterOrEqual(t, slots[i].Sub(slots[i-1]), l.interval, "slot %d", i)
	}
}

// When the budget is the bottleneck, a better class goes first: a critical
// call that arrives behind many warnings gets the next slot.
func TestLimiterServesBetterClassesFirst(t *testing.T) {
	l := NewLimiters().Get("pagerduty", "key", 1200) // 50.5 ms apart
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	start := func(class int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Wait(WithPriority(context.Background(), class), time.Minute)
			require.NoError(t, err)
			mu.Lock()
			order = append(order, class)
			mu.Unlock()
		}()
	}
	// The key is held while the calls queue up, so that all of them wait
	// when the next slot comes (a free slot 50 ms away was not always
	// enough for 12 goroutines to queue on a starved -race run).
	l.Hold(30 * time.Second)
	queued := func(n int) {
		require.Eventually(t, func() bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			return len(l.waiters) == n
		}, 10*time.Second, time.Millisecond)
	}
	for i := 0; i < 10; i++ {
		start(PriorityWarning)
		queued(i + 1)
	}
	start(PriorityCritical)
	queued(11)
	start(PriorityClose)
	queued(12)
	// The hold ends: the next slot is now.
	l.mu.Lock()
	l.next = time.Now()
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.mu.Unlock()
	l.dispatch()
	wg.Wait()
	require.Len(t, order, 12)
	require.Equal(t, []int{PriorityClose, PriorityCritical}, order[:2], "close, then critical, before every waiting warning")
}

func TestLimiterParksAndSchedules(t *testing.T) {
	lims := NewLimiters()
	l := lims.Get("pagerduty", "key", 60) // one per second
	_, err := l.Wait(context.Background(), time.Second)
	require.NoError(t, err)
	d, err := l.Wait(context.Background(), 10*time.Millisecond)
	require.Error(t, err, "a wait beyond maxWait is refused, not slept")
	require.Equal(t, ReasonRateLimitWait, AsError(err).Reason)
	require.Greater(t, d, 900*time.Millisecond)
	// Refusing booked nothing: the next call still starts one interval after the first.
	require.Zero(t, l.Admit(PriorityWarning, 2*time.Second))
	require.Greater(t, l.Admit(PriorityWarning, 10*time.Millisecond), time.Duration(0))

	// Schedule books work in line: the first 3 keys start now, the next 5
	// wait behind them; work of a better class waits only for its betters.
	l2 := lims.Get("pagerduty", "other", 60)
	require.Zero(t, l2.Schedule(3, PriorityWarning, 0))
	d = l2.Schedule(5, PriorityWarning, 0)
	require.InDelta(t, 3*l2.interval, d, float64(50*time.Millisecond))
	require.InDelta(t, 8*l2.interval, l2.Schedule(1, PriorityWarning, 0), float64(50*time.Millisecond))
	require.Zero(t, l2.Schedule(1, PriorityCritical, 0), "a critical trigger does not wait behind warnings")
	require.InDelta(t, 1*l2.interval, l2.Schedule(1, PriorityCritical, 0), float64(50*time.Millisecond))
}

func TestLimitersShareKeysLowestRateWins(t *testing.T) {
	lims := NewLimiters()
	a := lims.Get("pagerduty", "k", 120)
	b := lims.Get("pagerduty", "k", 60)
	require.Same(t, a, b)
	require.Equal(t, 60, a.PerMinute())
	require.NotSame(t, a, lims.Get("backlog", "k", 60), "kinds do not share")
	lims.Reset()
	require.Equal(t, 120, lims.Get("pagerduty", "k", 120).PerMinute(), "a reload may raise the rate")
}
