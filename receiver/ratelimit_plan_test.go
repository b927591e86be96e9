package receiver

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
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

// pdSeverityEvent is a PagerDuty Events v2 trigger of key with the
// severity.
func pdSeverityEvent(key, severity string) []byte {
	return []byte(fmt.Sprintf(`{"routing_key":%q,"event_action":"trigger","dedup_key":%q,"payload":{"summary":"Disk full on db-1 (%s)","source":"db-1","severity":%q}}`,
		testRoutingKey, key, severity, severity))
}

// An alert queued behind a storm of warnings that escalates before its
// turn — a PagerDuty sender's warning that turns critical, a Mackerel
// WARNING that turns CRITICAL — goes out at the critical's place in the
// queue, not at the warning's: a fresh helper's critical page waited
// behind every warning queued before the alert first fired. The same
// holds for a resolve of an alert whose update is queued: it ends a
// page, and goes before the triggers.
func TestEscalatedQueuedAlertOvertakesWarnings(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfigAt(pd.EventsURL(), 120))
	// db-2's page went out before the storm; its update queues behind it.
	code, body := ts.post(t, "/v2/enqueue", pdSeverityEvent("db-2", "warning"))
	require.Equal(t, 202, code, "%v", body)
	require.Eventually(t, func() bool { return len(actionsFor(pd, "db-2")) == 1 }, 10*time.Second, 20*time.Millisecond)

	code, body = ts.post(t, "/webhook", stormAlerts("w", "warning", "firing", 1000))
	require.Equal(t, 200, code, "%v", body)
	code, body = ts.post(t, "/v2/enqueue", pdSeverityEvent("db-1", "warning"))
	require.Equal(t, 202, code, "%v", body)
	code, body = ts.post(t, "/v2/enqueue", []byte(strings.Replace(string(pdSeverityEvent("db-2", "warning")), "Disk full", "Disk still full", 1)))
	require.Equal(t, 202, code, "%v", body)
	time.Sleep(time.Second)

	start := time.Now()
	code, body = ts.post(t, "/v2/enqueue", pdSeverityEvent("db-1", "critical"))
	require.Equal(t, 202, code, "%v", body)
	code, body = ts.post(t, "/v2/enqueue", pdEvent("resolve", "db-2", false))
	require.Equal(t, 202, code, "%v", body)
	require.Eventually(t, func() bool {
		return len(actionsFor(pd, "db-1")) == 1 && len(actionsFor(pd, "db-2")) == 2
	}, 30*time.Second, 50*time.Millisecond, "the escalated trigger and the resolve")
	took := time.Since(start)
	var critical sinkstest.PDEvent
	for _, e := range pd.Events() {
		if e.DedupKey == "db-1" {
			critical = e
		}
	}
	require.Contains(t, string(critical.Raw), `"severity":"critical"`, "the escalated content goes out")
	require.Equal(t, []string{"trigger", "resolve"}, actionsFor(pd, "db-2"), "the queued update needs no call once resolved")
	storm := len(eventsFor(pd, "trigger")) - 2
	t.Logf("escalated trigger and resolve out %s after they arrived; %d storm triggers went out meanwhile", took.Round(time.Millisecond), storm)
	// The re-planner looks every 2 s, and a slot is 0.5 s: the two go
	// out within seconds, where the warning's place was 500 s away.
	require.Less(t, storm, 40, "the escalated work waited behind the storm")
}

// A storm drains at the rate the limit allows, with no idle gaps: keys
// a job's run parked came back counted from the end of the run (when its
// slowest key's paced call was made) instead of from when they parked,
// and the limit idled that long each run — 300 alerts at 600/min took
// 36 s against the 30 s the limit allows, and two configs on one routing
// key (600 and 300/min: the key's limit is the lower) took 41 s for 120
// calls against 24 s (a fresh helper).
func TestStormDrainsAtTheLimit(t *testing.T) {
	twoConfigs := func(url string) string {
		second := fmt.Sprintf("      - routing_key: %s\n        url: %s\n        rate_limit_per_minute: 300\n        dedup_key: 'second-{{ (index .Alerts 0).Fingerprint }}'\n", testRoutingKey, url)
		return strings.Replace(pdConfig(url, second), "rate_limit_per_minute: 60000", "rate_limit_per_minute: 600", 1)
	}
	for _, c := range []struct {
		name         string
		config       func(url string) string
		alerts, want int
		perMinute    int
	}{
		{"one config", func(url string) string { return pdConfigAt(url, 600) }, 150, 150, 600},
		{"two configs on one routing key", twoConfigs, 30, 60, 300},
	} {
		t.Run(c.name, func(t *testing.T) {
			pd := sinkstest.NewPagerDuty()
			defer pd.Close()
			ts := startServer(t, c.config(pd.EventsURL()))
			code, body := ts.post(t, "/webhook", stormAlerts("s", "warning", "firing", c.alerts))
			require.Equal(t, 200, code, "%v", body)
			require.Eventually(t, func() bool { return len(eventsFor(pd, "trigger")) == c.want }, 60*time.Second, 20*time.Millisecond)
			evs := eventsFor(pd, "trigger")
			took := evs[c.want-1].Received.Sub(evs[0].Received)
			least := time.Duration(c.want-1) * time.Duration(1.01*float64(time.Minute)/float64(c.perMinute))
			var gaps []string
			for i := 1; i < c.want; i++ {
				if g := evs[i].Received.Sub(evs[i-1].Received); g > 500*time.Millisecond {
					gaps = append(gaps, fmt.Sprintf("%s before event %d", g.Round(time.Millisecond), i))
				}
			}
			t.Logf("%d triggers in %s, %.3f× the least the limit allows (%s); gaps over 0.5 s: %v", c.want, took.Round(time.Millisecond), float64(took)/float64(least), least, gaps)
			// The slack is for a starved -race run; each idle gap was ~2 s.
			require.Less(t, took, least+least/10+time.Second, "gaps: %v", gaps)
		})
	}
}

