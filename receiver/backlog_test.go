package receiver

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

const backlogKey = "backlog-api-key-for-tests"

func backlogConfig(url, extra string) string {
	return fmt.Sprintf(`
route:
  receiver: tickets
receivers:
  - name: tickets
    backlog_configs:
      - api_url: %s
        api_key: %s
        project: OPS
        issue_type: Bug
        resolution: Fixed
        rate_limit_per_minute: 60000
%s`, url, backlogKey, extra)
}

func alertAt(status string, start time.Time) []byte {
	return sinkstest.Webhook("tickets", `{}:{alertname="DiskFull"}`, map[string]string{"alertname": "DiskFull"},
		sinkstest.NamedAlert("DiskFull", "critical", "db-1", status, start))
}

func waitIssues(t *testing.T, b *sinkstest.Backlog, pred func([]sinkstest.BacklogIssue) bool) []sinkstest.BacklogIssue {
	t.Helper()
	var is []sinkstest.BacklogIssue
	require.Eventually(t, func() bool { is = b.Issues(); return pred(is) }, 20*time.Second, 10*time.Millisecond)
	return is
}

func TestBacklogLifecycle(t *testing.T) {
	start := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name  string
		extra string
		steps []string // firing | resolved | wait
		check func(t *testing.T, b *sinkstest.Backlog, is []sinkstest.BacklogIssue)
	}{
		{"firing creates one issue", "", []string{"firing"}, func(t *testing.T, b *sinkstest.Backlog, is []sinkstest.BacklogIssue) {
			require.Len(t, is, 1)
			require.Equal(t, "OPS-1", is[0].Key)
			require.Equal(t, "Open", b.StatusName(is[0].StatusID))
			require.Equal(t, b.Priorities["High"], is[0].PriorityID, "critical maps to High by default")
			require.Contains(t, is[0].Summary, "DiskFull")
		}},
		{"repeat while open does nothing", "", []string{"firing", "firing", "firing"}, func(t *testing.T, b *sinkstest.Backlog, is []sinkstest.BacklogIssue) {
			require.Len(t, is, 1)
			require.Empty(t, is[0].Comments)
		}},
		{"repeat with on_repeat comment comments on a change, not on a resend", "        on_repeat: comment\n", []string{"firing", "firing", "changed"}, func(t *testing.T, b *sinkstest.Backlog, is []sinkstest.BacklogIssue) {
			require.Len(t, is, 1)
			require.Len(t, is[0].Comments, 1)
			require.Contains(t, is[0].Comments[0], "Still firing")
		}},
		{"resolve closes with resolution", "", []string{"firing", "resolved"}, func(t *testing.T, b *sinkstest.Backlog, is []sinkstest.BacklogIssue) {
			require.Len(t, is, 1)
			require.Equal(t, "Closed", b.StatusName(is[0].StatusID))
			require.NotNil(t, is[0].Resolution, "resolution Fixed (id 0) must be sent")
			require.Equal(t, b.Resolutions["Fixed"], *is[0].Resolution)
			require.Contains(t, is[0].Comments[0], "Resolved at")
		}},
		{"resolve comments", "        on_resolved: comment\n", []string{"firing", "resolved"}, func(t *testing.T, b *sinkstest.Backlog, is []sinkstest.BacklogIssue) {
			require.Len(t, is, 1)
			require.Equal(t, "Open", b.StatusName(is[0].StatusID))
			require.Len(t, is[0].Comments, 1)
		}},
		{"resolve does nothing", "        on_resolved: none\n", []string{"firing", "resolved"}, func(t *testing.T, b *sinkstest.Backlog, is []sinkstest.BacklogIssue) {
			require.Len(t, is, 1)
			require.Equal(t, "Open", b.StatusName(is[0].StatusID))
			require.Empty(t, is[0].Comments)
		}},
		{"stale firing after the resolve changes nothing", "", []string{"firing", "resolved", "firing"}, func(t *testing.T, b *sinkstest.Backlog, is []sinkstest.BacklogIssue) {
			require.Len(t, is, 1)
			require.Equal(t, "Closed", b.StatusName(is[0].StatusID))
			require.Len(t, is[0].Comments, 1)
		}},
		{"firing again within reopen_within reopens", "", []string{"firing", "resolved", "refire"}, func(t *testing.T, b *sinkstest.Backlog, is []sinkstest.BacklogIssue) {
			require.Len(t, is, 1)
			require.Equal(t, "Open", b.StatusName(is[0].StatusID))
			require.Len(t, is[0].Comments, 2)
			require.Contains(t, is[0].Comments[1], "Firing again")
		}},
		{"firing again after reopen_within opens a new issue", "        reopen_within: 1ms\n", []string{"firing", "resolved", "wait", "refire"}, func(t *testing.T, b *sinkstest.Backlog, is []sinkstest.BacklogIssue) {
			require.Len(t, is, 2)
			require.Equal(t, "Closed", b.StatusName(is[0].StatusID))
			require.Equal(t, "Open", b.StatusName(is[1].StatusID))
		}},
		{"firing again after a comment-resolve comments", "        on_resolved: comment\n", []string{"firing", "resolved", "refire"}, func(t *testing.T, b *sinkstest.Backlog, is []sinkstest.BacklogIssue) {
			require.Len(t, is, 1)
			require.Len(t, is[0].Comments, 2)
		}},
		{"resolved alone creates nothing", "", []string{"resolved"}, func(t *testing.T, b *sinkstest.Backlog, is []sinkstest.BacklogIssue) {
			require.Empty(t, is)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := sinkstest.NewBacklog(backlogKey)
			defer b.Close()
			ts := startServer(t, backlogConfig(b.URL, c.extra))
			for _, st := range c.steps {
				if st == "wait" {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				body := alertAt(st, start)
				switch st {
				case "refire": // a new occurrence: a later startsAt
					body = alertAt("firing", start.Add(2*time.Minute))
				case "changed":
					a := sinkstest.NamedAlert("DiskFull", "critical", "db-1", "firing", start)
					a.Annotations["summary"] = "DiskFull on db-1: 99%"
					body = sinkstest.Webhook("tickets", `{}:{alertname="DiskFull"}`, map[string]string{"alertname": "DiskFull"}, a)
				}
				code, resp := ts.post(t, "/webhook", body)
				require.Equal(t, 200, code, "%v", resp)
				settle(t, ts)
			}
			c.check(t, b, b.Issues())
		})
	}
}

