package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

func shutdownConfig(pdURL string) string {
	return fmt.Sprintf(`storage:
  driver: sqlite
  path: data/alertfan.db
delivery:
  workers: 20
  min_backoff: 50ms
  max_backoff: 500ms
  poll_interval: 10ms
  job_timeout: 60s
  rescue_after: 90s
route:
  receiver: oncall
receivers:
  - name: oncall
    pagerduty_configs:
      - routing_key: %s
        url: %s
        rate_limit_per_minute: 600000
`, crashRoutingKey, pdURL)
}

// runningJobs counts River jobs left running in a stopped alertfan's
// SQLite file.
func runningJobs(t *testing.T, dir string) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "data", "alertfan.db")+"?mode=ro")
	require.NoError(t, err)
	defer db.Close()
	var n int
	require.NoError(t, db.QueryRow(`SELECT COUNT(*) FROM river_job WHERE state = 'running'`).Scan(&n))
	return n
}

// term sends SIGTERM to the child (by its PID) and waits up to limit for
// it to exit; it returns the exit code and how long the exit took.
func (c *child) term(t *testing.T, limit time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-c.done:
	case <-time.After(limit):
		t.Fatalf("alertfan did not exit within %v of SIGTERM: %s", limit, c.logs.String())
	}
	return c.cmd.ProcessState.ExitCode(), time.Since(start)
}

// TestCleanStopWithASlowTarget stops alertfan with SIGTERM while every
// call to its target hangs for 20 s: intake closes at once, the calls in
// flight get --shutdown-timeout, the process exits 0 inside Docker's grace
// period, and a restart delivers everything that was accepted, with no
// job left running (issue 10, item 7).
func TestCleanStopWithASlowTarget(t *testing.T) {
	var (
		mu      sync.Mutex
		entered []time.Time
	)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		entered = append(entered, time.Now())
		mu.Unlock()
		select {
		case <-time.After(20 * time.Second):
			w.WriteHeader(http.StatusServiceUnavailable)
		case <-r.Context().Done():
		}
	})
	ln, stopSlow := serve(t, slow)
	defer stopSlow()
	inFlight := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(entered)
	}

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yml"), []byte(shutdownConfig("http://"+ln.Addr().String()+"/v2/enqueue")), 0o600))
	c := startChild(t, dir, "", "--shutdown-timeout=2s", "--log.level=info")
	addr := c.addr

	const total = 20
	start := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	accepted := map[string]bool{}
	for i := 0; i < total; i++ {
		a := sinkstest.NamedAlert("Stop", "critical", fmt.Sprintf("host-%02d", i), "firing", start)
		code, err := c.post(context.Background(), "/webhook", sinkstest.Webhook("oncall", fmt.Sprintf(`{}:{instance="host-%02d"}`, i), nil, a))
		require.NoError(t, err)
		require.Equal(t, 200, code)
		accepted[sha256hex("am:"+a.Fingerprint)] = true
	}
	require.Eventually(t, func() bool { return inFlight() > 0 }, 10*time.Second, 5*time.Millisecond, "a call reached the slow target")
	time.Sleep(100 * time.Millisecond) // let more calls get under way
	callsAtTerm := inFlight()

	// While it drains, alertfan is not ready and takes no new work.
	var (
		probes   sync.WaitGroup
		seen     = map[string]int{}
		stopProb = make(chan struct{})
		shutAt   time.Time // when the test saw the child begin its shutdown
	)
	probes.Add(1)
	go func() {
		defer probes.Done()
		// From the child's own word that it began (a fixed 50 ms for the
		// signal to be handled was not always enough on a starved run).
		for !strings.Contains(c.logs.String(), "Shutting down") {
			select {
			case <-stopProb:
				return
			case <-time.After(time.Millisecond):
			}
		}
		mu.Lock()
		shutAt = time.Now()
		mu.Unlock()
		for {
			select {
			case <-stopProb:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/-/ready", nil)
			resp, err := http.DefaultClient.Do(req)
			cancel()
			mu.Lock()
			if err != nil {
				seen["ready: refused"]++
			} else {
				resp.Body.Close()
				seen[fmt.Sprintf("ready: %d", resp.StatusCode)]++
			}
			mu.Unlock()
			code, err := c.post(context.Background(), "/webhook", sinkstest.Webhook("oncall", `{}:{instance="late"}`, nil,
				sinkstest.NamedAlert("Stop", "critical", "late", "firing", start)))
			mu.Lock()
			if err != nil {
				seen["webhook: refused"]++
			} else {
				seen[fmt.Sprintf("webhook: %d", code)]++
			}
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	termAt := time.Now()
	code, took := c.term(t, 6*time.Second)
	close(stopProb)
	probes.Wait()
	logs := c.logs.String()
	mu.Lock()
	require.False(t, shutAt.IsZero(), "the child never logged its shutdown: %s", logs)
	t.Logf("the shutdown began %v after the signal", shutAt.Sub(termAt).Round(time.Millisecond))
	lateCalls := 0
	for _, at := range entered {
		if at.After(shutAt.Add(200 * time.Millisecond)) {
			lateCalls++
		}
	}
	t.Logf("SIGTERM with %d calls hanging at the target: exit %d after %v; while draining %v; %d calls started after the signal",
		callsAtTerm, code, took.Round(time.Millisecond), seen, lateCalls)
	mu.Unlock()
	require.Equal(t, 0, code, "a clean stop exits 0: %s", logs)
	require.Less(t, took, 4*time.Second, "--shutdown-timeout=2s bounds the stop, well inside Docker's 10 s")
	require.Contains(t, logs, "Shutting down")
	require.Zero(t, seen["ready: 200"], "/-/ready is not 200 while draining")
	require.Zero(t, seen["webhook: 200"], "no new work is taken while draining")
	require.Zero(t, lateCalls, "no call starts after the shutdown began")
	require.Zero(t, runningJobs(t, dir), "the clean stop leaves no job running")

	// Restart on the same data with a target that answers at once: every
	// accepted alert is delivered, and nothing is left running.
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yml"), []byte(shutdownConfig(pd.EventsURL())), 0o600))
	restarted := time.Now()
	c = startChild(t, dir, addr)
	require.Eventually(t, func() bool {
		got := map[string]bool{}
		for _, e := range pd.Events() {
			if e.EventAction == "trigger" {
				got[e.DedupKey] = true
			}
		}
		for k := range accepted {
			if !got[k] {
				return false
			}
		}
		return true
	}, 20*time.Second, 20*time.Millisecond, "every accepted alert is delivered after the restart")
	deliveredIn := time.Since(restarted)
	require.Eventually(t, func() bool { return queueIdle(c.addr) }, 20*time.Second, 50*time.Millisecond)
	code, _ = c.term(t, 10*time.Second)
	require.Equal(t, 0, code)
	require.Zero(t, runningJobs(t, dir), "no job left running")
	t.Logf("after the restart: %d of %d accepted alerts delivered in %v (%d events), no job running",
		len(accepted), total, deliveredIn.Round(time.Millisecond), len(pd.Events()))
	require.False(t, strings.Contains(c.logs.String(), "panic"))
}
