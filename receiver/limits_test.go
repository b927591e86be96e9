package receiver

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/receiver/config"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

func amBody(alerts ...string) []byte {
	return []byte(`{"version":"4","status":"firing","receiver":"x","groupKey":"g","alerts":[` + strings.Join(alerts, ",") + `]}`)
}

func limitsAlert(labels, annotations string) string {
	return `{"status":"firing","labels":{` + labels + `},"annotations":{` + annotations + `},"startsAt":"2026-11-28T10:00:00Z"}`
}

// TestIntakeLimits: each limit's breach is a 400 that names the field and
// the limit, on every input, and nothing of the request is stored.
func TestIntakeLimits(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), `intake:
  max_alerts_per_notification: 2
  max_labels_per_alert: 4
  max_name_length: 16
  max_label_value_length: 32
  max_annotation_value_length: 64
  mackerel:
    route_other_events: false
`))
	long := func(n int) string { return strings.Repeat("x", n) }
	ok := limitsAlert(`"alertname":"A"`, "")
	cases := []struct {
		name, path string
		body       []byte
		field      string
		limit      string
	}{
		{"labels per alert", "/webhook", amBody(ok, limitsAlert(`"alertname":"A","a":"1","b":"2","c":"3","d":"4"`, "")), "alerts[1].labels", "intake.max_labels_per_alert (4)"},
		{"label name length", "/webhook", amBody(limitsAlert(`"alertname":"A","`+long(17)+`":"1"`, "")), "alerts[0].labels", "intake.max_name_length (16)"},
		{"annotation name length", "/webhook", amBody(limitsAlert(`"alertname":"A"`, `"`+long(17)+`":"1"`)), "alerts[0].annotations", "intake.max_name_length (16)"},
		{"label value length", "/webhook", amBody(limitsAlert(`"alertname":"A","instance":"`+long(33)+`"`, "")), "alerts[0].labels.instance", "intake.max_label_value_length (32)"},
		{"invalid UTF-8 value", "/webhook", amBody(limitsAlert(`"alertname":"A","instance":"db-1`+"\xff"+`"`, "")), "alerts[0].labels.instance", "UTF-8"},
		{"invalid UTF-8 name", "/webhook", amBody(ok, limitsAlert(`"alertname":"A","in`+"\xfe"+`st":"x"`, "")), `alerts[1].labels."in` + "\ufffd" + `st" (name)`, "UTF-8"},
		// PagerDuty endpoints: PagerDuty's own event size (pdLimits).
		{"pagerduty annotation value", "/v2/enqueue", []byte(`{"routing_key":"` + testRoutingKey + `","event_action":"trigger","payload":{"summary":"` + long(512001) + `","source":"h","severity":"info"}}`), "Event object is too large", "PagerDuty's limit is 512 KB"},
		{"pagerduty invalid UTF-8", "/v2/enqueue", []byte(`{"routing_key":"` + testRoutingKey + `","event_action":"trigger","payload":{"summary":"s` + "\xff" + `","source":"h","severity":"info"}}`), "payload.summary", "UTF-8"},
		{"mackerel invalid UTF-8", "/mackerel", []byte(`{"event":"alert","host":{"name":"h` + "\xff" + `"}}`), "host.name", "UTF-8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := ts.post(t, c.path, c.body)
			require.Equal(t, 400, code, "%v", body)
			require.Contains(t, fmt.Sprint(body), c.field, "%v", body)
			require.Contains(t, fmt.Sprint(body), c.limit, "%v", body)
			if errs, ok := body["errors"].([]any); ok && c.path != "/v2/enqueue" {
				require.Equal(t, c.field, errs[0].(map[string]any)["field"], "%v", body)
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	require.Empty(t, pd.Events(), "nothing of a refused request is stored or sent")
	_, m := ts.get(t, "/metrics")
	require.Contains(t, m, `alertfan_notifications_received_total{input="alertmanager",outcome="over_limit"} 4`)
	require.Contains(t, m, `alertfan_notifications_received_total{input="alertmanager",outcome="accepted"} 0`)
	code, _ := ts.post(t, "/webhook", amBody(ok, ok))
	require.Equal(t, 200, code, "within the limits is accepted")
}

// An Alertmanager message with an annotation over
// max_annotation_value_length is taken with it cut to the limit, not
// refused: Alertmanager never retries a 400, and the other alerts of its
// group (here a critical one) would never page.
func TestIntakeLongAnnotationIsCutNotRefused(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), "intake:\n  max_annotation_value_length: 64\n"))
	long := strings.Repeat("é", 40) // 80 bytes
	code, body := ts.post(t, "/webhook", amBody(
		limitsAlert(`"alertname":"Noisy","instance":"a"`, `"description":"`+long+`","summary":"short"`),
		limitsAlert(`"alertname":"DatabaseDown","severity":"critical","instance":"db-1"`, `"summary":"db-1 is down"`)))
	require.Equal(t, 200, code, "%v", body)
	settle(t, ts)
	evs := eventsFor(pd, "trigger")
	require.Len(t, evs, 2, "both alerts page")
	all := string(evs[0].Raw) + string(evs[1].Raw)
	require.Contains(t, all, "db-1 is down")
	cut := strings.Repeat("é", 30) + "…" // 60 + 3 bytes, within 64, on a character boundary
	require.Contains(t, all, cut)
	require.NotContains(t, all, strings.Repeat("é", 31))
	_, m := ts.get(t, "/metrics")
	require.Contains(t, m, "alertfan_annotations_cut_total 1")
	require.Contains(t, ts.logs.String(), "over intake.max_annotation_value_length")
}

