package pagerduty

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/template"
	"github.com/stretchr/testify/require"
	yaml "go.yaml.in/yaml/v2"

	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

var update = flag.Bool("update", false, "rewrite golden files")

const routingKey = "0123456789abcdef0123456789abcdef"

func newNotifier(t *testing.T, extra string, url string) *Notifier {
	t.Helper()
	var c Config
	y := "routing_key: " + routingKey + "\n" + extra
	if url != "" {
		y += "\nurl: " + url + "\n"
	}
	require.NoError(t, yaml.UnmarshalStrict([]byte(y), &c))
	tmpl, err := template.FromGlobs(nil)
	require.NoError(t, err)
	n, err := New(&c, tmpl, sinks.NewLimiters(), nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	return n
}

func groupNotification() *sinks.Notification {
	start := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	mk := func(instance, status string) sinks.Alert {
		a := sinks.Alert{
			Identity: "am:fp-" + instance, Status: status, Fingerprint: "fp-" + instance,
			Labels:       map[string]string{"alertname": "HighLatency", "severity": "critical", "instance": instance, "job": "api"},
			Annotations:  map[string]string{"summary": "p99 latency above 1s", "runbook_url": "https://runbooks.example/latency"},
			StartsAt:     start,
			GeneratorURL: "http://prometheus.example:9090/graph?g0.expr=latency",
		}
		if status == sinks.StatusResolved {
			a.EndsAt = start.Add(10 * time.Minute)
		}
		return a
	}
	return &sinks.Notification{
		Key: `{}/{severity="critical"}:{alertname="HighLatency"}`,
		Source: sinks.Source{
			Input: "alertmanager", Receiver: "oncall", GroupKey: `{}/{severity="critical"}:{alertname="HighLatency"}`,
			ExternalURL: "http://alertmanager.example:9093", GroupLabels: map[string]string{"alertname": "HighLatency"},
		},
		Alerts:     []sinks.Alert{mk("api-1:8080", sinks.StatusFiring), mk("api-2:8080", sinks.StatusResolved)},
		AcceptedAt: start,
	}
}

func golden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	require.NoError(t, err)
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, append(got, '\n'), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create %s", path)
	require.JSONEq(t, string(want), string(got))
}

func TestGroupModeGolden(t *testing.T) {
	n := newNotifier(t, "mode: group", "")
	notif := groupNotification()
	ev, err := n.Event(notif)
	require.NoError(t, err)
	// Alertmanager's dedup key is the hex sha256 of the group key.
	sum := sha256.Sum256([]byte(notif.Source.GroupKey))
	require.Equal(t, hex.EncodeToString(sum[:]), ev.DedupKey)
	require.Equal(t, ActionTrigger, ev.Action)
	require.Equal(t, "[FIRING:1] HighLatency (api critical)", ev.Payload.Summary)
	golden(t, "group_trigger.json", ev)

	for i := range notif.Alerts {
		notif.Alerts[i].Status = sinks.StatusResolved
	}
	ev, err = n.Event(notif)
	require.NoError(t, err)
	require.Equal(t, ActionResolve, ev.Action)
	golden(t, "group_resolve.json", ev)
}

func TestAlertModeGolden(t *testing.T) {
	n := newNotifier(t, "severity: '{{ or .CommonLabels.severity \"error\" }}'\ncomponent: '{{ .CommonLabels.job }}'\nlinks:\n  - href: '{{ .CommonAnnotations.runbook_url }}'\n    text: Runbook\n", "")
	full := groupNotification()
	notif := &sinks.Notification{Key: full.Alerts[0].Identity, Source: full.Source, Alerts: full.Alerts[:1], AcceptedAt: full.AcceptedAt}
	ev, err := n.Event(notif)
	require.NoError(t, err)
	require.Equal(t, "critical", ev.Payload.Severity)
	require.Equal(t, "[FIRING:1] HighLatency (api-1:8080 api critical)", ev.Payload.Summary)
	golden(t, "alert_trigger.json", ev)

	// The same alert's resolve goes to the same incident.
	notif.Alerts = []sinks.Alert{full.Alerts[1]}
	notif.Alerts[0].Identity = full.Alerts[0].Identity
	ev2, err := n.Event(notif)
	require.NoError(t, err)
	require.Equal(t, ActionResolve, ev2.Action)
	require.Equal(t, ev.DedupKey, ev2.DedupKey)
}

