package receiver

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// routesTestConfig has a tree with continue, a PagerDuty target and a
// Backlog target; nothing is called unless --online.
func routesTestConfig(t *testing.T, backlogURL string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "config.yml")
	cfg := `
route:
  receiver: default
  routes:
    - matchers: ['severity="critical"']
      receiver: oncall
    - matchers: ['team="db"', 'severity=~"warning|info"']
      receiver: db-tickets
      continue: true
    - matchers: ['team="db"']
      receiver: db-chat
receivers:
  - name: default
  - name: db-chat
  - name: oncall
    pagerduty_configs:
      - routing_key: ` + testRoutingKey + `
        url: https://events.pagerduty.com/v2/enqueue
        mode: alert
  - name: db-tickets
    backlog_configs:
      - api_url: ` + backlogURL + `
        api_key: ` + backlogKey + `
        project: OPS
        issue_type: Bug
        priority: '{{ if eq .CommonLabels.severity "warning" }}Normal{{ else }}Low{{ end }}'
        assignee: oncall
        custom_fields:
          Team: '{{ .CommonLabels.team }}'
`
	require.NoError(t, os.WriteFile(file, []byte(cfg), 0o600))
	return file
}

var testStart = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

func TestRoutesTestCLI(t *testing.T) {
	cfg := routesTestConfig(t, "https://example.backlog.com")
	webhook := filepath.Join(t.TempDir(), "webhook.json")
	require.NoError(t, os.WriteFile(webhook, sinkstest.Webhook("am", `{}:{alertname="DiskFull"}`, map[string]string{"alertname": "DiskFull"},
		sinkstest.NamedAlert("DiskFull", "critical", "db-1", "firing", testStart),
		sinkstest.NamedAlert("DiskFull", "warning", "db-2", "firing", testStart)), 0o600))
	bad := filepath.Join(t.TempDir(), "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"version":"4","alerts":[{"status":"open","labels":{"a":"b"}}]}`), 0o600))
	cases := []struct {
		name   string
		o      RoutesTestOptions
		golden string // testdata/routestest/<golden>; "" checks out only
		out    string // in the output
		err    string // in the error; "" is success
		usage  bool   // the error is a *UsageError (exit 2)
	}{
		{name: "receivers", o: RoutesTestOptions{Labels: []string{"severity=critical", "team=db"}}, out: "oncall\n"},
		{name: "quoted value", o: RoutesTestOptions{Labels: []string{`severity="warning"`, "team=db"}}, out: "db-tickets,db-chat\n"},
		{name: "verify match", o: RoutesTestOptions{Labels: []string{"severity=warning", "team=db"}, Verify: "db-chat,db-tickets"}, out: "db-tickets,db-chat\n"},
		{name: "verify mismatch", o: RoutesTestOptions{Labels: []string{"severity=warning", "team=db"}, Verify: "db-tickets"},
			out: "WARNING: Expected receivers did not match resolved receivers.", err: ErrReceiversMismatch.Error()},
		{name: "verify mismatch extra", o: RoutesTestOptions{Labels: []string{"severity=critical"}, Verify: "oncall,default"}, err: ErrReceiversMismatch.Error()},
		{name: "tree", o: RoutesTestOptions{Labels: []string{"severity=info", "team=db"}, Tree: true}, golden: "tree.golden"},
		{name: "render pagerduty", o: RoutesTestOptions{Labels: []string{"alertname=DiskFull", "severity=critical", "instance=db-1"},
			Annotations: []string{"summary=Disk /var is 97% full", `description="line one\nline two"`}, Render: true}, golden: "render-pagerduty.golden"},
		{name: "render backlog offline", o: RoutesTestOptions{Labels: []string{"alertname=DiskFull", "severity=warning", "team=db"},
			Annotations: []string{"summary=Disk /var is 90% full"}, Render: true}, golden: "render-backlog-offline.golden"},
		{name: "render resolved", o: RoutesTestOptions{Labels: []string{"alertname=DiskFull", "severity=warning", "team=db"}, Status: "resolved", Render: true},
			out: "no call: resolved: an open issue is closed; nothing is created"},
		{name: "webhook file", o: RoutesTestOptions{AlertsFile: webhook, Render: true}, golden: "render-webhook.golden"},
		{name: "no labels", o: RoutesTestOptions{}, err: "no labels", usage: true},
		{name: "bad label", o: RoutesTestOptions{Labels: []string{"novalue"}}, err: `label "novalue"`, usage: true},
		{name: "regex label", o: RoutesTestOptions{Labels: []string{"team=~db"}}, err: "labels are not matchers", usage: true},
		{name: "bad label name", o: RoutesTestOptions{Labels: []string{"=c"}}, err: `label "=c"`, usage: true},
		{name: "bad annotation", o: RoutesTestOptions{Labels: []string{"a=b"}, Annotations: []string{"summary"}}, err: `--annotation "summary": want name=value`, usage: true},
		{name: "bad status", o: RoutesTestOptions{Labels: []string{"a=b"}, Status: "open"}, err: `--status: must be "firing" or "resolved"`, usage: true},
		{name: "file and labels", o: RoutesTestOptions{Labels: []string{"a=b"}, AlertsFile: webhook}, err: "not both", usage: true},
		{name: "missing file", o: RoutesTestOptions{AlertsFile: "/nonexistent/webhook.json"}, err: "no such file", usage: true},
		{name: "bad file", o: RoutesTestOptions{AlertsFile: bad}, err: `alerts[0].status: must be "firing" or "resolved"`, usage: true},
		{name: "not JSON", o: RoutesTestOptions{AlertsFile: cfg}, err: "invalid JSON", usage: true},
		{name: "bad config", o: RoutesTestOptions{ConfigFile: webhook, Labels: []string{"a=b"}}, err: "webhook.json"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.o.ConfigFile == "" {
				c.o.ConfigFile = cfg
			}
			c.o.Now = testStart
			var out bytes.Buffer
			err := RoutesTest(context.Background(), c.o, &out)
			if c.err == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, c.err)
				var ue *UsageError
				require.Equal(t, c.usage, errors.As(err, &ue), "usage error (exit 2)")
			}
			require.NotContains(t, out.String(), testRoutingKey)
			require.NotContains(t, out.String(), backlogKey)
			if c.out != "" {
				require.Contains(t, out.String(), c.out)
			}
			if c.golden != "" {
				goldenFile(t, filepath.Join("testdata", "routestest", c.golden), out.String())
			}
		})
	}
}

