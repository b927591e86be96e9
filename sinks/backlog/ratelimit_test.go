package backlog

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRetryAfterUsesTheAnswersClock: X-RateLimit-Reset is read against the
// answer's Date, so a replica with a skewed clock waits what Backlog means
// (found by a breaker: 10 min slow held the key 10m29s for every replica).
func TestRetryAfterUsesTheAnswersClock(t *testing.T) {
	server := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	reset := strconv.FormatInt(server.Add(30*time.Second).Unix(), 10)
	cases := []struct {
		name   string
		header http.Header
		local  time.Time
		want   time.Duration
	}{
		{"clock right", http.Header{"X-Ratelimit-Reset": {reset}, "Date": {server.Format(http.TimeFormat)}}, server, 30*time.Second + 100*time.Millisecond},
		{"clock 10 min slow", http.Header{"X-Ratelimit-Reset": {reset}, "Date": {server.Format(http.TimeFormat)}}, server.Add(-10 * time.Minute), 30*time.Second + 100*time.Millisecond},
		{"clock 2 min fast", http.Header{"X-Ratelimit-Reset": {reset}, "Date": {server.Format(http.TimeFormat)}}, server.Add(2 * time.Minute), 30*time.Second + 100*time.Millisecond},
		{"no Date: local clock, whole-second slack", http.Header{"X-Ratelimit-Reset": {reset}}, server, 31 * time.Second},
		{"no Date, clock far slow: capped", http.Header{"X-Ratelimit-Reset": {reset}}, server.Add(-time.Hour), maxResetWait},
		{"Retry-After wins", http.Header{"Retry-After": {"5"}, "X-Ratelimit-Reset": {reset}}, server, 5 * time.Second},
		{"reset passed", http.Header{"X-Ratelimit-Reset": {reset}, "Date": {server.Add(time.Minute).Format(http.TimeFormat)}}, server, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, retryAfter(c.header, c.local))
		})
	}
}
