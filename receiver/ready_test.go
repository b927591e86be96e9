package receiver

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/logrun"
	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/receiver/queue"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// TestBrokenBacklogAtStartIsHeldNotFatal: a Backlog target whose API
// refuses the configuration at start (key revoked: 401) makes that target
// not ready — metric, log, /-/ready detail — while alertfan starts, pages
// through PagerDuty, and holds the target's deliveries until it recovers.
func TestBrokenBacklogAtStartIsHeldNotFatal(t *testing.T) {
	old := gateRecheck
	gateRecheck = 200 * time.Millisecond
	// Put back after the server below has stopped (its cleanup runs
	// before this one; a defer would run while it still reads the value).
	t.Cleanup(func() { gateRecheck = old })
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	target, err := url.Parse(b.URL)
	require.NoError(t, err)
	var broken atomic.Bool
	broken.Store(true)
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if broken.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"message":"Authenticate error.","code":11,"moreInfo":""}]}`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()

	ts := startServer(t, fmt.Sprintf(`
route:
  receiver: both
receivers:
  - name: both
    pagerduty_configs:
      - routing_key: %s
        url: %s
        rate_limit_per_minute: 60000
    backlog_configs:
      - api_url: %s
        api_key: %s
        project: OPS
        issue_type: Bug
        rate_limit_per_minute: 60000
delivery:
  max_attempts: 2
  min_backoff: 50ms
  max_backoff: 200ms
  poll_interval: 10ms
