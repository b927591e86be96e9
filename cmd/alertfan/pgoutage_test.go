package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// pgProxy forwards to PostgreSQL until cut: then it closes every
// connection and refuses new ones until restored (PostgreSQL restarted).
type pgProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	down  bool
	conns []net.Conn
}

func newPGProxy(t *testing.T, target string) *pgProxy {
	p := &pgProxy{ln: listen(t)}
	go func() {
		for {
			c, err := p.ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				c.Close()
				continue
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close(); c.Close() }() //nolint:errcheck
			go func() { io.Copy(c, s); s.Close(); c.Close() }() //nolint:errcheck
		}
	}()
	t.Cleanup(func() { p.ln.Close() })
	return p
}

func (p *pgProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *pgProxy) restore() { p.mu.Lock(); p.down = false; p.mu.Unlock() }

// proxiedPostgres is the test's database behind a pgProxy, and the DSN that
// reaches it through the proxy.
func proxiedPostgres(t *testing.T) (*pgProxy, string) {
	u, err := url.Parse(testenv.PostgresDSN(t))
	require.NoError(t, err)
	proxy := newPGProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	return proxy, u.String()
}

// TestPostgresOutageRepeatsNothing: two replicas; PostgreSQL goes away for
// 8 s while PagerDuty calls are answered (no process is killed). A call
// whose outcome cannot be written keeps its job and writes it once the
// database is back, so no replica makes it again (found by a breaker: with
// six quick write attempts the job was handed back and the other replica
// repeated 12-14 of 40 calls).
func TestPostgresOutageRepeatsNothing(t *testing.T) {
	proxy, dsn := proxiedPostgres(t)
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	var (
		mu       sync.Mutex
		n        int
		inFlight int
		atCut    int
		cutOnce  sync.Once
	)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		inFlight++
		k := n
		mu.Unlock()
		if k == 10 {
			cutOnce.Do(func() {
				mu.Lock()
				atCut = inFlight
				mu.Unlock()
				proxy.cut()
				go func() { time.Sleep(8 * time.Second); proxy.restore() }()
			})
		}
		time.Sleep(200 * time.Millisecond)
		pd.Config.Handler.ServeHTTP(w, r)
		mu.Lock()
		inFlight--
		mu.Unlock()
	})
	ln, stopTarget := serve(t, h)
	defer stopTarget()
	cfg := fmt.Sprintf(`storage:
  driver: postgres
  dsn_file: dsn
  max_connections: 12
delivery:
  workers: 4
  min_backoff: 50ms
  max_backoff: 500ms
  poll_interval: 20ms
  job_timeout: 30s
  rescue_after: 45s
route:
  receiver: oncall
receivers:
  - name: oncall
    pagerduty_configs:
      - routing_key: %s
        url: http://%s/v2/enqueue
        rate_limit_per_minute: 600000
`, crashRoutingKey, ln.Addr().String())
	cs, _ := startReplicas(t, replicaDirs(t, 2, dsn, cfg))
	start := time.Now().UTC()
	const alerts = 40
	as := make([]sinkstest.WebhookAlert, alerts)
	for i := range as {
		as[i] = sinkstest.NamedAlert("Blip", "critical", fmt.Sprintf("b-%03d", i), "firing", start)
	}
	code, err := cs[0].post(context.Background(), "/webhook", sinkstest.Webhook("oncall", `{}:{g="blip"}`, nil, as...))
	require.NoError(t, err)
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool {
		keys := map[string]bool{}
		for _, e := range pd.Events() {
			keys[e.DedupKey] = true
		}
		return len(keys) >= alerts
	}, 90*time.Second, 100*time.Millisecond)
	time.Sleep(3 * time.Second)
	require.Eventually(t, func() bool { return queueIdle(cs[0].addr) }, 60*time.Second, 100*time.Millisecond)
	per := map[string]int{}
	for _, e := range pd.Events() {
		per[e.DedupKey]++
	}
	dups := 0
	for _, k := range per {
		if k > 1 {
			dups += k - 1
		}
	}
	mu.Lock()
	t.Logf("%d replicas: %d events for %d alerts; %d repeated; %d calls in flight at the cut (no process killed)", len(cs), len(pd.Events()), len(per), dups, atCut)
	mu.Unlock()
	require.Zero(t, dups, "PagerDuty got repeats though no replica was killed")
}