func TestBacklogOutOfOrderEndsInTheRightState(t *testing.T) {
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	// The create is slow: the resolve lands while it is in flight.
	release := make(chan struct{})
	b.AfterCreate = func(*sinkstest.BacklogIssue) { <-release }
	ts := startServer(t, backlogConfig(b.URL, ""))
	start := time.Now().UTC()
	code, _ := ts.post(t, "/webhook", alertAt("firing", start))
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool { return len(b.Issues()) == 1 }, 10*time.Second, 5*time.Millisecond)
	code, _ = ts.post(t, "/webhook", alertAt("resolved", start))
	require.Equal(t, 200, code)
	close(release)
	settle(t, ts)
	is := b.Issues()
	require.Len(t, is, 1)
	require.Equal(t, "Closed", b.StatusName(is[0].StatusID), "the resolve that arrived mid-create still closes the issue")
}

func TestBacklogFiftyRepeatsOneIssue(t *testing.T) {
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	ts := startServer(t, backlogConfig(b.URL, ""))
	start := time.Now().UTC()
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _ := ts.post(t, "/webhook", alertAt("firing", start))
			require.Equal(t, 200, code)
		}()
	}
	wg.Wait()
	settle(t, ts)
	require.Len(t, b.Issues(), 1)
}

// Two alertfan replicas share one PostgreSQL; an Alertmanager HA pair sends
// the same alert to both at once.
func TestBacklogTwoReplicasOneIssue(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	var replicas []*testServer
	for i := 0; i < 2; i++ {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "dsn"), []byte(dsn), 0o600))
		replicas = append(replicas, startServerIn(t, dir, "storage:\n  driver: postgres\n  dsn_file: dsn\n"+backlogConfig(b.URL, "")))
	}
	start := time.Now().UTC()
	for round := 0; round < 10; round++ {
		var wg sync.WaitGroup
		for _, r := range replicas {
			for k := 0; k < 3; k++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					code, _ := r.post(t, "/webhook", alertAt("firing", start))
					require.Equal(t, 200, code)
				}()
			}
		}
		wg.Wait()
	}
	for _, r := range replicas {
		settle(t, r)
	}
	require.Len(t, b.Issues(), 1)
	// The resolve through either replica closes it.
	code, _ := replicas[1].post(t, "/webhook", alertAt("resolved", start))
	require.Equal(t, 200, code)
	waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool {
		return len(is) == 1 && b.StatusName(is[0].StatusID) == "Closed"
	})
}

