package receiver

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// storm posts n alerts of one severity in notifications of 50, as one
// Alertmanager group per notification would.
func storm(t *testing.T, ts *testServer, prefix, severity, status string, n int) {
	t.Helper()
	for i := 0; i < n; i += 50 {
		var as []sinkstest.WebhookAlert
		for k := i; k < min(n, i+50); k++ {
			as = append(as, sinkstest.NamedAlert(prefix, severity, fmt.Sprintf("host-%05d", k), status, t0))
		}
		code, body := ts.post(t, "/webhook", sinkstest.Webhook("oncall", fmt.Sprintf(`{}:{alertname=%q,batch="%d"}`, prefix, i), nil, as...))
		require.Equal(t, 200, code, "%v", body)
	}
}

func pdRateConfig(url string, perMinute int, delivery string) string {
	return strings.Replace(pdConfig(url, ""), "rate_limit_per_minute: 60000", fmt.Sprintf("rate_limit_per_minute: %d", perMinute), 1) + delivery
}

func countActions(pd *sinkstest.PagerDuty) map[string]int {
	out := map[string]int{}
	for _, e := range pd.Events() {
		out[e.EventAction]++
	}
	return out
}

// Queued work follows the present: a reload that raises a key's rate
// limit releases the work queued under the old one at once.
func TestReloadRaisingTheRateReleasesQueuedWork(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdRateConfig(pd.EventsURL(), 60, ""))
	storm(t, ts, "Storm", "warning", "firing", 300)
	time.Sleep(1500 * time.Millisecond)
	require.Less(t, len(pd.Events()), 10, "held at 60/min")

	require.NoError(t, os.WriteFile(ts.cfg, []byte(strings.Replace(mustRead(t, ts.cfg), "rate_limit_per_minute: 60\n", "rate_limit_per_minute: 600000\n", 1)), 0o600))
	reloaded := time.Now()
	code, body := ts.post(t, "/-/reload", nil)
	require.Equal(t, 200, code, "%v", body)
	require.Eventually(t, func() bool { return countActions(pd)["trigger"] == 300 }, 10*time.Second, 20*time.Millisecond)
	t.Logf("300 alerts queued at 60/min delivered %v after the reload raised the rate", time.Since(reloaded).Round(time.Millisecond))
}

// The same after a restart with the higher rate.
func TestRestartWithAHigherRateReleasesQueuedWork(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	dir := t.TempDir()
	ts := startServerIn(t, dir, pdRateConfig(pd.EventsURL(), 60, ""))
	storm(t, ts, "Storm", "warning", "firing", 300)
	time.Sleep(time.Second)
	ts.stop()
	before := len(pd.Events())
	require.Less(t, before, 10)

	restarted := time.Now()
	startServerIn(t, dir, pdRateConfig(pd.EventsURL(), 600000, ""))
	require.Eventually(t, func() bool { return countActions(pd)["trigger"] >= 300 }, 10*time.Second, 20*time.Millisecond)
	t.Logf("delivered %v after the restart", time.Since(restarted).Round(time.Millisecond))
}

// A storm that resolves while it is queued leaves the queue within
// seconds: the triggers never sent need no call, and each one that was
// sent gets its resolve.
func TestStormResolvedWhileQueuedLeavesTheQueue(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdRateConfig(pd.EventsURL(), 60, ""))
	storm(t, ts, "Storm", "warning", "firing", 200)
	time.Sleep(1500 * time.Millisecond)
	storm(t, ts, "Storm", "warning", "resolved", 200)
	resolved := time.Now()
	settle(t, ts)
	took := time.Since(resolved)
	triggered, got := map[string]bool{}, map[string]int{}
	for _, e := range pd.Events() {
		got[e.EventAction]++
		if e.EventAction == "trigger" {
			triggered[e.DedupKey] = true
			require.True(t, e.Received.Before(resolved), "no trigger is sent after its alert resolved")
		} else {
			require.True(t, triggered[e.DedupKey], "a resolve only for a trigger that was sent")
		}
	}
	t.Logf("queue empty %v after the storm resolved; PagerDuty got %v", took.Round(time.Millisecond), got)
	require.Equal(t, got["trigger"], got["resolve"], "every sent trigger resolved, nothing else: %v", got)
	require.Less(t, got["trigger"], 10)
	// The resolves of the sent triggers go out at the rate (1/s); every
	// other queued trigger leaves the queue within seconds, not at a
	// pacing slot each (~190 s). The slack is for a starved -race run,
	// where intake, the jobs' re-plan and settle's polling all stretch.
	require.Less(t, took, time.Duration(got["resolve"])*1010*time.Millisecond+20*time.Second)
}

