package ui_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/receiver"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

const (
	routingKeyDB  = "0123456789abcdef0123456789abcdef"
	routingKeyWeb = "fedcba9876543210fedcba9876543210"
	backlogKey    = "backlog-api-key-0123456789"
	webUser       = "ops"
	webPassword   = "status-page-pass"
)

// TestStatusPageInBrowser drives the status page in headless Chromium
// (receiver/ui/e2e/status.mjs, playwright-core) against a real server
// with basic auth and the admin API on: the alert list, a matcher search,
// an alert's timeline, a dead letter retried until delivered, the other
// views, and a phone-sized viewport through a reverse proxy at a sub-path. ALERTFAN_SCREENSHOTS=<dir> keeps the
// screenshots (docs/status-*.png come from it).
func TestStatusPageInBrowser(t *testing.T) {
	chromium := os.Getenv("ALERTFAN_CHROMIUM")
	if chromium == "" {
		chromium = testenv.Binary(t, "chromium", "chromium-browser", "google-chrome")
	}
	node := testenv.Binary(t, "node")
	e2e, err := filepath.Abs("e2e")
	require.NoError(t, err)
	if _, err := os.Stat(filepath.Join(e2e, "node_modules", "playwright-core", "package.json")); err != nil {
		testenv.Missing(t, "receiver/ui/e2e/node_modules is missing (run npm ci there)")
	}

	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	// pdDown answers 503 throughout: its alert stays "retrying".
	pdDown := sinkstest.NewPagerDuty()
	defer pdDown.Close()
	pdDown.SetDown(true)
	bl := sinkstest.NewBacklog(backlogKey)
	defer bl.Close()
	url := startServer(t, pd, pdDown, bl, true)

	// The page is behind the web layer like everything else.
	res, err := http.Get(url)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
	for path, ct := range map[string]string{"": "text/html; charset=utf-8", "static/app.js": "text/javascript; charset=utf-8", "static/app.css": "text/css; charset=utf-8"} {
		req, err := http.NewRequest("GET", url+path, nil)
		require.NoError(t, err)
		req.SetBasicAuth(webUser, webPassword)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, 200, res.StatusCode, path)
		require.Equal(t, ct, res.Header.Get("Content-Type"), path)
	}

	sendTo := func(url, receiverName string, alerts ...sinkstest.WebhookAlert) {
		t.Helper()
		body := sinkstest.Webhook(receiverName, "{}:{alertname=\""+alerts[0].Labels["alertname"]+"\"}", map[string]string{"alertname": alerts[0].Labels["alertname"]}, alerts...)
		req, err := http.NewRequest("POST", url+"webhook", bytes.NewReader(body))
		require.NoError(t, err)
		req.SetBasicAuth(webUser, webPassword)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		require.Equal(t, 200, res.StatusCode, string(b))
	}
	send := func(receiverName string, alerts ...sinkstest.WebhookAlert) {
		t.Helper()
		sendTo(url, receiverName, alerts...)
	}
	alert := func(name, severity, team, instance, status string, ago time.Duration) sinkstest.WebhookAlert {
		a := sinkstest.NamedAlert(name, severity, instance, status, time.Now().Add(-ago).UTC().Truncate(time.Second))
		a.Labels["team"] = team
		a.Annotations = map[string]string{"summary": fmt.Sprintf("%s on %s", name, instance)}
		if status == "resolved" {
			a.EndsAt = time.Now().UTC().Truncate(time.Second)
		}
		return a
	}
	pdEvents := func(name string) int {
		n := 0
		for _, e := range pd.Events() {
			if strings.Contains(string(e.Payload), name) {
				n++
			}
		}
		return n
	}

	// Delivered alerts first, one at a time, so the dead letter below is
	// exactly the one that meets the scripted 400.
	send("team-db", alert("DiskFull", "critical", "db", "db-1:9100", "firing", 40*time.Minute))
	require.Eventually(t, func() bool { return pdEvents("DiskFull") == 1 && len(bl.Issues()) == 1 }, 20*time.Second, 20*time.Millisecond)
	send("team-web", alert("HighLatency", "warning", "web", "web-1:8080", "firing", 12*time.Minute))
	require.Eventually(t, func() bool { return pdEvents("HighLatency") == 1 }, 20*time.Second, 20*time.Millisecond)
	send("team-web", alert("CPUThrottling", "info", "web", "web-2:8080", "resolved", 3*time.Hour))
	send("edge", alert("CertificateExpiry", "warning", "edge", "lb-1:443", "firing", 20*time.Minute))
	// Two dead letters: Backlog refuses one issue (PagerDuty gets it), and
	// PagerDuty refuses the event the browser will retry. The Backlog sink
	// takes a first 400 for stale names and tries again; the second is
	// permanent.
	refused := sinkstest.BacklogResponse{Status: 400, Body: `{"errors":[{"message":"No such issue type.","code":7,"moreInfo":""}]}`}
	bl.ScriptWrites(refused, refused)
	send("team-db", alert("ReplicationLag", "warning", "db", "db-2:9187", "firing", 8*time.Minute))
	require.Eventually(t, func() bool { return len(deadLetters(t, url)) == 1 && pdEvents("ReplicationLag") == 1 }, 20*time.Second, 20*time.Millisecond)
	pd.Script(sinkstest.PDResponse{Status: 400, Body: `{"status":"invalid event","message":"Event object is invalid","errors":["Length of 'summary' is incorrect"]}`})
	send("oncall", alert("PaymentErrors", "critical", "payments", "pay-1:8080", "firing", 5*time.Minute))
	require.Eventually(t, func() bool { return len(deadLetters(t, url)) == 2 }, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, 0, pdEvents("PaymentErrors"))
	require.Eventually(t, func() bool { return pdDown.Attempts() > 0 }, 20*time.Second, 20*time.Millisecond)

	// A second server without --web.enable-admin-api, with a dead letter
	// of its own: its Retry button must show the server's 403 message.
	readonly := startServer(t, pd, pdDown, bl, false)
	pd.Script(sinkstest.PDResponse{Status: 400, Body: `{"status":"invalid event","message":"Event object is invalid","errors":["Length of 'summary' is incorrect"]}`})
	sendTo(readonly, "oncall", alert("OrdersStuck", "critical", "payments", "pay-2:8080", "firing", time.Minute))
	require.Eventually(t, func() bool { return len(deadLetters(t, readonly)) == 1 }, 20*time.Second, 20*time.Millisecond)

	shots := os.Getenv("ALERTFAN_SCREENSHOTS")
	if shots != "" {
		shots, err = filepath.Abs(shots)
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(shots, 0o755))
	}
	// A reverse proxy that serves alertfan under /alertfan/ (as a path
	// prefix is stripped by nginx's proxy_pass with a URI): the phone step
	// loads the page through it, which works only with relative URLs.
	target, err := neturl.Parse(url)
	require.NoError(t, err)
	proxy := httptest.NewServer(http.StripPrefix("/alertfan", httputil.NewSingleHostReverseProxy(target)))
	defer proxy.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "status.mjs")
	cmd.Dir = e2e
	cmd.Env = append(os.Environ(),
		"ALERTFAN_URL="+url,
		"ALERTFAN_URL_READONLY="+readonly,
		"ALERTFAN_URL_PROXIED="+proxy.URL+"/alertfan/",
		"ALERTFAN_USER="+webUser,
		"ALERTFAN_PASSWORD="+webPassword,
		"CHROMIUM="+chromium,
		"USER_DATA_DIR="+t.TempDir(),
		"ALERTFAN_SCREENSHOTS="+shots,
		`E2E_SEARCH=team="db", severity="critical"`,
		"E2E_SEARCH_HIT=DiskFull",
		"E2E_DEAD=PaymentErrors",
		"E2E_ROUTING_KEY="+routingKeyDB,
	)
	// The browser and its helpers are the script's children; a timeout
	// kills the script's whole process group, nothing else.
	setProcessGroup(cmd)
	out, err := cmd.CombinedOutput()
	t.Logf("status.mjs:\n%s", out)
	require.NoError(t, err, "the browser test failed")
	require.Contains(t, string(out), "step: ok")

	// The retry in the browser reached PagerDuty.
	require.Eventually(t, func() bool { return pdEvents("PaymentErrors") == 1 }, 5*time.Second, 20*time.Millisecond)
	left := deadLetters(t, url)
	require.Len(t, left, 1)
	require.Equal(t, "ReplicationLag", left[0]["alertname"])
}