`, testRoutingKey, pd.EventsURL(), front.URL, backlogKey))
	code, body := ts.get(t, "/-/ready")
	require.Equal(t, 200, code, "the process can commit: ready")
	require.Contains(t, body, "Targets not ready")
	require.Contains(t, body, "both/backlog/0")
	_, m := ts.get(t, "/metrics")
	require.Contains(t, m, `alertfan_target_ready{sink="backlog",target="both/backlog/0"} 0`)
	require.Contains(t, m, `alertfan_target_ready{sink="pagerduty",target="both/pagerduty/0"} 1`)
	require.Contains(t, ts.logs.String(), "Target is not ready")
	require.NotContains(t, ts.logs.String(), backlogKey)

	code, _ = ts.post(t, "/webhook", firing("A", "h1"))
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool { return len(pd.Events()) == 1 }, 10*time.Second, 10*time.Millisecond, "PagerDuty pages meanwhile")
	// Many checks fail meanwhile (every 200 ms): none spends one of the
	// two attempts, nothing is dead-lettered.
	time.Sleep(2 * time.Second)
	require.Empty(t, b.Issues(), "held while the target is not ready")
	var dead []queue.DeadLetter
	getData(t, ts, "/api/v1/dead-letters", &dead)
	require.Empty(t, dead, "a target that is not ready spends no attempt")

	broken.Store(false)
	require.Eventually(t, func() bool { return len(b.Issues()) == 1 }, 60*time.Second, 50*time.Millisecond, "delivered once it recovers")
	_, m = ts.get(t, "/metrics")
	require.Contains(t, m, `alertfan_target_ready{sink="backlog",target="both/backlog/0"} 1`)
	_, body = ts.get(t, "/-/ready")
	require.NotContains(t, body, "Targets not ready")
	require.Contains(t, ts.logs.String(), "Target is ready again")
}

// TestReadyMeansCanCommit: while PostgreSQL refuses connections, /-/ready
// answers 503 (from the commit path's cached health, probed when intake is
// quiet) and intake answers 503 within the commit timeout; both recover.
func TestReadyMeansCanCommit(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dsn"), []byte(dsn), 0o600))
	ts := startServerIn(t, dir, "storage:\n  driver: postgres\n  dsn_file: dsn\n"+pdConfig(pd.EventsURL(), ""), func(o *Options) {
		o.ProbeInterval = 100 * time.Millisecond
		o.CommitTimeout = 2 * time.Second
	})
	code, _ := ts.get(t, "/-/ready")
	require.Equal(t, 200, code)

	admin, err := sql.Open("pgx", os.Getenv("ALERTFAN_TEST_POSTGRES_DSN"))
	require.NoError(t, err)
	defer admin.Close()
	db := dbName(t, dsn)
	_, err = admin.Exec(`ALTER DATABASE ` + db + ` ALLOW_CONNECTIONS false`)
	require.NoError(t, err)
	_, err = admin.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, db)
	require.NoError(t, err)
	defer admin.Exec(`ALTER DATABASE ` + db + ` ALLOW_CONNECTIONS true`) //nolint:errcheck

	require.Eventually(t, func() bool { code, _ := ts.get(t, "/-/ready"); return code == 503 }, 15*time.Second, 50*time.Millisecond,
		"not ready while the store cannot commit, without any intake traffic")
	_, body := ts.get(t, "/-/ready")
	require.Contains(t, body, "cannot commit")
	_, m := ts.get(t, "/metrics")
	require.Contains(t, m, "alertfan_store_can_commit 0")
	start := time.Now()
	code, _ = ts.post(t, "/webhook", firing("B", "h1"))
	require.Equal(t, 503, code)
	require.Less(t, time.Since(start), 5*time.Second, "503 within the commit timeout")
	require.NotContains(t, ts.logs.String(), dsn)
	for range 4 { // the sender retrying
		code, _ = ts.post(t, "/webhook", firing("B", "h1"))
		require.Equal(t, 503, code)
	}

	_, err = admin.Exec(`ALTER DATABASE ` + db + ` ALLOW_CONNECTIONS true`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { code, _ := ts.get(t, "/-/ready"); return code == 200 }, 20*time.Second, 50*time.Millisecond)
	code, _ = ts.post(t, "/webhook", firing("B", "h1"))
	require.Equal(t, 200, code)
	// The run ends at an acceptance logrun.Settle after its last 503 (a
	// flapping database stays one run).
	time.Sleep(logrun.Settle)
	code, _ = ts.post(t, "/webhook", firing("B", "h1"))
	require.Equal(t, 200, code)
	logs := ts.logs.String()
	require.Equal(t, 1, strings.Count(logs, "Could not commit accepted alerts"), "one line for the five 503s, not one each: %s", logs)
	require.Contains(t, logs, "refused=5", "the run's end says how many")
}

// A read-only PostgreSQL (a standby after a failover) lets an empty
// transaction commit but no write: readiness probes with a write, so it
// goes not ready without any intake traffic, and back when writes work.
func TestReadyOnReadOnlyPostgres(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dsn"), []byte(dsn), 0o600))
	ts := startServerIn(t, dir, "storage:\n  driver: postgres\n  dsn_file: dsn\n"+pdConfig(pd.EventsURL(), ""), func(o *Options) {
		o.ProbeInterval = 100 * time.Millisecond
		o.CommitTimeout = 2 * time.Second
	})
	code, _ := ts.get(t, "/-/ready")
	require.Equal(t, 200, code)
	admin, err := sql.Open("pgx", os.Getenv("ALERTFAN_TEST_POSTGRES_DSN"))
	require.NoError(t, err)
	defer admin.Close()
	db := dbName(t, dsn)
	_, err = admin.Exec(`ALTER DATABASE ` + db + ` SET default_transaction_read_only = on`)
	require.NoError(t, err)
	_, err = admin.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, db)
	require.NoError(t, err)
	require.Eventually(t, func() bool { code, _ := ts.get(t, "/-/ready"); return code == 503 }, 15*time.Second, 50*time.Millisecond,
		"not ready while the store cannot write")
	time.Sleep(time.Second)
	code, _ = ts.get(t, "/-/ready")
	require.Equal(t, 503, code, "and it stays not ready: no flapping back to 200")
	_, err = admin.Exec(`ALTER DATABASE ` + db + ` SET default_transaction_read_only = off`)
	require.NoError(t, err)
	_, err = admin.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, db)
	require.NoError(t, err)
	require.Eventually(t, func() bool { code, _ := ts.get(t, "/-/ready"); return code == 200 }, 20*time.Second, 50*time.Millisecond)
}

// freezer forwards TCP to a backend and can stop forwarding without
// closing anything: a database that hangs.
type freezer struct {
	l      net.Listener
	frozen atomic.Bool
}

func newFreezer(t *testing.T, backend string) *freezer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &freezer{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			go f.pipe(c, b)
			go f.pipe(b, c)
		}
	}()
	t.Cleanup(func() { f.frozen.Store(false); l.Close() })
	return f
}

func (f *freezer) pipe(src, dst net.Conn) {
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for f.frozen.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestHungPostgresBoundedAndNotReady: while PostgreSQL hangs (connections
// open, no answers), intake answers 503 within the commit timeout instead
// of holding requests, and /-/ready turns 503; both recover.
func TestHungPostgresBoundedAndNotReady(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	fz := newFreezer(t, u.Host)
	u.Host = fz.l.Addr().String()
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dsn"), []byte(u.String()), 0o600))
	ts := startServerIn(t, dir, "storage:\n  driver: postgres\n  dsn_file: dsn\n"+pdConfig(pd.EventsURL(), ""), func(o *Options) {
		o.ProbeInterval = 100 * time.Millisecond
		o.CommitTimeout = time.Second
	})
	code, _ := ts.post(t, "/webhook", firing("A", "h1"))
	require.Equal(t, 200, code)

	fz.frozen.Store(true)
	start := time.Now()
	code, _ = ts.post(t, "/webhook", firing("B", "h1"))
	require.Equal(t, 503, code)
	require.Less(t, time.Since(start), 4*time.Second, "answered within the commit timeout, not held")
	// A PagerDuty event reads the store before its commit (its identity;
	// an acknowledge's labels): those reads have the same bound.
	for _, action := range []string{"trigger", "acknowledge"} {
		start = time.Now()
		ev, _ := json.Marshal(map[string]any{"routing_key": testRoutingKey, "event_action": action, "dedup_key": "hung-" + action,
			"payload": map[string]any{"summary": "Disk full", "source": "db-1", "severity": "critical"}})
		if action == "acknowledge" {
			ev, _ = json.Marshal(map[string]any{"routing_key": testRoutingKey, "event_action": action, "dedup_key": "hung-" + action})
		}
		code, _ = ts.post(t, "/v2/enqueue", ev)
		require.Equal(t, 503, code, action)
		require.Less(t, time.Since(start), 4*time.Second, "%s: answered within the commit timeout, not held", action)
	}
	require.Eventually(t, func() bool { code, _ := ts.get(t, "/-/ready"); return code == 503 }, 10*time.Second, 50*time.Millisecond)

	fz.frozen.Store(false)
	require.Eventually(t, func() bool { code, _ := ts.get(t, "/-/ready"); return code == 200 }, 40*time.Second, 100*time.Millisecond)
	require.Eventually(t, func() bool { code, _ := ts.post(t, "/webhook", firing("C", "h1")); return code == 200 }, 40*time.Second, 100*time.Millisecond)
}