func TestDedupKeys(t *testing.T) {
	one := func(key string, labels map[string]string) *sinks.Notification {
		return &sinks.Notification{Key: key, Alerts: []sinks.Alert{{Identity: key, Status: sinks.StatusFiring, Labels: labels}}}
	}
	cases := []struct {
		name, conf string
		notif      *sinks.Notification
		want       string
	}{
		// A PagerDuty sender's own dedup key is kept, so its acknowledge and
		// resolve reach the same incident.
		{"alert mode keeps a sender's key", "", &sinks.Notification{Key: "pd:sender-key"}, "sender-key"},
		{"alert mode hashes other identities", "", &sinks.Notification{Key: "am:" + strings.Repeat("x", 400)}, sha256hex("am:" + strings.Repeat("x", 400))},
		// Alertmanager's notify.Key.Hash of the group key "{}:{}".
		{"group mode is Alertmanager's", "mode: group", &sinks.Notification{Key: "{}:{}"}, "cc9772a1ec901d26ef71dae861793e4d08979fa5030a3f0a5f3ba549f1f2d0b6"},
		{"template", `dedup_key: '{{ .CommonLabels.alertname }}/{{ .CommonLabels.instance }}'`, one("am:1", map[string]string{"alertname": "Disk", "instance": "db1"}), "Disk/db1"},
		{"template in group mode", "mode: group\ndedup_key: '{{ .GroupLabels.alertname }}'", &sinks.Notification{Key: "{}:{}", Source: sinks.Source{GroupLabels: map[string]string{"alertname": "Disk"}}}, "Disk"},
		{"empty render falls back to the default", `dedup_key: '{{ .CommonLabels.missing }}'`, one("am:1", map[string]string{"alertname": "Disk"}), sha256hex("am:1")},
		{"long render is hashed", `dedup_key: '{{ .CommonLabels.long }}'`, one("am:1", map[string]string{"long": strings.Repeat("k", 300)}), sha256hex(strings.Repeat("k", 300))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := newNotifier(t, c.conf, "").DedupKey(c.notif)
			require.NoError(t, err)
			require.Equal(t, c.want, got)
			require.LessOrEqual(t, len(got), 255)
		})
	}
}

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestSummaryTruncatedAsAlertmanager(t *testing.T) {
	n := newNotifier(t, "description: '"+strings.Repeat("é", 1030)+"'", "")
	ev, err := n.Event(groupNotification())
	require.NoError(t, err)
	r := []rune(ev.Payload.Summary)
	require.Len(t, r, 1024)
	require.Equal(t, '…', r[1023])
}

func TestOversizeDetailsDropped(t *testing.T) {
	n := newNotifier(t, "details:\n  big: '"+strings.Repeat("x", 600000)+"'", "")
	ev, err := n.Event(groupNotification())
	require.NoError(t, err)
	require.Equal(t, map[string]any{"error": "Custom details have been removed because the original event exceeds the maximum size of 512KB"}, ev.Payload.Details)
}

func TestSendResolvedOff(t *testing.T) {
	n := newNotifier(t, "send_resolved: false", "")
	notif := groupNotification()
	notif.Alerts = notif.Alerts[1:]
	ev, err := n.Event(notif)
	require.NoError(t, err)
	require.Nil(t, ev)
}

func TestBadTemplateIsConfigError(t *testing.T) {
	var c Config
	require.NoError(t, yaml.UnmarshalStrict([]byte("routing_key: "+routingKey+"\nseverity: '{{ .Nope.Nope }'\n"), &c))
	tmpl, _ := template.FromGlobs(nil)
	_, err := New(&c, tmpl, sinks.NewLimiters(), nil, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "severity: template")
}

