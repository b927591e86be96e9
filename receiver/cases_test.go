package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// The field cases of 2026-11-29 (testdata/cases, copied from the shared
// cases folder with their own payloads): each config's placeholders are
// filled with the fakes' URLs and a temporary data folder.

func caseFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "cases", name))
	require.NoError(t, err)
	return b
}

func caseConfig(t *testing.T, name, dir string, urls map[string]string) string {
	t.Helper()
	s := strings.ReplaceAll(string(caseFile(t, name)), "${DATA}", dir)
	for k, v := range urls {
		s = strings.ReplaceAll(s, "${"+k+"}", v)
	}
	require.NotContains(t, s, "${")
	return s
}

// sentWith is the event as the sender sent it with only the routing key
// replaced: what PagerDuty must receive from a relay.
func sentWith(t *testing.T, body []byte, routingKey string) string {
	t.Helper()
	var ev map[string]any
	require.NoError(t, json.Unmarshal(body, &ev))
	ev["routing_key"] = routingKey
	b, err := json.Marshal(ev)
	require.NoError(t, err)
	return string(b)
}

// Case 02: a service-metric alert has no host but a service, and routes on
// it: one Backlog issue, titled like Mackerel's own notification.
func TestCase02MackerelServiceMetricRoutes(t *testing.T) {
	bl := sinkstest.NewBacklog("test-backlog-api-key")
	defer bl.Close()
	dir := t.TempDir()
	ts := startServerIn(t, dir, caseConfig(t, "02-mackerel-service-metric-unrouted.yml", dir, map[string]string{"BL": bl.URL}))
	code, body := ts.post(t, "/mackerel", caseFile(t, "02-mackerel-service-metric-unrouted.json"))
	require.Equal(t, 200, code, body)
	require.Eventually(t, func() bool { return len(bl.Issues()) == 1 }, 15*time.Second, 20*time.Millisecond)
	is := bl.Issues()[0]
	require.Equal(t, "[CRITICAL] orders rate: shop.orders.rate 0.2 < 1", is.Summary, "severity and name once each")
	require.Contains(t, is.Description, "Orders stopped: check the payment gateway first", "the memo is in the issue")
	time.Sleep(300 * time.Millisecond)
	require.Len(t, bl.Issues(), 1)
}

// Case 05: custom_details as a JSON string is accepted (202) and relayed
// with the same custom_details.
func TestCase05CustomDetailsString(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	dir := t.TempDir()
	ts := startServerIn(t, dir, caseConfig(t, "05-pd-custom-details-string.yml", dir, map[string]string{"FAKE": pd.URL}))
	in := caseFile(t, "05-pd-custom-details-string.json")
	code, body := ts.post(t, "/v2/enqueue", in)
	require.Equal(t, 202, code, body)
	require.Equal(t, "alertId-12-2-abcd1234", body["dedup_key"])
	require.Eventually(t, func() bool { return len(pd.Events()) == 1 }, 15*time.Second, 20*time.Millisecond)
	require.JSONEq(t, sentWith(t, in, "0123456789abcdef0123456789abcdef"), string(pd.Events()[0].Raw))
}

// Case 06: a relay relays. Alertmanager's own pagerduty_configs event and
// PagerDuty's documentation sample reach PagerDuty as they were sent, with
// only the routing key replaced; a sender's resolve without payload is
// passed on as one.
func TestCase06RelayKeepsTheEvent(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	dir := t.TempDir()
	ts := startServerIn(t, dir, caseConfig(t, "06-pd-relay-rewrites-event.yml", dir, map[string]string{"FAKE": pd.URL}))
	const out = "fedcba9876543210fedcba9876543210"
	for i, name := range []string{"06-pd-relay-rewrites-event-1-alertmanager.json", "06-pd-relay-rewrites-event-2-pd-sender.json"} {
		in := caseFile(t, name)
		code, body := ts.post(t, "/v2/enqueue", in)
		require.Equal(t, 202, code, body)
		require.Eventually(t, func() bool { return len(pd.Events()) == i+1 }, 15*time.Second, 20*time.Millisecond)
		require.JSONEq(t, sentWith(t, in, out), string(pd.Events()[i].Raw), name)
	}
	resolve := `{"routing_key":"0123456789abcdef0123456789abcdef","event_action":"resolve","dedup_key":"samplekeyhere"}`
	code, body := ts.post(t, "/v2/enqueue", []byte(resolve))
	require.Equal(t, 202, code, body)
	require.Eventually(t, func() bool { return len(pd.Events()) == 3 }, 15*time.Second, 20*time.Millisecond)
	require.JSONEq(t, sentWith(t, []byte(resolve), out), string(pd.Events()[2].Raw))
}

// Templates set by the user still win over the relayed event; what the
// user left out is relayed.
func TestRelayUserTemplatesWin(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), "        severity: warning\n        description: 'relayed: {{ .CommonAnnotations.summary }}'\n"))
	code, body := ts.post(t, "/v2/enqueue", caseFile(t, "06-pd-relay-rewrites-event-2-pd-sender.json"))
	require.Equal(t, 202, code, body)
	require.Eventually(t, func() bool { return len(pd.Events()) == 1 }, 15*time.Second, 20*time.Millisecond)
	var p map[string]any
	require.NoError(t, json.Unmarshal(pd.Events()[0].Payload, &p))
	require.Equal(t, "warning", p["severity"])
	require.Equal(t, "relayed: Example alert on host1.example.com", p["summary"])
	require.Equal(t, "postgres", p["component"], "what the user left out is relayed")
	require.Equal(t, "2015-07-17T08:42:58.315+0000", p["timestamp"])
	require.Equal(t, "samplekeyhere", pd.Events()[0].DedupKey)
}

