package receiver

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

const testRoutingKey = "0123456789abcdef0123456789abcdef"

// testServer is a real alertfan server on a loopback port.
type testServer struct {
	URL    string
	dir    string
	cfg    string
	cancel context.CancelFunc
	done   chan error
	logs   *testenv.LogBuffer

	stopOnce sync.Once
}

// fastDelivery keeps retries quick so tests do not wait on back-off.
const fastDelivery = `
delivery:
  min_backoff: 50ms
  max_backoff: 200ms
  poll_interval: 10ms
  job_timeout: 15s
  rescue_after: 20s
`

func startServer(t *testing.T, cfg string) *testServer {
	t.Helper()
	return startServerIn(t, t.TempDir(), cfg)
}

// startServerIn starts a server with the lifecycle and admin APIs on (the
// tests use them); opts may change the options.
func startServerIn(t *testing.T, dir, cfg string, opts ...func(*Options)) *testServer {
	t.Helper()
	if !strings.Contains(cfg, "storage:") {
		cfg = "storage:\n  driver: sqlite\n  path: " + filepath.Join(dir, "alertfan.db") + "\n" + cfg
	}
	if !strings.Contains(cfg, "delivery:") {
		cfg += fastDelivery
	}
	file := filepath.Join(dir, "config.yml")
	require.NoError(t, os.WriteFile(file, []byte(cfg), 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	ts := &testServer{dir: dir, cfg: file, cancel: cancel, done: make(chan error, 1), logs: &testenv.LogBuffer{}}
	logger := slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o := Options{
		ConfigFile:      file,
		ListenAddresses: []string{"127.0.0.1:0"},
		Logger:          logger,
		OnListen:        func(a net.Addr) { addr <- a },
		ShutdownTimeout: 5 * time.Second,
		EnableLifecycle: true,
		EnableAdminAPI:  true,
	}
	for _, f := range opts {
		f(&o)
	}
	go func() { ts.done <- Run(ctx, o) }()
	select {
	case a := <-addr:
		ts.URL = "http://" + a.String()
	case err := <-ts.done:
		t.Fatalf("server did not start: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("server did not start in time")
	}
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) stop() {
	ts.stopOnce.Do(func() {
		ts.cancel()
		select {
		case <-ts.done:
		case <-time.After(15 * time.Second):
		}
	})
}

func (ts *testServer) post(t *testing.T, path string, body []byte, hdr ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.URL+path, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

func (ts *testServer) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(ts.URL + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func pdConfig(url, extra string) string {
	return fmt.Sprintf(`
route:
  receiver: oncall
receivers:
  - name: oncall
    pagerduty_configs:
      - routing_key: %s
        url: %s
        rate_limit_per_minute: 60000
%s`, testRoutingKey, url, extra)
}

// pdConfigAt is pdConfig with the target limited to perMinute.
func pdConfigAt(url string, perMinute int) string {
	return strings.Replace(pdConfig(url, ""), "rate_limit_per_minute: 60000", fmt.Sprintf("rate_limit_per_minute: %d", perMinute), 1)
}

func firing(name, instance string) []byte {
	return sinkstest.Webhook("oncall", `{}:{alertname="`+name+`"}`, map[string]string{"alertname": name},
		sinkstest.NamedAlert(name, "critical", instance, "firing", time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)))
}

func resolved(name, instance string) []byte {
	return sinkstest.Webhook("oncall", `{}:{alertname="`+name+`"}`, map[string]string{"alertname": name},
		sinkstest.NamedAlert(name, "critical", instance, "resolved", time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)))
}

func TestIntakeStatusCodes(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	dir := t.TempDir()
	// Two tokens, one per line: a rotation under way.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "token"), []byte("intake-token-123\n  next-token-456 \n\n"), 0o600))
	ts := startServerIn(t, dir, pdConfig(pd.EventsURL(), "")+`
intake:
  bearer_token_file: token
  max_body_bytes: 2048
`)
	auth := []string{"Authorization", "Bearer intake-token-123"}
	cases := []struct {
		name  string
		path  string
		body  []byte
		hdr   []string
		code  int
		field string
	}{
		{"ok", "/webhook", firing("A", "h1"), auth, 200, ""},
		{"forced receiver", "/webhook/oncall", firing("A", "h1"), auth, 200, ""},
		{"unknown forced receiver", "/webhook/nope", firing("A", "h1"), auth, 404, ""},
		{"no token", "/webhook", firing("A", "h1"), nil, 401, ""},
		{"wrong token", "/webhook", firing("A", "h1"), []string{"Authorization", "Bearer wrong"}, 401, ""},
		{"the other token of the file", "/webhook", firing("A", "h1"), []string{"Authorization", "Bearer next-token-456"}, 200, ""},
		{"the file's whole text", "/webhook", firing("A", "h1"), []string{"Authorization", "Bearer intake-token-123 next-token-456"}, 401, ""},
		{"basic auth password is the token", "/webhook", firing("A", "h1"), []string{"Authorization", "Basic " + basic("am", "intake-token-123")}, 200, ""},
		{"bad json", "/webhook", []byte(`{"version":`), auth, 400, ""},
		{"wrong type", "/webhook", []byte(`{"version":4,"alerts":[]}`), auth, 400, "version"},
		{"wrong version", "/webhook", []byte(`{"version":"3","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"2026-01-01T00:00:00Z"}]}`), auth, 400, "version"},
		{"no labels", "/webhook", []byte(`{"version":"4","alerts":[{"status":"firing","labels":{},"startsAt":"2026-01-01T00:00:00Z"}]}`), auth, 400, "alerts[0].labels"},
		{"bad label name", "/webhook", []byte(`{"version":"4","alerts":[{"status":"firing","labels":{"":"x"},"startsAt":"2026-01-01T00:00:00Z"}]}`), auth, 400, "alerts[0].labels"},
		{"bad status", "/webhook", []byte(`{"version":"4","alerts":[{"status":"burning","labels":{"a":"b"},"startsAt":"2026-01-01T00:00:00Z"}]}`), auth, 400, "alerts[0].status"},
		{"too large", "/webhook", bytes.Repeat([]byte("x"), 4096), auth, 413, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := ts.post(t, c.path, c.body, c.hdr...)
			require.Equal(t, c.code, code, "body: %v", body)
			if c.code >= 400 {
				require.Equal(t, "error", body["status"])
				require.NotEmpty(t, body["error"])
			}
			if c.field != "" {
				errs := body["errors"].([]any)
				require.Equal(t, c.field, errs[0].(map[string]any)["field"], "body: %v", body)
			}
		})
	}
	require.NotContains(t, ts.logs.String(), "intake-token-123", "the token must never be logged")
	require.NotContains(t, ts.logs.String(), "next-token-456", "the token must never be logged")
	code, metrics := ts.get(t, "/metrics")
	require.Equal(t, 200, code)
	require.Contains(t, metrics, `alertfan_notifications_received_total{input="alertmanager",outcome="unauthorized"} 3`)
	require.Contains(t, metrics, `alertfan_notifications_received_total{input="alertmanager",outcome="too_large"} 1`)
	require.NotContains(t, metrics, "intake-token-123")
	require.NotContains(t, metrics, testRoutingKey)
}

func basic(u, p string) string {
	req, _ := http.NewRequest("GET", "http://x", nil)
	req.SetBasicAuth(u, p)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

func TestStoreDownAnswers503(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dsn"), []byte(dsn), 0o600))
	ts := startServerIn(t, dir, "storage:\n  driver: postgres\n  dsn_file: dsn\n"+pdConfig(pd.EventsURL(), ""))
	code, _ := ts.post(t, "/webhook", firing("A", "h1"))
	require.Equal(t, 200, code)

	// Take the database away under the running server: commits fail and
	// the sender is told to retry (503), never 200.
	admin, err := sql.Open("pgx", os.Getenv("ALERTFAN_TEST_POSTGRES_DSN"))
	require.NoError(t, err)
	defer admin.Close()
	db := dbName(t, dsn)
	_, err = admin.Exec(`ALTER DATABASE ` + db + ` ALLOW_CONNECTIONS false`)
	require.NoError(t, err)
	_, err = admin.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, db)
	require.NoError(t, err)
	code, body := ts.post(t, "/webhook", firing("B", "h1"))
	require.Equal(t, 503, code, "body %v", body)
	require.Equal(t, "error", body["status"])
	// A PagerDuty Events API sender gets PagerDuty's error shape.
	code, body = ts.post(t, "/v2/enqueue", []byte(`{"routing_key":"`+testRoutingKey+`","event_action":"trigger","dedup_key":"d","payload":{"summary":"s","source":"h","severity":"info"}}`))
	require.Equal(t, 503, code, "body %v", body)
	require.Equal(t, "unavailable", body["status"], "%v", body)
	require.Contains(t, body["message"], "retry later")
	require.NotContains(t, ts.logs.String(), dsn, "the DSN must never be logged")

	// The store comes back: intake takes work again, and what was accepted
	// before is delivered.
	_, err = admin.Exec(`ALTER DATABASE ` + db + ` ALLOW_CONNECTIONS true`)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		code, _ := ts.post(t, "/webhook", firing("C", "h1"))
		return code == 200
	}, 20*time.Second, 200*time.Millisecond)
	require.Eventually(t, func() bool { return len(pd.Events()) >= 2 }, 20*time.Second, 20*time.Millisecond)
}

