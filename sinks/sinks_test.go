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

// The pacer books starts at least 60/N s apart (plus 1% headroom) however
// many callers race, so no minute ever holds more than N calls; and Wait
// never returns before the booked start.
func TestLimiterNeverExceedsTheRate(t *testing.T) {
	lims := NewLimiters()
	l := lims.Get("backlog", "key", 1200)
	require.Equal(t, 50500*time.Microsecond, l.interval)
	var mu sync.Mutex
	var slots []time.Time
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				at, _ := l.reserve(time.Now())
				mu.Lock()
				slots = append(slots, at)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Slice(slots, func(i, j int) bool { return slots[i].Before(slots[j]) })
	for i := 1; i < len(slots); i++ {
		require.GreaterOrEqual(t, slots[i].Sub(slots[i-1]), l.interval, "slot %d", i)
	}
	// Any 60 s of 1,600 slots holds at most 1,200.
	for i := range slots {
		n := 0
		for k := i; k < len(slots) && slots[k].Sub(slots[i]) < time.Minute; k++ {
			n++
		}
		require.LessOrEqual(t, n, 1200)
	}

	l2 := lims.Get("backlog", "key2", 6000)
	for i := 0; i < 5; i++ {
		before := time.Now()
		d, err := l2.Wait(context.Background(), time.Second)
		require.NoError(t, err)
		require.GreaterOrEqual(t, time.Since(before), d, "Wait returned before the booked start")
	}
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
	require.Zero(t, l.Admit(2*time.Second))
	require.Greater(t, l.Admit(10*time.Millisecond), time.Duration(0))

	// Schedule books work in line: the first 3 keys start now, the next 5
	// wait behind them.
	l2 := lims.Get("pagerduty", "other", 60)
	require.Zero(t, l2.Schedule(3, 0))
	d = l2.Schedule(5, 0)
	require.InDelta(t, 3*l2.interval, d, float64(50*time.Millisecond))
	require.InDelta(t, 8*l2.interval, l2.Schedule(1, 0), float64(50*time.Millisecond))
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