// When a key's budget is the bottleneck, a critical alert that arrives
// behind 2,000 warnings goes out within one pacing slot plus a second.
func TestCriticalOvertakesQueuedWarnings(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	var mu sync.Mutex
	var criticalAt time.Time
	pd.OnEvent = func(e sinkstest.PDEvent) {
		if strings.Contains(string(e.Payload), "Critical") {
			mu.Lock()
			criticalAt = e.Received
			mu.Unlock()
		}
	}
	ts := startServer(t, pdRateConfig(pd.EventsURL(), 120, ""))
	storm(t, ts, "Warn", "warning", "firing", 2000)
	time.Sleep(2 * time.Second)
	sent := time.Now()
	code, body := ts.post(t, "/webhook", sinkstest.Webhook("oncall", `{}:{alertname="Critical"}`, nil,
		sinkstest.NamedAlert("Critical", "critical", "db-1", "firing", t0)))
	require.Equal(t, 200, code, "%v", body)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return !criticalAt.IsZero()
	}, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	took := criticalAt.Sub(sent)
	mu.Unlock()
	overtaken := 0 // warnings that went out between the critical's arrival and its delivery
	for _, e := range pd.Events() {
		if e.Received.After(sent) && e.Received.Before(criticalAt) {
			overtaken++
		}
	}
	t.Logf("critical delivered %v after it arrived, behind %d queued warnings; %d warnings went out meanwhile", took.Round(time.Millisecond), 2000-len(pd.Events()), overtaken)
	// Counted in pacing slots rather than seconds: the promise is one slot
	// (0.5 s at 120/min) plus a second, and a starved -race run stretches
	// the second (intake, commit, fetch) without moving the order.
	require.LessOrEqual(t, overtaken, 3, "more warnings went first than one pacing slot plus a second's worth (3 at 120/min)")
}

// Every answer of the target counts as an attempt, Retry-After included:
// max_attempts: 2 against a target answering 503 with Retry-After: 1 is
// a dead letter after two calls.
func TestRetryAfterCountsAsAnAttempt(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	for i := 0; i < 20; i++ {
		pd.Script(sinkstest.PDResponse{Status: 503, RetryAfter: "1", Body: `{"status":"unavailable"}`})
	}
	ts := startServer(t, pdConfig(pd.EventsURL(), "")+`
delivery:
  max_attempts: 2
  min_backoff: 50ms
  max_backoff: 200ms
  poll_interval: 10ms
  job_timeout: 15s
  rescue_after: 20s
`)
	code, body := ts.post(t, "/webhook", firing("Flaky", "db-1"))
	require.Equal(t, 200, code, "%v", body)
	require.Eventually(t, func() bool {
		_, m := ts.get(t, "/metrics")
		return strings.Contains(m, `alertfan_dead_letters{target="oncall/pagerduty/0"} 1`)
	}, 10*time.Second, 50*time.Millisecond)
	time.Sleep(1500 * time.Millisecond)
	require.Equal(t, 2, pd.Attempts(), "two attempts, then a dead letter; never retried forever")
}

