package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

func eventsFor(pd *sinkstest.PagerDuty, action string) []sinkstest.PDEvent {
	var out []sinkstest.PDEvent
	for _, e := range pd.Events() {
		if e.EventAction == action {
			out = append(out, e)
		}
	}
	return out
}

func TestPagerDutyTriggerThenResolve(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), ""))
	code, _ := ts.post(t, "/webhook", firing("Disk", "h1"))
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool { return len(eventsFor(pd, "trigger")) == 1 }, 10*time.Second, 10*time.Millisecond)
	code, _ = ts.post(t, "/webhook", resolved("Disk", "h1"))
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool { return len(eventsFor(pd, "resolve")) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, eventsFor(pd, "trigger")[0].DedupKey, eventsFor(pd, "resolve")[0].DedupKey, "resolve reaches the same incident")
	// The fake has the event before the worker counts it: wait for both.
	require.Eventually(t, func() bool {
		_, m := ts.get(t, "/metrics")
		return strings.Contains(m, `alertfan_deliveries_total{reason="",receiver="oncall",result="success",sink="pagerduty"} 2`) &&
			strings.Contains(m, `alertfan_delivery_latency_seconds_count{sink="pagerduty"} 2`)
	}, 10*time.Second, 10*time.Millisecond)
}

func TestPagerDutyGroupModeOneIncidentPerGroup(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), "        mode: group\n"))
	start := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	body := sinkstest.Webhook("oncall", `{}:{alertname="Disk"}`, map[string]string{"alertname": "Disk"},
		sinkstest.NamedAlert("Disk", "critical", "h1", "firing", start),
		sinkstest.NamedAlert("Disk", "critical", "h2", "firing", start))
	code, _ := ts.post(t, "/webhook", body)
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool { return len(pd.Events()) == 1 }, 10*time.Second, 10*time.Millisecond)
	var payload map[string]any
	require.NoError(t, json.Unmarshal(pd.Events()[0].Payload, &payload))
	require.Equal(t, "[FIRING:2] Disk (critical)", payload["summary"])
}

func TestPagerDuty429RetryAfterIsWaitedOut(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	pd.Script(sinkstest.PDResponse{Status: 429, RetryAfter: "1"})
	ts := startServer(t, pdConfig(pd.EventsURL(), ""))
	sent := time.Now()
	code, _ := ts.post(t, "/webhook", firing("A", "h1"))
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool { return len(pd.Events()) == 1 }, 20*time.Second, 10*time.Millisecond)
	require.GreaterOrEqual(t, time.Since(sent), time.Second, "the retry waits for Retry-After")
	require.Equal(t, 2, pd.Attempts())
}

func TestPagerDuty500IsRetried(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	pd.Script(sinkstest.PDResponse{Status: 500}, sinkstest.PDResponse{Status: 502}, sinkstest.PDResponse{Status: 503})
	ts := startServer(t, pdConfig(pd.EventsURL(), ""))
	code, _ := ts.post(t, "/webhook", firing("A", "h1"))
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool { return len(pd.Events()) == 1 }, 30*time.Second, 10*time.Millisecond)
	require.Equal(t, 4, pd.Attempts())
	_, m := ts.get(t, "/metrics")
	require.Contains(t, m, `alertfan_deliveries_total{reason="server_error",receiver="oncall",result="retry",sink="pagerduty"} 3`)
}

func TestPagerDuty400IsDeadLetteredNeverRetried(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	pd.Script(sinkstest.PDResponse{Status: 400})
	ts := startServer(t, pdConfig(pd.EventsURL(), ""))
	code, _ := ts.post(t, "/webhook", firing("A", "h1"))
	require.Equal(t, 200, code)
	admin := &AdminClient{URL: ts.URL}
	var out bytes.Buffer
	require.Eventually(t, func() bool {
		out.Reset()
		require.NoError(t, admin.List(context.Background(), ListOptions{State: "dead"}, &out))
		return bytes.Contains(out.Bytes(), []byte("client_error"))
	}, 10*time.Second, 20*time.Millisecond)
	require.Contains(t, out.String(), "oncall/pagerduty/0")
	require.Contains(t, out.String(), "payload.summary", "the reason PagerDuty gave is kept")
	time.Sleep(500 * time.Millisecond)
	require.Equal(t, 1, pd.Attempts(), "a 400 is never retried")
	_, m := ts.get(t, "/metrics")
	require.Contains(t, m, `alertfan_deliveries_total{reason="client_error",receiver="oncall",result="dead",sink="pagerduty"} 1`)
	require.Contains(t, m, `alertfan_dead_letters{target="oncall/pagerduty/0"} 1`)
	require.Contains(t, ts.logs.String(), "dead-lettered")

	// An operator fixes the cause and retries: delivered, dead letter gone.
	out.Reset()
	require.NoError(t, admin.RetryDead(context.Background(), "", &out))
	require.Contains(t, out.String(), "re-queued 1")
	require.Eventually(t, func() bool { return len(pd.Events()) == 1 }, 10*time.Second, 10*time.Millisecond)
	out.Reset()
	require.NoError(t, admin.List(context.Background(), ListOptions{State: "dead"}, &out))
	require.NotContains(t, out.String(), "client_error")
}