// An Alertmanager message with more alerts than
// max_alerts_per_notification is taken cut to the limit, as Alertmanager's
// own max_alerts cuts it (firing alerts first), not refused: Alertmanager
// never retries a 400 and sends the group whole at every repeat, so a
// refusal would lose the group's page for good. The alerts left out count
// in truncatedAlerts, so a group-mode target never resolves on it.
func TestIntakeOverAlertLimitIsCutNotRefused(t *testing.T) {
	start := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	h := func(host, status string) sinkstest.WebhookAlert {
		return sinkstest.NamedAlert("Disk", "critical", host, status, start)
	}
	for _, mode := range []string{"alert", "group"} {
		t.Run(mode, func(t *testing.T) {
			pd := sinkstest.NewPagerDuty()
			defer pd.Close()
			ts := startServer(t, pdConfig(pd.EventsURL(), "        mode: "+mode+"\nintake:\n  max_alerts_per_notification: 2\n"))
			send := func(alerts ...sinkstest.WebhookAlert) {
				code, body := ts.post(t, "/webhook", sinkstest.Webhook("oncall", `{}:{alertname="Disk"}`, map[string]string{"alertname": "Disk"}, alerts...))
				require.Equal(t, 200, code, "%v", body)
				settle(t, ts)
			}
			send(h("h0", "resolved"), h("h1", "firing"), h("h2", "firing"), h("h3", "firing"))
			_, m := ts.get(t, "/metrics")
			require.Contains(t, m, "alertfan_alerts_left_out_total 2")
			require.Contains(t, ts.logs.String(), "over intake.max_alerts_per_notification")
			if mode == "alert" {
				evs := eventsFor(pd, "trigger")
				require.Len(t, evs, 2, "the first firing alerts are paged")
				all := string(evs[0].Raw) + string(evs[1].Raw)
				require.Contains(t, all, `"h1"`)
				require.Contains(t, all, `"h2"`)
				require.NotContains(t, all, `"h3"`)
				return
			}
			require.Len(t, eventsFor(pd, "trigger"), 1, "the group is paged")
			// The group resolves with more alerts than the limit: the cut
			// message leaves alerts out, so it does not resolve the group.
			send(h("h0", "resolved"), h("h1", "resolved"), h("h2", "resolved"), h("h3", "resolved"))
			require.Empty(t, eventsFor(pd, "resolve"))
			send(h("h1", "resolved"), h("h2", "resolved"))
			require.Len(t, eventsFor(pd, "resolve"), 1, "a message within the limit resolves it")
		})
	}
}

// TestIntakeInflightBound: bodies in flight beyond
// intake.max_inflight_body_bytes get 503 (PagerDuty: 429) at once.
func TestIntakeInflightBound(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), "intake:\n  max_body_bytes: 2048\n  max_inflight_body_bytes: 2500\n"))
	small := firing("A", "h1")
	// A request that announces a body and sends it slowly holds only the
	// bytes it sent: it cannot block intake by announcing. It is written on
	// a raw connection so that each part reaches the server when the test
	// says (an HTTP client may buffer a body it has not finished).
	body := append([]byte(strings.Repeat(" ", 2040-len(small))), small...)
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "POST /webhook HTTP/1.1\r\nHost: alertfan\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	require.NoError(t, err)
	_, err = conn.Write(body[:10])
	require.NoError(t, err)
	code, _ := ts.post(t, "/webhook", small)
	require.Equal(t, 200, code, "an announced length reserves nothing")
	// Bytes actually in flight count: with 2,000 held, 600 more do not fit.
	_, err = conn.Write(body[10:2000])
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, m := ts.get(t, "/metrics")
		return strings.Contains(m, "alertfan_intake_inflight_body_bytes 2000")
	}, 5*time.Second, 10*time.Millisecond, "the server has read the 2,000 bytes")
	padded := append([]byte(strings.Repeat(" ", 600)), small...)
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/webhook", strings.NewReader(string(padded)))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 503, resp.StatusCode)
	require.Equal(t, "1", resp.Header.Get("Retry-After"))
	code, body2 := ts.post(t, "/v2/enqueue", []byte(strings.Repeat(" ", 600)+`{}`))
	require.Equal(t, 429, code, "%v", body2)
	_, err = conn.Write(body[2000:])
	require.NoError(t, err)
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	code, _ = ts.post(t, "/webhook", padded)
	require.Equal(t, 200, code, "the bound frees up")
}