func TestBacklog429StormStaysUnderTheRate(t *testing.T) {
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	// The fake allows 10 writes per 2-second window and answers 429 with
	// X-RateLimit-Reset above that; alertfan is configured for 240/min
	// (4/s, 8 per window), so its own pace never trips it once running.
	b.UpdateLimit, b.Window = 10, 2*time.Second
	b.Script(sinkstest.BacklogResponse{Status: 429, Body: `{"errors":[{"message":"Too many requests.","code":13,"moreInfo":""}]}`,
		Header: map[string]string{"X-RateLimit-Reset": fmt.Sprint(time.Now().Add(time.Second).Unix())}})
	ts := startServer(t, strings.Replace(backlogConfig(b.URL, ""), "rate_limit_per_minute: 60000", "rate_limit_per_minute: 240", 1))
	start := time.Now().UTC()
	for i := 0; i < 4; i++ {
		as := make([]sinkstest.WebhookAlert, 5)
		for j := range as {
			as[j] = sinkstest.NamedAlert("Storm", "warning", fmt.Sprintf("h-%d-%d", i, j), "firing", start)
		}
		code, _ := ts.post(t, "/webhook", sinkstest.Webhook("tickets", "g", nil, as...))
		require.Equal(t, 200, code)
	}
	waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool { return len(is) == 20 })
	var writes []time.Time
	for _, c := range b.Calls() {
		if c.Method != http.MethodGet && c.Status != 429 {
			writes = append(writes, c.At)
		}
	}
	// Never above the configured rate: with a burst of one, any window of
	// length w holds at most 1 + w·rate calls.
	for i := range writes {
		n := 0
		for j := i; j < len(writes) && writes[j].Sub(writes[i]) < 2*time.Second; j++ {
			n++
		}
		require.LessOrEqual(t, n, 9, "more than 240/min")
	}
	require.Equal(t, 1, b.CountStatus(429), "only the scripted 429; the proactive limit prevents the rest")
}

func TestBacklog400IsDeadLetteredWithMessage(t *testing.T) {
	// A summary that renders blank for this alert is no dead letter: it
	// takes the default summary (Backlog refuses a blank one).
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	ts := startServer(t, backlogConfig(b.URL, "        summary: '{{ if .CommonLabels.empty }}x{{ end }}'\n"))
	code, _ := ts.post(t, "/webhook", alertAt("firing", time.Now().UTC()))
	require.Equal(t, 200, code)
	waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool { return len(is) == 1 && strings.TrimSpace(is[0].Summary) != "" })
	_, m := ts.get(t, "/metrics")
	require.Contains(t, m, `alertfan_backlog_fallbacks_total{field="summary",receiver="tickets"} 1`)
	var out bytes.Buffer

	// A 400 from Backlog itself keeps Backlog's message.
	b2 := sinkstest.NewBacklog(backlogKey)
	defer b2.Close()
	b2.Priorities = map[string]int64{"High": 2, "Normal": 3}
	ts2 := startServer(t, backlogConfig(b2.URL, ""))
	// The first 400 makes alertfan resolve the space's names again and try
	// once more; the second is a dead letter.
	bad := sinkstest.BacklogResponse{Status: 400, Body: `{"errors":[{"message":"Please input valid priorityId.","code":7,"moreInfo":""}]}`}
	b2.ScriptWrites(bad, bad)
	code, _ = ts2.post(t, "/webhook", alertAt("firing", time.Now().UTC()))
	require.Equal(t, 200, code)
	admin2 := &AdminClient{URL: ts2.URL}
	require.Eventually(t, func() bool {
		out.Reset()
		require.NoError(t, admin2.List(context.Background(), ListOptions{State: "dead"}, &out))
		return strings.Contains(out.String(), "Please input valid priorityId")
	}, 10*time.Second, 20*time.Millisecond)
	require.NotContains(t, out.String(), backlogKey)
	require.NotContains(t, ts2.logs.String(), backlogKey, "the API key must never be logged")
}

func TestOneRouteToBothOutageOfOneDoesNotDelayTheOther(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	cfg := fmt.Sprintf(`
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
`, testRoutingKey, pd.EventsURL(), b.URL, backlogKey)
	ts := startServer(t, cfg)
	start := time.Now().UTC()

	b.SetDown(true)
	code, _ := ts.post(t, "/webhook", alertAt("firing", start))
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool { return len(pd.Events()) == 1 }, 5*time.Second, 5*time.Millisecond, "Backlog down must not delay PagerDuty")
	b.SetDown(false)
	waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool { return len(is) == 1 })

	pd.SetDown(true)
	code, _ = ts.post(t, "/webhook", alertAt("resolved", start))
	require.Equal(t, 200, code)
	waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool { return b.StatusName(is[0].StatusID) == "Closed" })
	pd.SetDown(false)
	require.Eventually(t, func() bool { return len(eventsFor(pd, "resolve")) == 1 }, 20*time.Second, 10*time.Millisecond)
}