func TestTargetDownThenBack(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	pd.SetDown(true)
	ts := startServer(t, pdConfig(pd.EventsURL(), ""))
	for i := 0; i < 20; i++ {
		code, _ := ts.post(t, "/webhook", firing("A", "host-"+string(rune('a'+i))))
		require.Equal(t, 200, code)
	}
	time.Sleep(500 * time.Millisecond)
	require.Empty(t, pd.Events())
	pd.SetDown(false)
	require.Eventually(t, func() bool { return len(pd.Events()) == 20 }, 30*time.Second, 20*time.Millisecond)
	seen := map[string]int{}
	for _, e := range pd.Events() {
		seen[e.DedupKey]++
	}
	require.Len(t, seen, 20, "each alert delivered once")
}

// The message's commonLabels and commonAnnotations are not what templates
// get: in alert mode .CommonLabels and .CommonAnnotations are those of the
// one alert each event is about, in group mode those the group's alerts
// share — whatever the sender put in the message (a relay or an older
// Alertmanager may send them stale or empty).
func TestCommonLabelsAreTheNotificationsOwn(t *testing.T) {
	at := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	a := sinkstest.NamedAlert("DiskFull", "critical", "db-1", "firing", at)
	b := sinkstest.NamedAlert("DiskFull", "critical", "db-2", "firing", at)
	msg := func() []byte {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sinkstest.Webhook("oncall", `{}:{alertname="DiskFull"}`, map[string]string{"alertname": "DiskFull"}, a, b), &m))
		m["commonLabels"] = map[string]string{"instance": "from-the-message", "severity": "info"}
		m["commonAnnotations"] = map[string]string{"summary": "from the message"}
		out, err := json.Marshal(m)
		require.NoError(t, err)
		return out
	}
	tmpl := "        description: '{{ .CommonLabels.severity }} {{ .CommonLabels.instance }}: {{ .CommonAnnotations.summary }}'\n"
	for _, c := range []struct {
		mode string
		want []string
	}{
		{"alert", []string{"critical db-1: DiskFull on db-1", "critical db-2: DiskFull on db-2"}},
		{"group", []string{"critical : "}},
	} {
		t.Run(c.mode, func(t *testing.T) {
			pd := sinkstest.NewPagerDuty()
			defer pd.Close()
			ts := startServer(t, pdConfig(pd.EventsURL(), "        mode: "+c.mode+"\n"+tmpl))
			code, body := ts.post(t, "/webhook", msg())
			require.Equal(t, 200, code, body)
			require.Eventually(t, func() bool { return len(pd.Events()) == len(c.want) }, 15*time.Second, 20*time.Millisecond)
			var got []string
			for _, ev := range pd.Events() {
				var p struct{ Summary string }
				require.NoError(t, json.Unmarshal(ev.Payload, &p))
				got = append(got, p.Summary)
			}
			require.ElementsMatch(t, c.want, got)
		})
	}
}