// TestPostgresOutageRepeatsNoBacklogComment: two replicas, a Backlog that
// takes a second to answer, and PostgreSQL away for 15 s while the
// acknowledges' comments are being posted. A comment is not idempotent:
// one whose outcome could not be written must not be posted again by the
// other replica (a breaker saw 37 of 100 posted twice). The outage is
// logged as a run, not a line per failed commit.
func TestPostgresOutageRepeatsNoBacklogComment(t *testing.T) {
	proxy, dsn := proxiedPostgres(t)
	const apiKey = "outage-test-backlog-key"
	b := sinkstest.NewBacklog(apiKey)
	defer b.Close()
	b.UpdateLimit, b.ReadLimit, b.SearchLimit = 1<<20, 1<<20, 1<<20
	var cutOnce sync.Once
	var acking atomic.Bool
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if acking.Load() && r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/comments") {
			cutOnce.Do(func() {
				proxy.cut()
				go func() { time.Sleep(15 * time.Second); proxy.restore() }()
			})
		}
		time.Sleep(time.Second)
		b.Config.Handler.ServeHTTP(w, r)
	})
	ln, stopTarget := serve(t, h)
	defer stopTarget()
	// A fetch whose answer the cut lost leaves its jobs marked running;
	// the replica's sweep (queue/fetchlost.go) makes them available again
	// after 30–40 s. rescue_after is short too, so that a job whose
	// replica could not sweep it still comes within the test's wait.
	cfg := fmt.Sprintf(`storage:
  driver: postgres
  dsn_file: dsn
delivery:
  poll_interval: 20ms
  min_backoff: 50ms
  max_backoff: 500ms
  job_timeout: 10s
  rescue_after: 30s
route:
  receiver: tickets
receivers:
  - name: tickets
    backlog_configs:
      - api_url: http://%s
        api_key: %s
        project: OPS
        issue_type: Bug
        rate_limit_per_minute: 60000
`, ln.Addr().String(), apiKey)
	cs, _ := startReplicas(t, replicaDirs(t, 2, dsn, cfg))
	const alerts = 30
	event := func(action string, i int) []byte {
		ev := map[string]any{"routing_key": crashRoutingKey, "event_action": action, "dedup_key": fmt.Sprintf("outage-%02d", i)}
		if action == "trigger" {
			ev["payload"] = map[string]any{"summary": fmt.Sprintf("Outage %02d", i), "source": "db", "severity": "critical"}
		}
		body, _ := json.Marshal(ev)
		return body
	}
	for i := range alerts {
		code, err := cs[i%2].post(context.Background(), "/v2/enqueue", event("trigger", i))
		require.NoError(t, err)
		require.Equal(t, 202, code)
	}
	require.Eventually(t, func() bool { return len(b.Issues()) >= alerts && queueIdle(cs[0].addr) }, 90*time.Second, 100*time.Millisecond)
	acking.Store(true)
	for i := range alerts {
		// Once the first comment is on its way the database is away:
		// the sender retries a 503, as PagerDuty's clients do.
		require.Eventually(t, func() bool {
			code, err := cs[i%2].post(context.Background(), "/v2/enqueue", event("acknowledge", i))
			require.NoError(t, err)
			require.Contains(t, []int{202, 503}, code)
			return code == 202
		}, 60*time.Second, 500*time.Millisecond)
	}
	require.Eventually(t, func() bool {
		for _, is := range b.Issues() {
			if len(is.Comments) == 0 {
				return false
			}
		}
		return true
	}, 3*time.Minute, 200*time.Millisecond)
	require.Eventually(t, func() bool { return queueIdle(cs[0].addr) }, 2*time.Minute, 200*time.Millisecond)
	time.Sleep(2 * time.Second)
	twice := 0
	for _, is := range b.Issues() {
		twice += len(is.Comments) - 1
	}
	lines := 0
	for _, c := range cs {
		n := strings.Count(c.logs.String(), "Store commit")
		lines = max(lines, n)
	}
	t.Logf("2 replicas, PostgreSQL away 15 s while %d acknowledge comments were posted (1 s each): %d posted twice; at most %d log lines of failed commits per replica", alerts, twice, lines)
	require.Zero(t, twice, "an acknowledge comment was posted twice")
	require.LessOrEqual(t, lines, 2, "a run of failed commits is logged as one line (a reminder a minute), not one per commit")
}