// A target that comes back gets its queue back at once: while it is down
// one call at a time probes it, and the first success releases the rest,
// however long their back-off had grown.
func TestRecoveredTargetGetsItsQueueAtOnce(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	pd.SetDown(true)
	ts := startServer(t, pdConfig(pd.EventsURL(), "")+`
delivery:
  min_backoff: 1s
  max_backoff: 5m
  poll_interval: 50ms
  job_timeout: 15s
  rescue_after: 20s
`)
	storm(t, ts, "Outage", "critical", "firing", 200)
	const outage = 12 * time.Second
	time.Sleep(outage)
	during := pd.Attempts()
	pd.SetDown(false)
	up := time.Now()
	require.Eventually(t, func() bool { return countActions(pd)["trigger"] == 200 }, 10*time.Second, 20*time.Millisecond)
	t.Logf("200 alerts, %v outage: %d calls during it, all delivered %v after recovery", outage, during, time.Since(up).Round(time.Millisecond))
	require.Less(t, during, 120, "a down target is probed, not hammered by every job")
	_, m := ts.get(t, "/metrics")
	require.Contains(t, m, `alertfan_target_up{target="oncall/pagerduty/0"} 1`)
	require.Equal(t, 1, strings.Count(ts.logs.String(), "Target is down"), "one line per state change")
	require.Equal(t, 1, strings.Count(ts.logs.String(), "Target is back"))
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// One request's failure is that request's alone: 400 retries of a dead
// letter that does not exist, concurrent with 2,000 webhooks, are each
// answered 404 and no webhook gets a 503 (issue 10, item 1).
func TestMissingDeadLetterRetriesAmidWebhooks(t *testing.T) {
	cases := []struct {
		name    string
		storage func(t *testing.T, dir string) string
	}{
		{"sqlite", func(t *testing.T, dir string) string { return "" }},
		{"postgres", func(t *testing.T, dir string) string {
			dsn := testenv.PostgresDSN(t)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "dsn"), []byte(dsn), 0o600))
			return "storage:\n  driver: postgres\n  dsn_file: dsn\n"
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pd := sinkstest.NewPagerDuty()
			defer pd.Close()
			dir := t.TempDir()
			ts := startServerIn(t, dir, c.storage(t, dir)+pdConfig(pd.EventsURL(), ""))
			client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 512}}
			defer client.CloseIdleConnections()
			const webhooks, retries = 2000, 400
			var (
				wg    sync.WaitGroup
				mu    sync.Mutex
				codes = map[string]map[int]int{"webhook": {}, "retry": {}}
				errs  []error
			)
			post := func(what, path string, body []byte) {
				defer wg.Done()
				resp, err := client.Post(ts.URL+path, "application/json", bytes.NewReader(body))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				io.Copy(io.Discard, resp.Body) //nolint:errcheck
				resp.Body.Close()
				codes[what][resp.StatusCode]++
			}
			start := make(chan struct{})
			for i := 0; i < webhooks+retries; i++ {
				wg.Add(1)
				go func() {
					<-start
					if i%6 == 5 && i/6 < retries {
						post("retry", "/api/v1/dead-letters/999999/retry", nil)
						return
					}
					post("webhook", "/webhook", firing("Iso", fmt.Sprintf("host-%05d", i)))
				}()
			}
			close(start)
			wg.Wait()
			require.Empty(t, errs)
			t.Logf("%d webhooks → %v; %d retries of a missing id → %v", webhooks, codes["webhook"], retries, codes["retry"])
			require.Equal(t, map[int]int{200: webhooks}, codes["webhook"], "no webhook fails because of another request")
			require.Equal(t, map[int]int{404: retries}, codes["retry"], "each retry of a missing id is a 404")
			_, m := ts.get(t, "/metrics")
			require.Contains(t, m, "alertfan_store_commit_errors_total 0")
			require.NotContains(t, ts.logs.String(), "Could not commit accepted alerts")
		})
	}
}

// A target's Retry-After never pushes a delivery past max_age: the attempt
// at the deadline is the last, and its failure is a dead letter.
func TestRetryAfterBoundedByMaxAge(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	for i := 0; i < 10; i++ {
		pd.Script(sinkstest.PDResponse{Status: 503, RetryAfter: "86400", Body: `{"status":"unavailable"}`})
	}
	ts := startServer(t, pdConfig(pd.EventsURL(), "")+`
delivery:
  max_age: 2s
  min_backoff: 50ms
  max_backoff: 200ms
  poll_interval: 10ms
  job_timeout: 15s
  rescue_after: 20s
`)
	code, body := ts.post(t, "/webhook", firing("Day", "db-1"))
	require.Equal(t, 200, code, "%v", body)
	start := time.Now()
	require.Eventually(t, func() bool {
		_, m := ts.get(t, "/metrics")
		return strings.Contains(m, `alertfan_dead_letters{target="oncall/pagerduty/0"} 1`)
	}, 15*time.Second, 50*time.Millisecond, "dead-lettered at max_age, not after the day Retry-After asked for")
	t.Logf("dead letter %v after the first attempt, %d calls", time.Since(start).Round(time.Millisecond), pd.Attempts())
	require.LessOrEqual(t, pd.Attempts(), 3)
}

// A 429 is about the key: another alert to the same routing key waits out
// its Retry-After too.
func TestRateLimitedAnswerHoldsTheKey(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	pd.Script(sinkstest.PDResponse{Status: 429, RetryAfter: "2", Body: `{"status":"throttle event"}`})
	ts := startServer(t, pdConfig(pd.EventsURL(), ""))
	// The 429 comes after this instant, so every call after it is at
	// least Retry-After later (an instant read after polling for the 429
	// could be late by however long a starved poll took).
	sent := time.Now()
	code, _ := ts.post(t, "/webhook", firing("First", "db-1"))
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool { return pd.Attempts() >= 1 }, 5*time.Second, 5*time.Millisecond)
	code, _ = ts.post(t, "/webhook", firing("Second", "db-2"))
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool { return len(pd.Events()) == 2 }, 10*time.Second, 10*time.Millisecond)
	for _, e := range pd.Events() {
		require.GreaterOrEqual(t, e.Received.Sub(sent), 2*time.Second, "no call of the key before its Retry-After")
	}
}