// While an incident is open, every event for it carries the dedup_key it
// was opened with, whatever the dedup_key template renders now: a group
// member that left changes what a template reading the firing alerts
// renders, and a sender's payload-less acknowledge and resolve carry no
// annotations for a template reading them. The incident is resolved, and
// no second one opened.
func TestIncidentKeepsItsDedupKeyWhileOpen(t *testing.T) {
	t.Run("group member leaves", func(t *testing.T) {
		pd := sinkstest.NewPagerDuty()
		defer pd.Close()
		ts := startServer(t, pdConfig(pd.EventsURL(), "        mode: group\n        dedup_key: '{{ (index .Alerts.Firing 0).Labels.instance }}'\n"))
		start := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
		gk, gl := `{}:{alertname="HighLatency"}`, map[string]string{"alertname": "HighLatency"}
		a := func(instance, status string) sinkstest.WebhookAlert {
			return sinkstest.NamedAlert("HighLatency", "critical", instance, status, start)
		}
		for i, alerts := range [][]sinkstest.WebhookAlert{
			{a("api-1", "firing"), a("api-2", "firing")},
			{a("api-1", "resolved"), a("api-2", "firing")},
			{a("api-2", "firing")},
			{a("api-2", "resolved")},
		} {
			code, body := ts.post(t, "/webhook", sinkstest.Webhook("oncall", gk, gl, alerts...))
			require.Equal(t, 200, code, "%v", body)
			require.Eventually(t, func() bool { return len(pd.Events()) == i+1 }, 10*time.Second, 10*time.Millisecond)
		}
		evs := pd.Events()
		for _, ev := range evs {
			require.Equal(t, "api-1", ev.DedupKey, "%s", ev.EventAction)
		}
		require.Equal(t, "resolve", evs[len(evs)-1].EventAction)
	})
	t.Run("a trigger that failed keeps its key for the retry", func(t *testing.T) {
		pd := sinkstest.NewPagerDuty()
		defer pd.Close()
		ts := startServer(t, pdConfig(pd.EventsURL(), "        dedup_key: '{{ .CommonAnnotations.summary }}'\n"))
		send := func(ev string) {
			code, body := ts.post(t, "/v2/enqueue", []byte(ev))
			require.Equal(t, 202, code, "%v", body)
		}
		pd.SetDown(true) // its answer lost, as far as alertfan can tell
		send(`{"routing_key":"` + testRoutingKey + `","event_action":"trigger","dedup_key":"srv-1","payload":{"summary":"Disk 91% full","source":"web-1","severity":"critical"}}`)
		require.Eventually(t, func() bool { return pd.Attempts() >= 1 }, 10*time.Second, 10*time.Millisecond)
		send(`{"routing_key":"` + testRoutingKey + `","event_action":"trigger","dedup_key":"srv-1","payload":{"summary":"Disk 95% full","source":"web-1","severity":"critical"}}`)
		pd.SetDown(false)
		require.Eventually(t, func() bool { return len(pd.Events()) == 1 }, 10*time.Second, 10*time.Millisecond)
		send(`{"routing_key":"` + testRoutingKey + `","event_action":"resolve","dedup_key":"srv-1"}`)
		require.Eventually(t, func() bool { return len(pd.Events()) == 2 }, 10*time.Second, 10*time.Millisecond)
		for _, ev := range pd.Events() {
			require.Equal(t, "Disk 91% full", ev.DedupKey, "%s", ev.EventAction)
		}
	})
	t.Run("payload-less acknowledge and resolve of a relayed event", func(t *testing.T) {
		pd := sinkstest.NewPagerDuty()
		defer pd.Close()
		ts := startServer(t, pdConfig(pd.EventsURL(), "        dedup_key: '{{ .CommonAnnotations.summary }}'\n"))
		for i, ev := range []string{
			`{"routing_key":"` + testRoutingKey + `","event_action":"trigger","dedup_key":"srv-1","payload":{"summary":"Disk full on web-1","source":"web-1","severity":"critical"}}`,
			`{"routing_key":"` + testRoutingKey + `","event_action":"acknowledge","dedup_key":"srv-1"}`,
			`{"routing_key":"` + testRoutingKey + `","event_action":"resolve","dedup_key":"srv-1"}`,
		} {
			code, body := ts.post(t, "/v2/enqueue", []byte(ev))
			require.Equal(t, 202, code, "%v", body)
			require.Eventually(t, func() bool { return len(pd.Events()) == i+1 }, 10*time.Second, 10*time.Millisecond)
		}
		evs := pd.Events()
		require.Equal(t, []string{"trigger", "acknowledge", "resolve"}, []string{evs[0].EventAction, evs[1].EventAction, evs[2].EventAction})
		for _, ev := range evs {
			require.Equal(t, "Disk full on web-1", ev.DedupKey, "%s", ev.EventAction)
		}
	})
}