func TestDeliverClassifiesAnswers(t *testing.T) {
	fake := sinkstest.NewPagerDuty()
	defer fake.Close()
	n := newNotifier(t, "rate_limit_per_minute: 60000", fake.EventsURL())
	ctx := context.Background()
	notif := groupNotification()
	notif.Alerts = notif.Alerts[:1]

	require.NoError(t, n.Deliver(ctx, notif))
	require.Len(t, fake.Events(), 1)
	require.Equal(t, routingKey, fake.Events()[0].RoutingKey)

	cases := []struct {
		name      string
		resp      sinkstest.PDResponse
		retryable bool
		reason    string
		after     time.Duration
	}{
		{"429 with Retry-After", sinkstest.PDResponse{Status: 429, RetryAfter: "7"}, true, sinks.ReasonRateLimited, 7 * time.Second},
		{"500", sinkstest.PDResponse{Status: 500}, true, sinks.ReasonServerError, 0},
		{"503", sinkstest.PDResponse{Status: 503}, true, sinks.ReasonServerError, 0},
		{"400", sinkstest.PDResponse{Status: 400}, false, sinks.ReasonClientError, 0},
		{"403", sinkstest.PDResponse{Status: 403, Body: `{"status":"forbidden"}`}, false, sinks.ReasonClientError, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake.Script(c.resp)
			err := n.Deliver(ctx, notif)
			require.Error(t, err)
			e := sinks.AsError(err)
			require.Equal(t, c.retryable, e.Retryable)
			require.Equal(t, c.reason, e.Reason)
			require.Equal(t, c.after, e.RetryAfter)
			require.Equal(t, c.resp.Status, e.StatusCode)
			require.NotContains(t, err.Error(), routingKey)
		})
	}
	fake.Close()
	err := n.Deliver(ctx, notif)
	require.Error(t, err)
	require.Equal(t, sinks.ReasonNetwork, sinks.AsError(err).Reason)
	require.True(t, sinks.AsError(err).Retryable)
}

func TestRateLimitSharedPerKey(t *testing.T) {
	lims := sinks.NewLimiters()
	a := lims.Get("pagerduty", routingKey, 120)
	b := lims.Get("pagerduty", routingKey, 60)
	require.Same(t, a, b)
	require.Equal(t, 60, a.PerMinute(), "the lowest configured rate wins")
	_ = http.StatusOK
}

// An answer that echoes the request (a proxy's error page, a gateway, a
// PagerDuty-compatible receiver) never puts the routing key into the
// error, which goes to logs, the history and dead letters.
func TestErrorAnswerEchoingTheRoutingKeyIsScrubbed(t *testing.T) {
	cases := []struct {
		name   string
		status int
		answer func(body []byte) string
	}{
		{"PagerDuty-shaped 400", 400, func(b []byte) string {
			m, _ := json.Marshal(map[string]any{"status": "invalid event", "message": "Event object is invalid", "errors": []string{"echo " + string(b)}})
			return string(m)
		}},
		{"HTML 502 of a proxy", 502, func(b []byte) string { return "<html><body>bad gateway for " + string(b) + "</body></html>" }},
		{"the key URL-encoded in a 401", 401, func([]byte) string { return "denied: /v2/enqueue?routing_key=" + routingKey }},
		{"the key cut by the answer's limit", 500, func([]byte) string { return strings.Repeat("x", 4096-10) + routingKey }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				w.WriteHeader(c.status)
				io.WriteString(w, c.answer(b)) //nolint:errcheck
			}))
			defer srv.Close()
			n := newNotifier(t, "rate_limit_per_minute: 60000", srv.URL+"/v2/enqueue")
			notif := groupNotification()
			err := n.Deliver(context.Background(), notif)
			require.Error(t, err)
			require.NotContains(t, err.Error(), routingKey[:8])
			require.Contains(t, err.Error(), "<secret>")
		})
	}
}

// A url written with user:password@ authenticates with them (basic auth),
// as http_config's basic_auth would.
func TestURLUserinfoAuthenticates(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, _ := r.BasicAuth()
		got <- u + ":" + p
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"status":"success","message":"Event processed","dedup_key":"x"}`) //nolint:errcheck
	}))
	defer srv.Close()
	n := newNotifier(t, "rate_limit_per_minute: 60000", strings.Replace(srv.URL, "http://", "http://relay:s3cret@", 1)+"/v2/enqueue")
	require.NoError(t, n.Deliver(context.Background(), groupNotification()))
	require.Equal(t, "relay:s3cret", <-got)
}

// TestCallGivesUpAfterTimeout: a PagerDuty that takes the request and
// never answers is given up on after the config's timeout, as a retryable
// timeout, whatever the caller's context allows.
func TestCallGivesUpAfterTimeout(t *testing.T) {
	srv := sinkstest.NewUnanswering()
	defer srv.Close()
	n := newNotifier(t, "timeout: 200ms", srv.URL+"/v2/enqueue")
	notif := groupNotification()
	notif.Alerts = notif.Alerts[:1]
	start := time.Now()
	err := n.Deliver(context.Background(), notif)
	require.Error(t, err)
	require.Equal(t, sinks.ReasonTimeout, sinks.AsError(err).Reason)
	require.True(t, sinks.AsError(err).Retryable)
	require.Less(t, time.Since(start), 5*time.Second)
}
