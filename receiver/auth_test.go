package receiver

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// request sends method path with the given headers and returns the status.
func (ts *testServer) request(t *testing.T, method, path string, body []byte, hdr ...string) int {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body) //nolint:errcheck
	resp.Body.Close()
	return resp.StatusCode
}

func newPost(url string, body []byte) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// TestAuthLayers is the README's table "Who may call what": the web layer
// (exporter-toolkit basic auth) on every path, the intake token on intake
// paths only, and state-changing endpoints only behind the web layer.
func TestAuthLayers(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "token"), []byte("intake-tok-1\n"), 0o600))
	hash, err := bcrypt.GenerateFromPassword([]byte("web-pass-1"), bcrypt.MinCost)
	require.NoError(t, err)
	web := filepath.Join(dir, "web.yml")
	require.NoError(t, os.WriteFile(web, []byte("basic_auth_users:\n  ops: "+string(hash)+"\n"), 0o600))
	ts := startServerIn(t, dir, pdConfig(pd.EventsURL(), "intake:\n  bearer_token_file: token\n"), func(o *Options) { o.WebConfigFile = web })

	webUser := []string{"Authorization", "Basic " + basic("ops", "web-pass-1")}
	webAndToken := append([]string{IntakeTokenHeader, "intake-tok-1"}, webUser...)
	cases := []struct {
		name   string
		method string
		path   string
		body   []byte
		hdr    []string
		code   int
	}{
		{"intake: nothing", "POST", "/webhook", firing("A", "h1"), nil, 401},
		{"intake: token without the web user", "POST", "/webhook", firing("A", "h1"), []string{"Authorization", "Bearer intake-tok-1"}, 401},
		{"intake: web user without the token", "POST", "/webhook", firing("A", "h1"), webUser, 401},
		{"intake: web password is not the token", "POST", "/webhook", firing("A", "h1"), []string{"Authorization", "Basic " + basic("ops", "intake-tok-1")}, 401},
		{"intake: web user and token header", "POST", "/webhook", firing("A", "h1"), webAndToken, 200},
		{"intake: web user and wrong token", "POST", "/webhook", firing("A", "h1"), append([]string{IntakeTokenHeader, "nope"}, webUser...), 401},
		{"pagerduty: unknown routing key, web user only", "POST", "/v2/enqueue", []byte(`{"routing_key":"` + testRoutingKey + `","event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info"}}`), webUser, 401},
		{"pagerduty: unknown routing key, web user and token", "POST", "/v2/enqueue", []byte(`{"routing_key":"` + testRoutingKey + `","event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info"}}`), webAndToken, 202},
		{"metrics: nothing", "GET", "/metrics", nil, nil, 401},
		{"metrics: web user", "GET", "/metrics", nil, webUser, 200},
		{"healthy: web user", "GET", "/-/healthy", nil, webUser, 200},
		{"reload: token only", "POST", "/-/reload", nil, []string{IntakeTokenHeader, "intake-tok-1"}, 401},
		{"reload: bearer token only", "POST", "/-/reload", nil, []string{"Authorization", "Bearer intake-tok-1"}, 401},
		{"reload: web user, no token needed", "POST", "/-/reload", nil, webUser, 200},
		{"dead letters: nothing", "GET", "/api/v1/dead-letters", nil, nil, 401},
		{"dead letters: token only", "GET", "/api/v1/dead-letters", nil, []string{"Authorization", "Bearer intake-tok-1"}, 401},
		{"dead letters: web user", "GET", "/api/v1/dead-letters", nil, webUser, 200},
		{"retry all: token only", "POST", "/api/v1/dead-letters/retry", nil, []string{"Authorization", "Bearer intake-tok-1"}, 401},
		{"retry all: web user", "POST", "/api/v1/dead-letters/retry", nil, webUser, 200},
		{"drop: web user, no such id", "DELETE", "/api/v1/dead-letters/42", nil, webUser, 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.code, ts.request(t, c.method, c.path, c.body, c.hdr...))
		})
	}
	logs := ts.logs.String()
	require.NotContains(t, logs, "intake-tok-1")
	require.NotContains(t, logs, "web-pass-1")
	require.Contains(t, logs, "Refused intake request")
}

