package receiver

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// stormAlerts is one Alertmanager message of n alerts of the severity,
// all firing or all resolved.
func stormAlerts(prefix, severity, status string, n int) []byte {
	start := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	as := make([]sinkstest.WebhookAlert, n)
	for i := range as {
		as[i] = sinkstest.NamedAlert("Storm", severity, fmt.Sprintf("%s-%04d", prefix, i), status, start)
	}
	return sinkstest.Webhook("oncall", `{}:{alertname="Storm"}`, map[string]string{"alertname": "Storm"}, as...)
}

// A storm's triggers that resolved before their turn give their booked
// calls back: a new alert after it goes out at once, not behind 1,000
// calls that never come (a fresh helper: 8 minutes at 120/min).
func TestResolvedStormGivesItsBookedCallsBack(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfigAt(pd.EventsURL(), 120))
	code, body := ts.post(t, "/webhook", stormAlerts("h", "warning", "firing", 1000))
	require.Equal(t, 200, code, "%v", body)
	time.Sleep(time.Second)
	code, body = ts.post(t, "/webhook", stormAlerts("h", "warning", "resolved", 1000))
	require.Equal(t, 200, code, "%v", body)
	// The storm's jobs that need no call leave the queue (the re-planner
	// looks every 2 s after a resolve); on a loaded machine (CI's race
	// run) that takes longer than a fixed wait.
	settle(t, ts)
	sent := len(eventsFor(pd, "trigger"))
	require.Less(t, sent, 100, "most triggers needed no call")
	start := time.Now()
	code, body = ts.post(t, "/webhook", stormAlerts("new", "warning", "firing", 1)) // a warning: behind the storm's class
	require.Equal(t, 200, code, "%v", body)
	require.Eventually(t, func() bool {
		for _, e := range eventsFor(pd, "trigger") {
			if strings.Contains(string(e.Raw), "new-0000") {
				return true
			}
		}
		return false
	}, 20*time.Second, 50*time.Millisecond, "the new alert's trigger")
	t.Logf("new trigger after %s (%d storm triggers sent)", time.Since(start).Round(time.Millisecond), sent)
}

// Resolves of alerts alertfan never saw fire are passed on, but after
// every trigger: 200 of them ahead of a critical page on a 60/min key
// held it back 3 minutes 20 seconds (a fresh helper).
func TestResolvesOfUnknownAlertsGoAfterPages(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfigAt(pd.EventsURL(), 60))
	code, body := ts.post(t, "/webhook", stormAlerts("never", "warning", "resolved", 200))
	require.Equal(t, 200, code, "%v", body)
	start := time.Now()
	code, body = ts.post(t, "/webhook", firing("DatabaseDown", "db-1"))
	require.Equal(t, 200, code, "%v", body)
	require.Eventually(t, func() bool { return len(eventsFor(pd, "trigger")) == 1 }, 20*time.Second, 50*time.Millisecond, "the critical page")
	t.Logf("critical trigger after %s, %d resolves sent before it", time.Since(start).Round(time.Millisecond), len(eventsFor(pd, "resolve")))
	require.LessOrEqual(t, len(eventsFor(pd, "resolve")), 5, "the unknown alerts' resolves wait behind the page")
}

// Two senders' events with one dedup_key are one PagerDuty alert at a
// target both reach (the key goes on as it came); the dedup_key template
// the README gives keeps them apart, and each resolve closes its own.
func TestSendersDedupKeysScopedByTemplate(t *testing.T) {
	const keyA, keyB = "CLUSTERAKEY000000000000000000001", "CLUSTERBKEY000000000000000000001"
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, `
intake:
  pagerduty:
    routing_keys:
      cluster-a: `+keyA+`
      cluster-b: `+keyB+`
route:
  receiver: paged
receivers:
  - name: paged
    pagerduty_configs:
      - routing_key: `+testRoutingKey+`
        url: `+pd.EventsURL()+`
        rate_limit_per_minute: 60000
        dedup_key: '{{ .CommonLabels.routing_key_name }}/{{ (index .Alerts 0).Fingerprint }}'
`)
	ev := func(key, action string) []byte {
		payload := ""
		if action == "trigger" {
			payload = `,"payload":{"summary":"InstanceDown","source":"h","severity":"critical"}`
		}
		return []byte(`{"routing_key":"` + key + `","event_action":"` + action + `","dedup_key":"4f1c9123"` + payload + `}`)
	}
	for _, b := range [][]byte{ev(keyA, "trigger"), ev(keyB, "trigger"), ev(keyA, "resolve")} {
		code, body := ts.post(t, "/v2/enqueue", b)
		require.Equal(t, 202, code, "%v", body)
		settle(t, ts)
	}
	keys := map[string][]string{}
	for _, e := range pd.Events() {
		keys[e.DedupKey] = append(keys[e.DedupKey], e.EventAction)
	}
	require.Equal(t, map[string][]string{"cluster-a/4f1c9123": {"trigger", "resolve"}, "cluster-b/4f1c9123": {"trigger"}}, keys)
}