// startServer runs alertfan in-process on a loopback port with basic auth
// (exporter-toolkit web config) and the admin API on, and returns its URL
// with a trailing slash.
func startServer(t *testing.T, pd, pdDown *sinkstest.PagerDuty, bl *sinkstest.Backlog, adminAPI bool) string {
	t.Helper()
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte(webPassword), bcrypt.MinCost)
	require.NoError(t, err)
	web := filepath.Join(dir, "web.yml")
	require.NoError(t, os.WriteFile(web, []byte("basic_auth_users:\n  "+webUser+": "+string(hash)+"\n"), 0o600))
	cfg := fmt.Sprintf(`
storage:
  driver: sqlite
  path: %s
delivery:
  min_backoff: 1s
  max_backoff: 20s
  poll_interval: 10ms
  job_timeout: 15s
  rescue_after: 20s
route:
  receiver: oncall
  routes:
    - matchers: ['team="db"']
      receiver: team-db
    - matchers: ['team=~"web|frontend"']
      receiver: team-web
    - matchers: ['team="edge"']
      receiver: edge
receivers:
  - name: oncall
    pagerduty_configs:
      - routing_key: %[2]s
        url: %[3]s
        rate_limit_per_minute: 600
  - name: team-db
    pagerduty_configs:
      - routing_key: %[2]s
        url: %[3]s
        rate_limit_per_minute: 600
    backlog_configs:
      - api_url: %[4]s
        api_key: %[5]s
        project: OPS
        issue_type: Bug
        rate_limit_per_minute: 600
  - name: team-web
    pagerduty_configs:
      - routing_key: %[6]s
        url: %[3]s
        rate_limit_per_minute: 600
  - name: edge
    pagerduty_configs:
      - routing_key: %[6]s
        url: %[7]s
        rate_limit_per_minute: 600
`, filepath.Join(dir, "alertfan.db"), routingKeyDB, pd.EventsURL(), bl.URL, backlogKey, routingKeyWeb, pdDown.EventsURL())
	file := filepath.Join(dir, "alertfan.yml")
	require.NoError(t, os.WriteFile(file, []byte(cfg), 0o600))

	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- receiver.Run(ctx, receiver.Options{
			ConfigFile:      file,
			ListenAddresses: []string{"127.0.0.1:0"},
			WebConfigFile:   web,
			EnableAdminAPI:  adminAPI,
			OnListen:        func(a net.Addr) { addr <- a },
			ShutdownTimeout: 5 * time.Second,
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
		}
	})
	select {
	case a := <-addr:
		return "http://" + a.String() + "/"
	case err := <-done:
		t.Fatalf("server did not start: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("server did not start in time")
	}
	return ""
}

// deadLetters lists the server's dead letters (as raw JSON objects).
func deadLetters(t *testing.T, url string) []map[string]any {
	t.Helper()
	var body struct {
		Data []map[string]any `json:"data"`
	}
	getJSON(t, url+"api/v1/dead-letters", &body)
	return body.Data
}