// TestIntakeTokenCarriers: without a web layer, the token is accepted as a
// bearer token, as the X-Alertfan-Token header, as a basic-auth password
// and (Mackerel) in the path; it protects intake paths only.
func TestIntakeTokenCarriers(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), "intake:\n  bearer_token: intake-tok-2\n"))
	cases := []struct {
		name string
		hdr  []string
		code int
	}{
		{"bearer", []string{"Authorization", "Bearer intake-tok-2"}, 200},
		{"header", []string{IntakeTokenHeader, "intake-tok-2"}, 200},
		{"basic auth password", []string{"Authorization", "Basic " + basic("am", "intake-tok-2")}, 200},
		{"wrong header", []string{IntakeTokenHeader, "intake-tok-3"}, 401},
		{"none", nil, 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.code, ts.request(t, "POST", "/webhook", firing("A", "h1"), c.hdr...))
		})
	}
	// The token is not asked for off the intake paths.
	require.Equal(t, 200, ts.request(t, "GET", "/api/v1/dead-letters", nil))
	require.Equal(t, 200, ts.request(t, "POST", "/-/reload", nil))
}

// TestControlEndpointsOffByDefault: reload over HTTP needs
// --web.enable-lifecycle and queue changes need --web.enable-admin-api, as
// in Prometheus; reading the queue and SIGHUP stay available.
func TestControlEndpointsOffByDefault(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServerIn(t, t.TempDir(), pdConfig(pd.EventsURL(), ""), func(o *Options) {
		o.EnableLifecycle = false
		o.EnableAdminAPI = false
	})
	cases := []struct {
		method, path string
		code         int
	}{
		{"POST", "/-/reload", 403},
		{"PUT", "/-/reload", 403},
		{"POST", "/api/v1/dead-letters/retry", 403},
		{"POST", "/api/v1/dead-letters/1/retry", 403},
		{"DELETE", "/api/v1/dead-letters/1", 403},
		{"GET", "/api/v1/dead-letters", 200},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			require.Equal(t, c.code, ts.request(t, c.method, c.path, nil))
		})
	}
	_, m := ts.get(t, "/metrics")
	require.Contains(t, m, "alertfan_config_last_reload_successful 1")
	require.Contains(t, ts.logs.String(), "--web.enable-lifecycle")
	admin := &AdminClient{URL: ts.URL}
	err := admin.RetryDead(context.Background(), "", io.Discard)
	require.ErrorContains(t, err, "--web.enable-admin-api")
}