// Two replicas on one PostgreSQL database escalate keys of the same
// queued jobs at once: each key goes out once. Each replica's re-planner
// moved keys out of the job's args as it had read them, so a key another
// replica had moved meanwhile was put back or enqueued twice (a fresh
// helper: 3–14 of 150 escalated triggers sent twice).
func TestEscalationAcrossReplicasSendsOnce(t *testing.T) {
	const n = 300
	dsn := testenv.PostgresDSN(t)
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	var replicas []*testServer
	for range 2 {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "dsn"), []byte(dsn), 0o600))
		replicas = append(replicas, startServerIn(t, dir, "storage:\n  driver: postgres\n  dsn_file: dsn\n"+pdConfigAt(pd.EventsURL(), 600)))
	}
	post := func(ts *testServer, key, severity string) {
		code, body := ts.post(t, "/v2/enqueue", pdSeverityEvent(key, severity))
		require.Equal(t, 202, code, "%v", body)
	}
	for i := range n {
		post(replicas[i%2], fmt.Sprintf("k%04d", i), "warning")
	}
	time.Sleep(1500 * time.Millisecond)
	for i := 1; i < n; i += 2 {
		post(replicas[(i/2)%2], fmt.Sprintf("k%04d", i), "critical")
	}
	require.Eventually(t, func() bool { return len(eventsFor(pd, "trigger")) >= n }, 60*time.Second, 50*time.Millisecond)
	settle(t, replicas[0])
	settle(t, replicas[1])
	calls := map[string][]string{}
	for _, e := range eventsFor(pd, "trigger") {
		sev := "warning"
		if strings.Contains(string(e.Raw), `"severity":"critical"`) {
			sev = "critical"
		}
		calls[e.DedupKey] = append(calls[e.DedupKey], sev)
	}
	require.Len(t, calls, n)
	for i := range n {
		key := fmt.Sprintf("k%04d", i)
		got := calls[key]
		if i%2 == 0 {
			require.Equal(t, []string{"warning"}, got, key)
			continue
		}
		// Sent as a warning before its escalation came, or not: the
		// critical once, last.
		require.Contains(t, [][]string{{"critical"}, {"warning", "critical"}}, got, key)
	}
}

// Work queued behind a spent budget goes by class even when its keys
// park: a job parked the keys beyond its pacing window all at once and
// came back at their turn, up to a poll interval late, so the limiter
// had none of them waiting when their turn came, and a queued warning,
// or an info, took it. At 60/min warnings took every other slot from 40
// later criticals, and an info went out ahead of 29 of them (a fresh
// helper). (Between two parked classes that both wait behind the
// criticals, the order is that in which their keys come back: an info
// may go before the last warnings.)
func TestParkedCriticalsKeepTheirTurns(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfigAt(pd.EventsURL(), 120))
	storm(t, ts, "Warn", "warning", "firing", 6)
	require.Eventually(t, func() bool { return len(pd.Events()) > 0 }, 10*time.Second, 10*time.Millisecond, "the budget spent")
	code, body := ts.post(t, "/v2/enqueue", pdSeverityEvent("info-1", "info"))
	require.Equal(t, 202, code, "%v", body)
	time.Sleep(time.Second)
	storm(t, ts, "Crit", "critical", "firing", 40)
	require.Eventually(t, func() bool { return len(pd.Events()) == 47 }, 60*time.Second, 50*time.Millisecond)
	var order []byte // c critical, w warning, i info
	for _, e := range pd.Events() {
		switch {
		case e.DedupKey == "info-1":
			order = append(order, 'i')
		case strings.Contains(string(e.Raw), "Crit"):
			order = append(order, 'c')
		default:
			order = append(order, 'w')
		}
	}
	t.Logf("order: %s", order)
	first := strings.IndexByte(string(order), 'c')
	require.GreaterOrEqual(t, first, 0)
	// After the first critical, the criticals go one after another; the
	// turn granted before they came (one warning) may go among them.
	rest := string(order[first:])
	require.LessOrEqual(t, strings.Count(rest[:strings.LastIndexByte(rest, 'c')], "w"), 1, "warnings among the criticals: %s", order)
	require.Greater(t, strings.IndexByte(string(order), 'i'), strings.LastIndexByte(string(order), 'c'), "the info goes after every critical: %s", order)
}