// Case 08: a rendered severity PagerDuty would refuse is replaced by the
// documented rule; the page goes out, the replacement is logged once and
// counted. A constant PagerDuty refuses is a config error at load and in
// check-config.
func TestCase08InvalidSeverity(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	dir := t.TempDir()
	ts := startServerIn(t, dir, caseConfig(t, "08-pd-invalid-severity.yml", dir, map[string]string{"FAKE": pd.URL}))
	// The sink's counters are the process's: a test run again in the same
	// binary (-count) starts from the last run's count.
	const replaced = `alertfan_pagerduty_severity_replaced_total{target="oncall/pagerduty/0"}`
	_, m := ts.get(t, "/metrics")
	before := seriesValue(m, replaced)
	code, _ := ts.post(t, "/webhook", caseFile(t, "08-pd-invalid-severity-1-infoinhibitor.json"))
	require.Equal(t, 200, code)
	code, _ = ts.post(t, "/mackerel", caseFile(t, "08-pd-invalid-severity-2-mackerel-unknown.json"))
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool { return len(pd.Events()) == 2 }, 15*time.Second, 20*time.Millisecond)
	sev := map[string]string{}
	for _, e := range pd.Events() {
		var p map[string]any
		require.NoError(t, json.Unmarshal(e.Payload, &p))
		sev[p["summary"].(string)] = p["severity"].(string)
	}
	require.Equal(t, map[string]string{
		"[FIRING:1] InfoInhibitor (kube-system monitoring/k8s none)": "info",  // alias: none → info
		"[UNKNOWN] loadavg5 high on db1: loadavg5 12.5 > 10":         "error", // no alias: severity_fallback
	}, sev)
	// Mackerel's ok resolves the incident; its severity "ok" is no news.
	ok := strings.Replace(string(caseFile(t, "08-pd-invalid-severity-2-mackerel-unknown.json")), `"status":"unknown","isOpen":true`, `"status":"ok","isOpen":false`, 1)
	code, _ = ts.post(t, "/mackerel", []byte(ok))
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool { return len(eventsFor(pd, "resolve")) == 1 }, 15*time.Second, 20*time.Millisecond)
	_, m = ts.get(t, "/metrics")
	require.Equal(t, before+2, seriesValue(m, replaced))
	require.Equal(t, 2, strings.Count(ts.logs.String(), "Rendered severity is not one PagerDuty accepts"), "once per value")
	require.NotContains(t, m, "0123456789abcdef0123456789abcdef")

	file := filepath.Join(dir, "constant.yml")
	require.NoError(t, os.WriteFile(file, []byte(caseConfig(t, "08-pd-invalid-severity-constant.yml", dir, map[string]string{"FAKE": pd.URL})), 0o600))
	var out bytes.Buffer
	err := CheckConfig(context.Background(), file, false, &out)
	require.ErrorContains(t, err, `severity: "page" is not one of critical, error, warning, info`)
	require.NotContains(t, out.String(), "SUCCESS")
}

// The same class for Backlog: no alert reaches a person under a
// placeholder name. A PagerDuty event's ticket is titled by its sending
// tool and source; a Mackerel host alert's like Mackerel's notification.
func TestTicketTitlesFitTheInput(t *testing.T) {
	bl := sinkstest.NewBacklog(backlogKey)
	defer bl.Close()
	ts := startServer(t, backlogConfig(bl.URL, ""))
	code, body := ts.post(t, "/v2/enqueue", caseFile(t, "05-pd-custom-details-string.json"))
	require.Equal(t, 202, code, body)
	code, body = ts.post(t, "/mackerel", caseFile(t, "08-pd-invalid-severity-2-mackerel-unknown.json"))
	require.Equal(t, 200, code, body)
	require.Eventually(t, func() bool { return len(bl.Issues()) == 2 }, 15*time.Second, 20*time.Millisecond)
	var titles []string
	for _, is := range bl.Issues() {
		titles = append(titles, is.Summary)
	}
	require.ElementsMatch(t, []string{
		"[CRITICAL] Grafana on grafana-host: High 5xx rate - error ratio above 5%",
		"[UNKNOWN] loadavg5 high on db1: loadavg5 12.5 > 10",
	}, titles)
}

// Change events are relayed as they came too: custom_details of any JSON
// type, the sender's timestamp, links with their text.
func TestChangeEventRelayKeepsTheEvent(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), ""))
	for _, details := range []string{`"deployed v1.2.3"`, `{"build":42,"tags":["a","b"]}`} {
		in := `{"routing_key":"R0UT1NGKEY0000000000000000000001","payload":{"summary":"Deployed api","source":"ci","timestamp":"2026-11-29T10:00:00.123+0900","custom_details":` + details + `},"links":[{"href":"https://ci.example/1","text":"Build"}]}`
		n := len(pd.Events())
		code, body := ts.post(t, "/v2/change/enqueue", []byte(in))
		require.Equal(t, 202, code, body)
		require.Eventually(t, func() bool { return len(pd.Events()) == n+1 }, 15*time.Second, 20*time.Millisecond)
		got := pd.Events()[n]
		require.True(t, got.Change)
		require.JSONEq(t, sentWith(t, []byte(in), testRoutingKey), string(got.Raw))
	}
}

// seriesValue is the value of one series (name and labels as exposed) in
// a scrape, 0 when it is absent.
func seriesValue(scrape, series string) float64 {
	for line := range strings.Lines(scrape) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return 0
}