func dbName(t *testing.T, dsn string) string {
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	return strings.TrimPrefix(u.Path, "/")
}

func TestHealthReadyMetricsReload(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), ""))
	code, body := ts.get(t, "/-/healthy")
	require.Equal(t, 200, code, body)
	code, body = ts.get(t, "/-/ready")
	require.Equal(t, 200, code, body)
	_, m := ts.get(t, "/metrics")
	for _, name := range []string{"alertfan_build_info", "alertfan_config_last_reload_successful 1", "go_goroutines", "process_resident_memory_bytes", "alertfan_queue_jobs", "alertfan_store_up 1"} {
		require.Contains(t, m, name)
	}

	// A bad file is refused and the old config stays.
	good, err := os.ReadFile(ts.cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(ts.cfg, []byte("route:\n  receiver: nope\nreceivers:\n  - name: r\n"), 0o600))
	code, body = ts.postRaw(t, "/-/reload")
	require.Equal(t, 500, code)
	require.Contains(t, body, "does not exist")
	_, m = ts.get(t, "/metrics")
	require.Contains(t, m, "alertfan_config_last_reload_successful 0")
	code, _ = ts.post(t, "/webhook", firing("A", "h1"))
	require.Equal(t, 200, code, "the old config keeps serving")
	require.Eventually(t, func() bool { return len(pd.Events()) == 1 }, 10*time.Second, 10*time.Millisecond)

	// A good file is taken.
	require.NoError(t, os.WriteFile(ts.cfg, bytes.Replace(good, []byte("name: oncall"), []byte("name: oncall\n  - name: extra"), 1), 0o600))
	code, body = ts.postRaw(t, "/-/reload")
	require.Equal(t, 200, code, body)
	_, m = ts.get(t, "/metrics")
	require.Contains(t, m, "alertfan_config_last_reload_successful 1")
	code, _ = ts.post(t, "/webhook/extra", firing("A", "h1"))
	require.Equal(t, 200, code)
}

func (ts *testServer) postRaw(t *testing.T, path string) (int, string) {
	resp, err := http.Post(ts.URL+path, "text/plain", nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRequireAllEnvironment(t *testing.T) {
	// Documents the contract: with ALERTFAN_REQUIRE_ALL=1 a missing part fails.
	if testenv.RequireAll() {
		require.NotEmpty(t, os.Getenv("ALERTFAN_TEST_POSTGRES_DSN"), "CI must provide PostgreSQL")
	}
}