func TestBacklogNamesResolvedAtReload(t *testing.T) {
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	ts := startServer(t, backlogConfig(b.URL, ""))
	good, err := os.ReadFile(ts.cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(ts.cfg, bytes.Replace(good, []byte("issue_type: Bug"), []byte("issue_type: Bgu"), 1), 0o600))
	code, body := ts.postRaw(t, "/-/reload")
	require.Equal(t, 500, code)
	require.Contains(t, body, `issue_type: "Bgu" does not exist in Backlog; valid names: "Bug", "Other", "Request", "Task"`)
	_, m := ts.get(t, "/metrics")
	require.Contains(t, m, "alertfan_config_last_reload_successful 0")
	require.NoError(t, os.WriteFile(ts.cfg, bytes.Replace(good, []byte("issue_type: Bug"), []byte("issue_type: Task"), 1), 0o600))
	code, body = ts.postRaw(t, "/-/reload")
	require.Equal(t, 200, code, body)
	code, _ = ts.post(t, "/webhook", alertAt("firing", time.Now().UTC()))
	require.Equal(t, 200, code)
	is := waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool { return len(is) == 1 })
	require.Equal(t, b.IssueTypes["Task"], is[0].IssueTypeID)
}

// TestBacklogKeyRevokedAtRunTimeIsHeld: the API key is revoked while
// alertfan runs. Backlog answers every call 401 (code 11); that holds the
// target's work as a target that is down (alertfan_target_up 0, one
// warning with reason unauthorized, one call at a time probing) instead
// of dead-lettering each alert, and the work goes out on its own once the
// key works again.
func TestBacklogKeyRevokedAtRunTimeIsHeld(t *testing.T) {
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	ts := startServer(t, backlogConfig(b.URL, ""))
	b.SetAPIKey("rotated-by-an-administrator")
	start := time.Now().UTC()
	for _, name := range []string{"DiskFull", "CPUHot", "MemLow"} {
		code, _ := ts.post(t, "/webhook", sinkstest.Webhook("tickets", `{}:{alertname="`+name+`"}`, map[string]string{"alertname": name},
			sinkstest.NamedAlert(name, "critical", "db-1", "firing", start)))
		require.Equal(t, 200, code)
	}
	require.Eventually(t, func() bool {
		_, m := ts.get(t, "/metrics")
		return strings.Contains(m, `alertfan_target_up{target="tickets/backlog/0"} 0`)
	}, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return b.CountStatus(http.StatusUnauthorized) >= 2 }, 10*time.Second, 20*time.Millisecond)
	admin := &AdminClient{URL: ts.URL}
	var out bytes.Buffer
	require.NoError(t, admin.List(context.Background(), ListOptions{State: "dead"}, &out))
	require.NotContains(t, out.String(), "tickets/backlog/0", "a refused key must not dead-letter the alerts")
	_, m := ts.get(t, "/metrics")
	require.Contains(t, m, `reason="unauthorized"`)
	require.Contains(t, ts.logs.String(), "Target is down")
	require.Contains(t, ts.logs.String(), "unauthorized")

	b.SetAPIKey(backlogKey)
	waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool { return len(is) == 3 })
	require.Eventually(t, func() bool {
		_, m := ts.get(t, "/metrics")
		return strings.Contains(m, `alertfan_target_up{target="tickets/backlog/0"} 1`)
	}, 10*time.Second, 20*time.Millisecond)
	require.NotContains(t, ts.logs.String(), backlogKey)
}

