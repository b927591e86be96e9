package receiver

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// previewConfig sends every alert to a PagerDuty and a Backlog target.
func previewConfig(pdURL, blURL string) string {
	return pdConfig(pdURL, fmt.Sprintf(`    backlog_configs:
      - api_url: %s
        api_key: %s
        project: OPS
        issue_type: Bug
        priority: High
        rate_limit_per_minute: 60000
`, blURL, backlogKey))
}

// TestPreviewIsWhatIsSent previews a webhook over real HTTP, checks that
// nothing was sent, then posts the same webhook and compares what the
// fakes received with the preview.
func TestPreviewIsWhatIsSent(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	bl := sinkstest.NewBacklog(backlogKey)
	defer bl.Close()
	ts := startServer(t, previewConfig(pd.EventsURL(), bl.URL))
	body := firing("DiskFull", "db-1")

	code, out := ts.post(t, "/api/v1/preview", body)
	require.Equal(t, 200, code, out)
	require.Equal(t, "success", out["status"])
	items := out["data"].([]any)
	require.Len(t, items, 2)
	pdItem, blItem := items[0].(map[string]any), items[1].(map[string]any)
	require.Equal(t, "oncall/pagerduty/0", pdItem["target"])
	require.Equal(t, "oncall", pdItem["receiver"])
	require.Equal(t, "pagerduty", pdItem["kind"])
	require.Equal(t, "oncall/backlog/0", blItem["target"])
	require.Equal(t, true, blItem["names_resolved"], "the running sink resolved the names at start")
	require.NotContains(t, fmt.Sprint(out), testRoutingKey)
	require.NotContains(t, fmt.Sprint(out), backlogKey)

	time.Sleep(300 * time.Millisecond)
	require.Empty(t, pd.Events(), "a preview sends nothing")
	require.Empty(t, bl.Issues(), "a preview creates nothing")
	_, queued := ts.get(t, "/api/v1/queue")
	require.JSONEq(t, `{"status":"success","data":[]}`, queued, "a preview queues nothing")

	code, out = ts.post(t, "/webhook", body)
	require.Equal(t, 200, code, out)
	require.Eventually(t, func() bool { return len(pd.Events()) == 1 && len(bl.Issues()) == 1 }, 20*time.Second, 20*time.Millisecond)
	want := strings.Replace(string(mustJSON(t, pdItem["payload"])), `"<secret>"`, `"`+testRoutingKey+`"`, 1)
	require.JSONEq(t, want, string(pd.Events()[0].Raw))
	var create url.Values
	for _, c := range bl.Calls() {
		if c.Method == "POST" && c.Path == "/api/v2/issues" {
			create = c.Form
		}
	}
	got := map[string]any{}
	for k, vs := range create {
		a := make([]any, len(vs))
		for i, v := range vs {
			a[i] = v
		}
		got[k] = a
	}
	require.Equal(t, blItem["payload"], got)
}

func TestPreviewInput(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	bl := sinkstest.NewBacklog(backlogKey)
	defer bl.Close()
	ts := startServer(t, previewConfig(pd.EventsURL(), bl.URL))
	cases := []struct {
		name, body string
		code       int
		err        string // in the error message
		items      int
	}{
		{"labels", `{"labels":{"alertname":"X","severity":"warning"},"annotations":{"summary":"s"}}`, 200, "", 2},
		{"resolved: PagerDuty resolves, Backlog creates nothing", `{"labels":{"alertname":"X"},"status":"resolved"}`, 200, "", 2},
		{"webhook", string(firing("A", "b")), 200, "", 2},
		{"no labels", `{"annotations":{"a":"b"}}`, 400, "labels: at least one label is required", 0},
		{"empty labels", `{"labels":{}}`, 400, "labels: at least one label is required", 0},
		{"bad status", `{"labels":{"a":"b"},"status":"open"}`, 400, `status: must be "firing" or "resolved"`, 0},
		{"labels not an object", `{"labels":"a=b"}`, 400, "labels: must be an object of strings", 0},
		{"unknown field", `{"lables":{"a":"b"}}`, 400, "lables: unknown field", 0},
		{"bad label name", `{"labels":{"":"b"}}`, 400, "labels: invalid label name", 0},
		{"not JSON", `labels: a=b`, 400, "invalid JSON", 0},
		{"empty body", ``, 400, "empty body", 0},
		{"webhook without version", `{"alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"2026-11-28T10:00:00Z"}]}`, 400, "version: must be \"4\"", 0},
		{"webhook bad alert", `{"version":"4","alerts":[{"status":"firing","labels":{},"startsAt":"x"}]}`, 400, "alerts[0].startsAt", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := ts.post(t, "/api/v1/preview", []byte(c.body))
			require.Equal(t, c.code, code, out)
			if c.err != "" {
				require.Equal(t, "error", out["status"])
				require.Contains(t, out["error"], c.err)
				return
			}
			require.Len(t, out["data"], c.items)
		})
	}
	code, out := ts.post(t, "/api/v1/preview", []byte(`{"labels":{"alertname":"X"},"status":"resolved"}`))
	require.Equal(t, 200, code)
	items := out["data"].([]any)
	require.Contains(t, items[0].(map[string]any)["payload"], "event_action")
	require.Contains(t, items[1].(map[string]any)["skip"], "nothing is created")
	require.Empty(t, pd.Events())
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(v))
	return []byte(b.String())
}
