// Package deploy holds the files the demo stack and operators use —
// Prometheus rules and config, Alertmanager config, the Grafana dashboard —
// and the tests that keep them valid against the real tools and a live
// alertfan.
package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/receiver"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

func run(t *testing.T, dir, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %v:\n%s", bin, args, out)
	return string(out)
}

func TestPrometheusRules(t *testing.T) {
	promtool := testenv.Binary(t, "promtool")
	out := run(t, "prometheus", promtool, "check", "rules", "alertfan.rules.yml", "demo.rules.yml")
	require.Contains(t, out, "SUCCESS: 11 rules found")
	run(t, "prometheus", promtool, "test", "rules", "alertfan.rules.test.yml")
}

func TestPrometheusConfig(t *testing.T) {
	promtool := testenv.Binary(t, "promtool")
	run(t, "prometheus", promtool, "check", "config", "--syntax-only", "prometheus.yml")
}

func TestAlertmanagerConfig(t *testing.T) {
	amtool := testenv.Binary(t, "amtool")
	dir := t.TempDir()
	b, err := os.ReadFile("alertmanager/alertmanager.yml")
	require.NoError(t, err)
	abs, err := filepath.Abs("secrets/alertmanager_pd_key")
	require.NoError(t, err)
	cfg := strings.ReplaceAll(string(b), "/etc/alertmanager/secrets/alertmanager_pd_key", abs)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "am.yml"), []byte(cfg), 0o600))
	run(t, dir, amtool, "check-config", filepath.Join(dir, "am.yml"))
}

func TestDockerCompose(t *testing.T) {
	dc := testenv.Binary(t, "docker-compose")
	out := run(t, "..", dc, "config", "--services")
	for _, s := range []string{"alertfan", "demo-targets", "prometheus", "alertmanager", "grafana"} {
		require.Contains(t, out, s)
	}
	out = run(t, "..", dc, "--profile", "postgres", "config", "--services")
	require.Contains(t, out, "alertfan-postgres")
	require.Contains(t, out, "postgres")
	run(t, "..", dc, "config", "-q")
}

// The compose stack's alertfan configs must load as they are.
func TestAlertfanConfigs(t *testing.T) {
	for _, f := range []string{"../config.example.yml", "alertfan/config.postgres.yml"} {
		dir := t.TempDir()
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "deploy"), 0o755))
		require.NoError(t, os.Symlink(mustAbs(t, "secrets"), filepath.Join(dir, "deploy", "secrets")))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "c.yml"), b, 0o600))
		require.NoError(t, receiver.CheckConfig(context.Background(), filepath.Join(dir, "c.yml"), false, io.Discard), f)
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	require.NoError(t, err)
	return a
}

var metricName = regexp.MustCompile(`\b(alertfan_[a-z0-9_]+|process_[a-z0-9_]+|go_[a-z0-9_]+)\b`)

// Every panel's query must use metrics alertfan really exports: checked
// against the /metrics of a live alertfan with PagerDuty and Backlog targets.
func TestDashboardMetricsExist(t *testing.T) {
	b, err := os.ReadFile("grafana/alertfan.json")
	require.NoError(t, err)
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(b, &dash))
	require.Equal(t, "alertfan", dash.UID)
	require.GreaterOrEqual(t, len(dash.Panels), 12)

	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	bl := sinkstest.NewBacklog("k")
	defer bl.Close()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`storage:
  path: %s
route:
  receiver: both
  routes:
    - matchers: ['x="drop"']
      receiver: nothing
receivers:
  - name: nothing
  - name: both
    pagerduty_configs:
      - routing_key: 0123456789abcdef0123456789abcdef
        url: %s
    backlog_configs:
      - api_url: %s
        api_key: k
        project: OPS
        issue_type: Bug
`, filepath.Join(dir, "a.db"), pd.EventsURL(), bl.URL)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "c.yml"), []byte(cfg), 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- receiver.Run(ctx, receiver.Options{ConfigFile: filepath.Join(dir, "c.yml"), ListenAddresses: []string{"127.0.0.1:0"}, OnListen: func(a net.Addr) { addrc <- a }})
	}()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatal(err)
	case <-time.After(20 * time.Second):
		t.Fatal("alertfan did not start")
	}
	defer func() { cancel(); <-done }()
	// One store-backed scrape after a commit, so every family is present.
	resp, err := http.Post("http://"+addr.String()+"/webhook", "application/json", strings.NewReader(
		`{"version":"4","groupKey":"g","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A"},"startsAt":"2026-01-01T00:00:00Z"}]}`))
	require.NoError(t, err)
	resp.Body.Close()
	resp, err = http.Get("http://" + addr.String() + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	exported := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i > 0 {
			name = line[:i]
		}
		exported[name] = true
	}
	var missing []string
	used := 0
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				used++
				if !exported[m] {
					missing = append(missing, p.Title+": "+m)
				}
			}
		}
	}
	sort.Strings(missing)
	require.Empty(t, missing, "dashboard queries use metrics alertfan does not export")
	require.Greater(t, used, 15)
}

// The Dockerfile's build, run here without Docker: the same go build line,
// taken from the Dockerfile, makes a static binary whose `version` and
// alertfan_build_info show the stamped version.
func TestDockerfileBuildStampsVersion(t *testing.T) {
	df, err := os.ReadFile("../Dockerfile")
	require.NoError(t, err)
	text := strings.ReplaceAll(string(df), "\\\n", " ")
	m := regexp.MustCompile(`RUN (CGO_ENABLED=0 go build .*?\./cmd/alertfan)\s`).FindStringSubmatch(text)
	require.NotNil(t, m, "Dockerfile has no CGO_ENABLED=0 go build of ./cmd/alertfan")
	for _, want := range []string{"USER 65532", "VOLUME [\"/data\"]", "EXPOSE 9095", "HEALTHCHECK", "alertfan\", \"healthcheck\""} {
		require.Contains(t, string(df), want)
	}
	out := filepath.Join(t.TempDir(), "alertfan")
	cmdline := strings.NewReplacer("${VERSION}", "9.8.7", "${REVISION}", "abc123", "${BUILD_DATE}", "20261128", "/out/alertfan", out).Replace(m[1])
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Dir = ".."
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s\n%s", cmdline, b)
	ver, err := exec.Command(out, "version").CombinedOutput()
	require.NoError(t, err)
	require.Contains(t, string(ver), "version 9.8.7")
	require.Contains(t, string(ver), "revision: abc123")
	if f, err := exec.LookPath("file"); err == nil {
		info, _ := exec.Command(f, out).CombinedOutput()
		require.Contains(t, string(info), "statically linked")
	}
	// alertfan_build_info carries it too.
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "c.yml"), []byte("route:\n  receiver: r\nreceivers:\n  - name: r\n"), 0o600))
	// Port 0: the address is the one its "Listening on" line names.
	p := exec.Command(out, "--config.file=c.yml", "--web.listen-address=127.0.0.1:0")
	p.Dir = dir
	logs := &testenv.LogBuffer{}
	p.Stdout, p.Stderr = logs, logs
	require.NoError(t, p.Start())
	defer func() { p.Process.Kill(); p.Wait() }() //nolint:errcheck
	listening := regexp.MustCompile(`msg="Listening on" address=(\S+)`)
	require.Eventually(t, func() bool {
		m := listening.FindStringSubmatch(logs.String())
		if m == nil {
			return false
		}
		resp, err := http.Get("http://" + m[1] + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `alertfan_build_info{`) && strings.Contains(string(b), `version="9.8.7"`)
	}, 20*time.Second, 100*time.Millisecond)
}