// TestBacklogConfigErrorFoundAtADeliveryIsHeld: Backlog is unreachable at
// start, so a name the config gets wrong (close_status) shows only at the
// first delivery. The alerts are held as for a target down, never
// dead-lettered, and go out once a reload fixes the config.
func TestBacklogConfigErrorFoundAtADeliveryIsHeld(t *testing.T) {
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	b.SetDown(true)
	ts := startServer(t, backlogConfig(b.URL, "        close_status: Gone\n"))
	b.SetDown(false)
	start := time.Now().UTC()
	for _, name := range []string{"DiskFull", "CPUHot"} {
		code, _ := ts.post(t, "/webhook", sinkstest.Webhook("tickets", `{}:{alertname="`+name+`"}`, map[string]string{"alertname": name},
			sinkstest.NamedAlert(name, "critical", "db-1", "firing", start)))
		require.Equal(t, 200, code)
	}
	require.Eventually(t, func() bool {
		_, m := ts.get(t, "/metrics")
		return strings.Contains(m, `alertfan_target_up{target="tickets/backlog/0"} 0`)
	}, 10*time.Second, 20*time.Millisecond)
	admin := &AdminClient{URL: ts.URL}
	var out bytes.Buffer
	require.NoError(t, admin.List(context.Background(), ListOptions{State: "dead"}, &out))
	require.NotContains(t, out.String(), "tickets/backlog/0", "a config error must not dead-letter the alerts")
	require.Contains(t, ts.logs.String(), "misconfigured")
	require.Empty(t, b.Issues())

	require.NoError(t, os.WriteFile(ts.cfg, []byte(backlogConfig(b.URL, "")), 0o600))
	code, body := ts.post(t, "/-/reload", nil)
	require.Equal(t, 200, code, "%v", body)
	waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool { return len(is) == 2 })
}

// A rolling reload on PostgreSQL that inserts a destination before
// another: the replica not yet reloaded answers 503 (Retry-After) for
// what it would write under the moved id instead of sending it to the
// destination it still has there, and takes it again once reloaded.
func TestRollingReloadInsertingADestination(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	const newKey = "fedcba9876543210fedcba9876543210"
	oldCfg := "storage:\n  driver: postgres\n  dsn_file: dsn\n" + fastDelivery + pdConfig(pd.EventsURL(), "")
	newCfg := strings.Replace(oldCfg, "    pagerduty_configs:\n", "    pagerduty_configs:\n      - routing_key: "+newKey+"\n        url: "+pd.EventsURL()+"\n", 1)
	require.NotEqual(t, oldCfg, newCfg)
	var replicas []*testServer
	for range 2 {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "dsn"), []byte(dsn), 0o600))
		replicas = append(replicas, startServerIn(t, dir, oldCfg))
	}
	reload := func(ts *testServer) {
		require.NoError(t, os.WriteFile(ts.cfg, []byte(newCfg), 0o600))
		code, body := ts.postRaw(t, "/-/reload")
		require.Equal(t, 200, code, body)
	}
	reload(replicas[0])
	code, body := replicas[1].post(t, "/webhook", firing("Early", "h1"))
	require.Equal(t, 503, code, "%v", body)
	require.Contains(t, fmt.Sprint(body["error"]), "rolling reload")
	code, _ = replicas[0].post(t, "/webhook", firing("Reloaded", "h1"))
	require.Equal(t, 200, code)
	reload(replicas[1])
	code, _ = replicas[1].post(t, "/webhook", firing("Early", "h1")) // the sender's retry
	require.Equal(t, 200, code)
	for _, r := range replicas {
		settle(t, r)
	}
	keys := map[string][]string{} // routing key → dedup keys
	for _, e := range pd.Events() {
		keys[e.RoutingKey] = append(keys[e.RoutingKey], e.DedupKey)
	}
	require.Len(t, keys[newKey], 2, "each alert once at the inserted destination: %v", keys)
	require.Len(t, keys[testRoutingKey], 2, "each alert once at the old one: %v", keys)
	_, m := replicas[1].get(t, "/metrics")
	require.Contains(t, m, `alertfan_notifications_received_total{input="alertmanager",outcome="config_differs"} 1`)
}

// Backlog targets of two receivers writing to one project in one mode
// are allowed (different alerts may go to each), but an alert reaching
// both gets an issue from each: check-config and the log say so.
func TestSharedBacklogProjectIsWarned(t *testing.T) {
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	cfg := fmt.Sprintf(`
route:
  receiver: oncall
  routes:
    - matchers: ['severity="critical"']
      receiver: oncall
      continue: true
    - matchers: ['team="db"']
      receiver: db-team
receivers:
  - name: oncall
    backlog_configs:
      - {api_url: %[1]s, api_key: %[2]s, project: OPS, issue_type: Bug}
  - name: db-team
    backlog_configs:
      - {api_url: %[1]s, api_key: %[2]s, project: OPS, issue_type: Task}
`, b.URL, backlogKey)
	out, err := checkConfigFile(t, cfg)
	require.NoError(t, err, out)
	require.Contains(t, out, "WARNING: Backlog targets oncall/backlog/0, db-team/backlog/0 write to the same project in the same mode")
	out, err = checkConfigFile(t, strings.Replace(cfg, "issue_type: Task}", "issue_type: Task, mode: group}", 1))
	require.NoError(t, err, out)
	require.NotContains(t, out, "WARNING", "group mode keys issues by group: another destination")
}
