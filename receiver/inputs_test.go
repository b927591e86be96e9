package receiver

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

const senderKey = "R0UT1NGKEY0000000000000000000001"

func inputsConfig(pdURL, backlogURL string) string {
	return fmt.Sprintf(`
intake:
  bearer_token: mackerel-token-1
  events_per_second: 1000
  pagerduty:
    routing_keys:
      grafana: %s
  mackerel:
    route_other_events: false
route:
  receiver: both
  routes:
    - matchers: ['routing_key_name="grafana"']
      receiver: both
    - matchers: ['source="mackerel"']
      receiver: tickets
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
  - name: tickets
    backlog_configs:
      - api_url: %s
        api_key: %s
        project: OPS
        issue_type: Task
        rate_limit_per_minute: 60000
`, senderKey, testRoutingKey, pdURL, backlogURL, backlogKey, backlogURL, backlogKey)
}

func TestPagerDutyInputEndToEnd(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	ts := startServer(t, inputsConfig(pd.EventsURL(), b.URL))
	trigger := `{"routing_key":"` + senderKey + `","event_action":"trigger","dedup_key":"srv01/mysql","payload":{"summary":"DISK at 99%","source":"srv01","severity":"critical","class":"disk","custom_details":{"free":"1%"}},"client":"Grafana","client_url":"https://grafana.example"}`
	code, body := ts.post(t, "/v2/enqueue", []byte(trigger))
	require.Equal(t, 202, code, "%v", body)
	require.Equal(t, map[string]any{"status": "success", "message": "Event processed", "dedup_key": "srv01/mysql"}, body)
	require.Eventually(t, func() bool { return len(eventsFor(pd, "trigger")) == 1 && len(b.Issues()) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "srv01/mysql", eventsFor(pd, "trigger")[0].DedupKey, "the sender's dedup_key goes on to PagerDuty")

	// Acknowledge: to PagerDuty as acknowledge, to Backlog as a comment.
	code, _ = ts.post(t, "/v2/enqueue", []byte(`{"routing_key":"`+senderKey+`","event_action":"acknowledge","dedup_key":"srv01/mysql"}`))
	require.Equal(t, 202, code)
	require.Eventually(t, func() bool {
		is := b.Issues()
		return len(eventsFor(pd, "acknowledge")) == 1 && len(is[0].Comments) == 1
	}, 10*time.Second, 10*time.Millisecond)
	require.Contains(t, b.Issues()[0].Comments[0], "Acknowledged")

	// Resolve without payload routes like the trigger did.
	code, _ = ts.post(t, "/v2/enqueue", []byte(`{"routing_key":"`+senderKey+`","event_action":"resolve","dedup_key":"srv01/mysql"}`))
	require.Equal(t, 202, code)
	require.Eventually(t, func() bool {
		is := b.Issues()
		return len(eventsFor(pd, "resolve")) == 1 && b.StatusName(is[0].StatusID) == "Closed"
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "srv01/mysql", eventsFor(pd, "resolve")[0].DedupKey)

	// Change events go on as change events.
	code, body = ts.post(t, "/v2/change/enqueue", []byte(`{"routing_key":"`+senderKey+`","payload":{"summary":"Deploy v1.2.3","source":"ci"},"links":[{"href":"https://ci.example/1"}]}`))
	require.Equal(t, 202, code, "%v", body)
	require.Eventually(t, func() bool {
		for _, e := range pd.Events() {
			if e.Change {
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond)
	require.Len(t, b.Issues(), 1, "a change event opens no issue")

	// PagerDuty-shaped 400s.
	code, body = ts.post(t, "/v2/enqueue", []byte(`{"routing_key":"short","event_action":"trigger"}`))
	require.Equal(t, 400, code)
	require.Equal(t, "invalid event", body["status"])
	require.Equal(t, "Event object is invalid", body["message"])
	require.Contains(t, fmt.Sprint(body["errors"]), "should be 32 characters")
	require.Contains(t, fmt.Sprint(body["errors"]), "'payload' is missing")
	_, m := ts.get(t, "/metrics")
	require.NotContains(t, m, senderKey, "a routing key never becomes a label")
	require.NotContains(t, ts.logs.String(), senderKey)
}

func TestPagerDutyInputUnknownKeyNeedsToken(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	ts := startServer(t, inputsConfig(pd.EventsURL(), b.URL))
	ev := []byte(`{"routing_key":"UNKNOWNKEY0000000000000000000001","event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info"}}`)
	code, body := ts.post(t, "/v2/enqueue", ev)
	require.Equal(t, 401, code, "%v", body)
	code, _ = ts.post(t, "/v2/enqueue", ev, "Authorization", "Bearer mackerel-token-1")
	require.Equal(t, 202, code)
}

func TestPagerDutyInputRateLimit(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	ts := startServer(t, strings.Replace(inputsConfig(pd.EventsURL(), b.URL), "events_per_second: 1000", "events_per_second: 2", 1))
	codes := map[int]int{}
	for i := 0; i < 10; i++ {
		code, body := ts.post(t, "/v2/enqueue", []byte(fmt.Sprintf(`{"routing_key":"%s","event_action":"trigger","dedup_key":"k%d","payload":{"summary":"s","source":"h","severity":"info"}}`, senderKey, i)))
		codes[code]++
		if code == 429 {
			require.Equal(t, "throttle event", body["status"])
		}
	}
	require.Positive(t, codes[429])
	require.Positive(t, codes[202])
}

func TestMackerelEndToEnd(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	ts := startServer(t, inputsConfig(pd.EventsURL(), b.URL))
	alert, err := os.ReadFile("intake/testdata/mackerel_alert.json")
	require.NoError(t, err)
	ok, err := os.ReadFile("intake/testdata/mackerel_ok.json")
	require.NoError(t, err)
	host, err := os.ReadFile("intake/testdata/mackerel_host_status.json")
	require.NoError(t, err)

	code, _ := ts.post(t, "/mackerel", alert)
	require.Equal(t, 401, code, "Mackerel needs the token too")
	code, _ = ts.post(t, "/mackerel/wrong-token", alert)
	require.Equal(t, 401, code)
	code, body := ts.post(t, "/mackerel/mackerel-token-1", alert)
	require.Equal(t, 200, code, "%v", body)
	is := waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool { return len(is) == 1 })
	require.Contains(t, is[0].Summary, "loadavg5")
	require.Equal(t, b.IssueTypes["Task"], is[0].IssueTypeID, "routed to the tickets receiver")
	require.Empty(t, pd.Events(), "routed to Backlog only")

	code, _ = ts.post(t, "/mackerel", ok, "Authorization", "Basic "+basic("mackerel", "mackerel-token-1"))
	require.Equal(t, 200, code)
	waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool { return b.StatusName(is[0].StatusID) == "Closed" })

	code, body = ts.post(t, "/mackerel/mackerel-token-1", host)
	require.Equal(t, 200, code)
	require.Equal(t, true, body["ignored"])
	_, m := ts.get(t, "/metrics")
	require.Contains(t, m, `alertfan_notifications_received_total{input="mackerel",outcome="ignored"} 1`)
	require.NotContains(t, ts.logs.String(), "mackerel-token-1", "a token in the path must not be logged")
}

// Every fuzz corpus entry, posted to the real server: no 5xx, ever.
func TestCorpusNeverAnswers5xx(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	ts := startServer(t, inputsConfig(pd.EventsURL(), b.URL))
	paths := map[string]string{
		"FuzzDecodeAlertmanager": "/webhook",
		"FuzzDecodePagerDuty":    "/v2/enqueue",
		"FuzzDecodeMackerel":     "/mackerel/mackerel-token-1",
	}
	n := 0
	for dir, path := range paths {
		files, err := filepath.Glob(filepath.Join("intake/testdata/fuzz", dir, "*"))
		require.NoError(t, err)
		for _, f := range files {
			body := corpusBody(t, f)
			code, resp := ts.post(t, path, body, "Authorization", "Bearer mackerel-token-1")
			require.Less(t, code, 500, "%s: %v", f, resp)
			n++
		}
	}
	require.Greater(t, n, 50)
}

// corpusBody reads the []byte value of a go-fuzz corpus file.
func corpusBody(t *testing.T, file string) []byte {
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	lines := strings.SplitN(string(b), "\n", 2)
	require.Len(t, lines, 2)
	v := strings.TrimSpace(lines[1])
	v = strings.TrimSuffix(strings.TrimPrefix(v, "[]byte("), ")")
	s, err := unquoteGo(v)
	require.NoError(t, err, file)
	return []byte(s)
}