func TestIntakeLimitsConfig(t *testing.T) {
	base := "route:\n  receiver: r\nreceivers:\n  - name: r\nintake:\n"
	cases := []struct{ intake, err string }{
		{"  max_labels_per_alert: 0\n", "intake.max_labels_per_alert: must be > 0, got 0"},
		{"  max_labels_per_alert: 50\n", ""},
		{"  max_labels_per_alert: -1\n", "intake.max_labels_per_alert: must be > 0"},
		{"  max_name_length: -5\n", "intake.max_name_length: must be > 0"},
		{"  max_body_bytes: 4096\n  max_inflight_body_bytes: 100\n", "intake.max_inflight_body_bytes: must be >= max_body_bytes"},
	}
	for _, c := range cases {
		cfg, err := config.Parse([]byte(base+c.intake), t.TempDir())
		if c.err == "" {
			require.NoError(t, err)
			require.Equal(t, 50, cfg.Intake.MaxLabelsPerAlert)
			require.Equal(t, config.DefaultIntake.MaxNameLength, cfg.Intake.MaxNameLength, "unset keeps the default")
			continue
		}
		require.ErrorContains(t, err, c.err)
	}
}

// Alertmanager's own pagerduty_configs, pointed at /v2/enqueue, sends a
// whole group in one event: its default details carry every firing alert
// (`firing: {{ .Alerts.Firing | toJson }}`). PagerDuty takes events up to
// 512 KB and Alertmanager never retries a 400, so intake takes what
// PagerDuty takes, whatever the webhook limits say: a 100-alert group
// (~100 KB in one detail), a nested custom_details object, a long detail
// name.
func TestPagerDutyIntakeTakesWhatPagerDutyTakes(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), ""))
	start := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	var firing []map[string]any
	for i := range 100 {
		firing = append(firing, map[string]any{
			"status": "firing",
			"labels": map[string]string{"alertname": "KubePodCrashLooping", "severity": "warning", "namespace": "payments",
				"pod": fmt.Sprintf("checkout-7d9f8c6b5d-%05d", i), "container": "checkout", "job": "kube-state-metrics",
				"instance": "10.2.3.4:8080", "cluster": "prod-eu-1", "reason": "CrashLoopBackOff"},
			"annotations": map[string]string{
				"description": fmt.Sprintf("Pod payments/checkout-7d9f8c6b5d-%05d (checkout) is in waiting state (reason: \"CrashLoopBackOff\").", i),
				"runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodcrashlooping",
				"summary":     "Pod is crash looping.",
			},
			"startsAt": start.Format(time.RFC3339Nano), "endsAt": "0001-01-01T00:00:00Z",
			"generatorURL": "http://prometheus.example:9090/graph?g0.expr=kube_pod_container_status_waiting_reason",
			"fingerprint":  fmt.Sprintf("%016x", 0xabc000+i),
		})
	}
	sum := sha256.Sum256([]byte(`{}/{severity="warning"}:{alertname="KubePodCrashLooping", namespace="payments"}`))
	cases := []struct {
		name    string
		details map[string]any
	}{
		{"a 100-alert group", map[string]any{"firing": firing, "resolved": []any{}, "num_firing": 100, "num_resolved": 0}},
		{"a nested object", map[string]any{"inventory": map[string]any{"pods": firing[:90]}}},
		{"a long detail name", map[string]any{strings.Repeat("k", 300): "v"}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body, err := json.Marshal(map[string]any{
				"routing_key": testRoutingKey, "event_action": "trigger", "dedup_key": fmt.Sprintf("%x-%d", sum[:8], i),
				"client": "Alertmanager", "client_url": "http://alertmanager.example:9093/#/alerts?receiver=pd",
				"payload": map[string]any{"summary": "[FIRING:100] KubePodCrashLooping (payments warning)", "source": "Alertmanager",
					"severity": "warning", "custom_details": c.details},
			})
			require.NoError(t, err)
			require.Less(t, len(body), 512000)
			code, resp := ts.post(t, "/v2/enqueue", body)
			require.Equal(t, 202, code, "%v", resp)
			require.Eventually(t, func() bool { return len(pd.Events()) == i+1 }, 10*time.Second, 10*time.Millisecond)
			var got struct {
				CustomDetails map[string]any `json:"custom_details"`
			}
			require.NoError(t, json.Unmarshal(pd.Events()[i].Payload, &got))
			want, _ := json.Marshal(c.details)
			gotJSON, _ := json.Marshal(got.CustomDetails)
			require.JSONEq(t, string(want), string(gotJSON), "relayed as it came")
		})
	}
}