// TestRoutesTestOnline resolves the Backlog names through the fake and
// calls nothing that writes.
func TestRoutesTestOnline(t *testing.T) {
	bl := sinkstest.NewBacklog(backlogKey)
	defer bl.Close()
	var out bytes.Buffer
	err := RoutesTest(context.Background(), RoutesTestOptions{ConfigFile: routesTestConfig(t, bl.URL), Now: testStart,
		Labels: []string{"alertname=DiskFull", "severity=warning", "team=db"}, Annotations: []string{"summary=Disk /var is 90% full"},
		Render: true, Online: true}, &out)
	require.NoError(t, err)
	got := strings.ReplaceAll(out.String(), bl.URL, "http://BACKLOG")
	got = regexp.MustCompile(`alertfan-[0-9a-f]{24}`).ReplaceAllString(got, "alertfan-MARKER")
	goldenFile(t, filepath.Join("testdata", "routestest", "render-backlog-online.golden"), got)
	for _, c := range bl.Calls() {
		require.Equal(t, "GET", c.Method, "online rendering only reads: %s %s", c.Method, c.Path)
	}
	require.Empty(t, bl.Issues())
}

var updateGolden = flag.Bool("update", false, "rewrite golden files")

// goldenFile compares got with a file under testdata; -update rewrites it.
func goldenFile(t *testing.T, path, got string) {
	t.Helper()
	if *updateGolden {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -run RoutesTest -update to create %s", path)
	require.Equal(t, string(want), got)
}