// TestReservedLabelsCannotBeSent: routing_key_name is derived from a known
// PagerDuty routing key; a sender that sets it itself does not reach the
// route meant for that key's senders, on any input.
func TestReservedLabelsCannotBeSent(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, `
intake:
  pagerduty:
    routing_keys:
      grafana: `+senderKey+`
route:
  receiver: nowhere
  routes:
    - matchers: ['routing_key_name="grafana"']
      receiver: paged
receivers:
  - name: nowhere
  - name: paged
    pagerduty_configs:
      - routing_key: `+testRoutingKey+`
        url: `+pd.EventsURL()+`
        rate_limit_per_minute: 60000
`)
	spoof := []byte(`{"version":"4","status":"firing","receiver":"x","groupKey":"g","alerts":[{"status":"firing","labels":{"alertname":"Spoof","routing_key_name":"grafana"},"startsAt":"2026-11-28T10:00:00Z"}]}`)
	code, body := ts.post(t, "/webhook", spoof)
	require.Equal(t, 200, code, "%v", body)
	// Nor can a webhook force the receiver by path around the route.
	code, body = ts.post(t, "/webhook/paged", spoof)
	require.Equal(t, 403, code, "%v", body)
	code, body = ts.post(t, "/webhook/nowhere", spoof)
	require.Equal(t, 200, code, "%v", body)
	// A PagerDuty event with an unknown key cannot claim the name either.
	code, body = ts.post(t, "/v2/enqueue", []byte(`{"routing_key":"UNKNOWNKEY0000000000000000000001","event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info"}}`))
	require.Equal(t, 202, code, "%v", body)
	// The real sender does reach it.
	code, body = ts.post(t, "/v2/enqueue", []byte(`{"routing_key":"`+senderKey+`","event_action":"trigger","dedup_key":"real","payload":{"summary":"s","source":"h","severity":"info"}}`))
	require.Equal(t, 202, code, "%v", body)
	require.Eventually(t, func() bool { return len(pd.Events()) == 1 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	require.Len(t, pd.Events(), 1, "only the authenticated sender is paged")
	require.Equal(t, "real", pd.Events()[0].DedupKey)
	_, m := ts.get(t, "/metrics")
	require.Contains(t, m, `alertfan_alerts_dropped_total{receiver="nowhere"} 3`, "two spoofed alerts and the one forced to nowhere")
	require.Contains(t, m, `alertfan_reserved_labels_removed_total{input="alertmanager"} 3`, "stripped from each of the three posts")
}

// TestRefusalsLoggedAtWarn: every refused intake request, on every input,
// is logged at warn with its reason and the sender's address, never with
// the body or a credential; an accepted one at debug.
func TestRefusalsLoggedAtWarn(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), "intake:\n  bearer_token: intake-tok-4\n  max_body_bytes: 4096\n"))
	auth := []string{"Authorization", "Bearer intake-tok-4"}
	cases := []struct {
		name, path string
		body       []byte
		hdr        []string
		code       int
		outcome    string
	}{
		{"alertmanager bad json", "/webhook", []byte(`{"version":"4","alerts":[{"labels":{"body-marker-1":`), auth, 400, "invalid"},
		{"alertmanager no token", "/webhook", firing("A", "h1"), nil, 401, "unauthorized"},
		{"pagerduty invalid", "/v2/enqueue", []byte(`{"routing_key":"body-marker-2","event_action":"trigger"}`), auth, 400, "invalid"},
		{"pagerduty unknown key, no token", "/v2/enqueue", []byte(`{"routing_key":"UNKNOWNKEY0000000000000000000001","event_action":"trigger","payload":{"summary":"body-marker-3","source":"h","severity":"info"}}`), nil, 401, "unauthorized"},
		{"mackerel wrong path token", "/mackerel/wrong-secret-5", []byte(`{}`), nil, 401, "unauthorized"},
		{"mackerel invalid", "/mackerel", []byte(`{"event":"body-marker-4"`), auth, 400, "invalid"},
		{"too large", "/webhook", bytes.Repeat([]byte("x"), 5000), auth, 413, "too_large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := ts.logs.Len()
			require.Equal(t, c.code, ts.request(t, "POST", c.path, c.body, c.hdr...))
			line := ts.logs.String()[before:]
			require.Contains(t, line, `level=WARN msg="Refused intake request"`)
			require.Contains(t, line, "outcome="+c.outcome)
			require.Contains(t, line, "remote=127.0.0.1:")
			require.Contains(t, line, "reason=")
		})
	}
	logs := ts.logs.String()
	for _, secret := range []string{"body-marker", "intake-tok-4", "wrong-secret-5"} {
		require.NotContains(t, logs, secret)
	}
	require.Equal(t, 200, ts.request(t, "POST", "/webhook", firing("A", "h1"), auth...))
	require.Contains(t, ts.logs.String(), `level=DEBUG msg="Accepted intake request" input=alertmanager`)
}
