package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// TestEndToEndWithPrometheusAndAlertmanager runs the compose stack's
// configuration with the real Prometheus and Alertmanager binaries on
// loopback ports (host names swapped for ports, intervals shortened), with
// alertfan and the fake destinations:
//
//   - a Prometheus rule fires → Alertmanager → alertfan → PagerDuty trigger
//     and a Backlog issue; it stops → PagerDuty resolve, Backlog closed;
//   - Alertmanager's pagerduty_configs pointed at alertfan is relayed to
//     PagerDuty field by field as the same Alertmanager sends it to
//     PagerDuty directly (only the routing key differs), and the alert
//     pages once (no second incident from its webhook copy);
//   - Prometheus scrapes alertfan (up == 1) and loads alertfan's own rules;
//   - with --web.config.file basic auth, Prometheus scrapes with
//     credentials and an anonymous request gets 401.
func TestEndToEndWithPrometheusAndAlertmanager(t *testing.T) {
	promBin := testenv.Binary(t, "prometheus")
	amBin := testenv.Binary(t, "prometheus-alertmanager", "alertmanager")
	// Debian's 0.25 by default; put another build first on PATH to compare
	// with it (the relay comparison was also run with 0.34.2).
	if v, err := exec.Command(amBin, "--version").CombinedOutput(); err == nil {
		t.Logf("Alertmanager: %s", strings.SplitN(string(v), "\n", 2)[0])
	}
	repo, err := filepath.Abs("../..")
	require.NoError(t, err)

	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	// pdDirect is PagerDuty as the same Alertmanager reaches it without
	// alertfan, to compare with what alertfan relays.
	pdDirect := sinkstest.NewPagerDuty()
	defer pdDirect.Close()
	bl := sinkstest.NewBacklog("demo-backlog-api-key")
	defer bl.Close()

	// A tiny exporter whose gauge drives the test's alert rule.
	var diskFull atomic.Int32
	diskFull.Store(1)
	exp := http.NewServeMux()
	exp.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "# TYPE e2e_disk_full gauge\ne2e_disk_full %d\n", diskFull.Load())
	})
	expLn, stopExp := serve(t, exp)
	defer stopExp()

	dir := t.TempDir()
	copyTree(t, filepath.Join(repo, "deploy", "secrets"), filepath.Join(dir, "deploy", "secrets"))

	// alertfan: config.example.yml, targets swapped for the fakes.
	cfg := readFile(t, filepath.Join(repo, "config.example.yml"))
	cfg = strings.ReplaceAll(cfg, "http://demo-targets:8080", pd.URL)
	cfg = strings.ReplaceAll(cfg, "http://demo-targets:8081", bl.URL)
	cfg = strings.Replace(cfg, "delivery:\n", "delivery:\n  poll_interval: 20ms\n", 1)
	writeFile(t, filepath.Join(dir, "config.yml"), cfg)
	af := startChild(t, dir, "")
	afAddr := af.addr
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("alertfan output:\n%s", lastLines(af.logs.String(), 30))
			t.Logf("PagerDuty attempts: %d via alertfan, %d direct", pd.Attempts(), pdDirect.Attempts())
			for _, is := range bl.Issues() {
				t.Logf("Backlog issue: %s", is.Summary)
			}
			for _, e := range pd.Events() {
				t.Logf("PagerDuty got: %s", e.Raw)
			}
			for _, e := range pdDirect.Events() {
				t.Logf("PagerDuty (direct) got: %s", e.Raw)
			}
		}
	})

	// A second alertfan behind exporter-toolkit basic auth.
	authDir := filepath.Join(dir, "auth")
	copyTree(t, filepath.Join(repo, "deploy", "secrets"), filepath.Join(authDir, "deploy", "secrets"))
	writeFile(t, filepath.Join(authDir, "config.yml"), cfg)
	hash, err := bcrypt.GenerateFromPassword([]byte("scrape-secret"), bcrypt.MinCost)
	require.NoError(t, err)
	writeFile(t, filepath.Join(authDir, "web.yml"), "basic_auth_users:\n  prometheus: "+string(hash)+"\n")
	writeFile(t, filepath.Join(dir, "scrape_password"), "scrape-secret\n")
	auth := startChild(t, authDir, "", "--web.config.file=web.yml")
	authAddr := auth.addr

	// Alertmanager: deploy/alertmanager/alertmanager.yml.
	am := readFile(t, filepath.Join(repo, "deploy", "alertmanager", "alertmanager.yml"))
	am = strings.ReplaceAll(am, "http://alertfan:9095", "http://"+afAddr)
	am = strings.ReplaceAll(am, "/etc/alertmanager/secrets/alertmanager_pd_key", filepath.Join(dir, "deploy", "secrets", "alertmanager_pd_key"))
	am = strings.ReplaceAll(am, "group_interval: 5s", "group_interval: 2s")
	am = strings.ReplaceAll(am, "group_wait: 2s", "group_wait: 1s")
	amKey := filepath.Join(dir, "deploy", "secrets", "alertmanager_pd_key")
	direct := "    webhook_configs:\n      - url: http://" + afAddr + "/webhook/critical-tickets"
	require.Contains(t, am, direct)
	am = strings.Replace(am, direct, "      - url: "+pdDirect.EventsURL()+"\n        routing_key_file: "+amKey+"\n        send_resolved: true\n"+
		"        severity: '{{ or .CommonLabels.severity \"error\" }}'\n"+direct, 1)
	writeFile(t, filepath.Join(dir, "alertmanager.yml"), am)
	amAddr, _ := startService(t, dir, amBin, "--config.file=alertmanager.yml", "--storage.path="+filepath.Join(dir, "am-data"), "--cluster.listen-address=")

	// Prometheus: deploy/prometheus/prometheus.yml with its rule files,
	// plus the test's exporter, its rule and a scrape of the auth instance.
	for _, f := range []string{"alertfan.rules.yml", "demo.rules.yml"} {
		writeFile(t, filepath.Join(dir, f), readFile(t, filepath.Join(repo, "deploy", "prometheus", f)))
	}
	writeFile(t, filepath.Join(dir, "e2e.rules.yml"), `groups:
  - name: e2e
    rules:
      - alert: E2EDiskFull
        expr: e2e_disk_full == 1
        labels:
          severity: critical
          team: db
        annotations:
          summary: Disk full on db-1
`)
	prom := readFile(t, filepath.Join(repo, "deploy", "prometheus", "prometheus.yml"))
	prom = strings.ReplaceAll(prom, "alertmanager:9093", amAddr)
	prom = strings.ReplaceAll(prom, "alertfan:9095", afAddr)
	prom = strings.ReplaceAll(prom, "scrape_interval: 5s", "scrape_interval: 1s")
	prom = strings.ReplaceAll(prom, "evaluation_interval: 5s", "evaluation_interval: 1s")
	prom = strings.Replace(prom, "  - demo.rules.yml\n", "  - demo.rules.yml\n  - e2e.rules.yml\n", 1)
	prom += fmt.Sprintf(`  - job_name: e2e
    static_configs:
      - targets: ['%s']
  - job_name: alertfan-auth
    basic_auth:
      username: prometheus
      password_file: %s
    static_configs:
      - targets: ['%s']
`, expLn.Addr(), filepath.Join(dir, "scrape_password"), authAddr)
	writeFile(t, filepath.Join(dir, "prometheus.yml"), prom)
	promAddr, promCmd := startService(t, dir, promBin, "--config.file=prometheus.yml", "--storage.tsdb.path="+filepath.Join(dir, "prom-data"),
		"--rules.alert.resend-delay=1s", "--rules.alert.for-grace-period=1s")
	// Its own address is known once it listens: scrape itself there.
	writeFile(t, filepath.Join(dir, "prometheus.yml"), strings.ReplaceAll(prom, "localhost:9090", promAddr))
	require.NoError(t, promCmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return promValue(t, promAddr, `up{job="prometheus"}`) == "1" }, 60*time.Second, 500*time.Millisecond)

	// Prometheus scrapes alertfan, and the auth instance with credentials.
	require.Eventually(t, func() bool { return promValue(t, promAddr, `up{job="alertfan"}`) == "1" }, 60*time.Second, 500*time.Millisecond)
	require.Eventually(t, func() bool { return promValue(t, promAddr, `up{job="alertfan-auth"}`) == "1" }, 60*time.Second, 500*time.Millisecond)
	resp, err := http.Get("http://" + auth.addr + "/metrics")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "anonymous requests are refused")

	// alertfan's own rules are loaded and healthy.
	groups := promRules(t, promAddr)
	require.Contains(t, groups, "alertfan")
	require.Len(t, groups["alertfan"], 11)
	for name, health := range groups["alertfan"] {
		require.Equal(t, "ok", health, name)
	}

	// The rule fires: PagerDuty trigger and a Backlog issue.
	var issueKey string
	require.Eventually(t, func() bool {
		for _, is := range bl.Issues() {
			if strings.Contains(is.Summary, "E2EDiskFull") {
				issueKey = is.Key
				return true
			}
		}
		return false
	}, 90*time.Second, 200*time.Millisecond, "a Backlog issue for the firing rule")
	var dedup string
	require.Eventually(t, func() bool {
		for _, e := range pd.Events() {
			if e.EventAction == "trigger" && strings.Contains(string(e.Payload), "E2EDiskFull") && strings.Contains(string(e.Payload), `"severity":"critical"`) {
				dedup = e.DedupKey
				return true
			}
		}
		return false
	}, 60*time.Second, 200*time.Millisecond, "a PagerDuty trigger for the firing rule")
	// Alertmanager's pagerduty_configs pointed at alertfan is accepted and relayed.
	require.Eventually(t, func() bool {
		return strings.Contains(metrics(t, af.addr), `alertfan_notifications_received_total{input="pagerduty",outcome="accepted"}`)
	}, 60*time.Second, 200*time.Millisecond)
	// The relayed trigger is the event Alertmanager sends PagerDuty directly.
	directTrigger := firstEvent(t, pdDirect, "trigger", "E2EDiskFull")
	sameEvent(t, directTrigger, firstEvent(t, pd, "trigger", "E2EDiskFull"))
	require.Equal(t, dedup, directTrigger.DedupKey)

	// The rule stops firing: PagerDuty resolve, Backlog issue closed.
	diskFull.Store(0)
	require.Eventually(t, func() bool {
		for _, e := range pd.Events() {
			if e.EventAction == "resolve" && e.DedupKey == dedup {
				return true
			}
		}
		return false
	}, 90*time.Second, 200*time.Millisecond, "a PagerDuty resolve with the trigger's dedup_key")
	sameEvent(t, firstEvent(t, pdDirect, "resolve", "E2EDiskFull"), firstEvent(t, pd, "resolve", "E2EDiskFull"))
	// One alert, one incident: every PagerDuty event for it has one key.
	keys := map[string]bool{}
	for _, e := range pd.Events() {
		if strings.Contains(string(e.Payload), "E2EDiskFull") {
			keys[e.DedupKey] = true
		}
	}
	require.Len(t, keys, 1, "the alert paged once")
	require.Eventually(t, func() bool {
		for _, is := range bl.Issues() {
			if is.Key == issueKey {
				return bl.StatusName(is.StatusID) == "Closed"
			}
		}
		return false
	}, 60*time.Second, 200*time.Millisecond, "the Backlog issue closed")
	require.Equal(t, 1, countIssues(bl, "E2EDiskFull"), "one issue, whatever Alertmanager repeated")
}

// firstEvent waits for the first event of an action whose payload holds s.
func firstEvent(t *testing.T, p *sinkstest.PagerDuty, action, s string) sinkstest.PDEvent {
	t.Helper()
	var found sinkstest.PDEvent
	require.Eventually(t, func() bool {
		for _, e := range p.Events() {
			if e.EventAction == action && strings.Contains(string(e.Payload), s) {
				found = e
				return true
			}
		}
		return false
	}, 60*time.Second, 200*time.Millisecond, "a PagerDuty %s for %s", action, s)
	return found
}

// sameEvent compares two events field by field, all but the routing key.
func sameEvent(t *testing.T, want, got sinkstest.PDEvent) {
	t.Helper()
	strip := func(raw []byte) map[string]any {
		var m map[string]any
		require.NoError(t, json.Unmarshal(raw, &m))
		delete(m, "routing_key")
		return m
	}
	w, g := strip(want.Raw), strip(got.Raw)
	for k := range w {
		require.Equal(t, w[k], g[k], "field %s", k)
	}
	require.Equal(t, w, g)
}

func countIssues(b *sinkstest.Backlog, s string) int {
	n := 0
	for _, is := range b.Issues() {
		if strings.Contains(is.Summary, s) {
			n++
		}
	}
	return n
}

// startService runs Prometheus or Alertmanager until the test ends.
// startService starts a Prometheus-ecosystem server (bin with args) on a
// loopback port of its own choosing (port 0) and returns the address it
// logged ("Listening on", exporter-toolkit's line) once it answers
// /-/healthy.
func startService(t *testing.T, dir, bin string, args ...string) (string, *exec.Cmd) {
	t.Helper()
	logs := &testenv.LogBuffer{}
	cmd := exec.Command(bin, append(args, "--web.listen-address=127.0.0.1:0")...)
	cmd.Dir = dir
	cmd.Stdout = logs
	cmd.Stderr = logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill() //nolint:errcheck
		cmd.Wait()         //nolint:errcheck
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(bin), lastLines(logs.String(), 30))
		}
	})
	listening := regexp.MustCompile(`msg="Listening on" address=(\S+)`)
	var addr string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if addr == "" {
			if m := listening.FindStringSubmatch(logs.String()); m != nil {
				addr = m[1]
			}
		}
		if addr != "" {
			resp, err := http.Get("http://" + addr + "/-/healthy")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 || resp.StatusCode == 401 {
					return addr, cmd
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not come up: %s", filepath.Base(bin), logs.String())
	return "", nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func promValue(t *testing.T, addr, query string) string {
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + urlQuery(query))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Result []struct {
				Value []any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if json.NewDecoder(resp.Body).Decode(&out) != nil || len(out.Data.Result) == 0 || len(out.Data.Result[0].Value) < 2 {
		return ""
	}
	return fmt.Sprint(out.Data.Result[0].Value[1])
}

func promRules(t *testing.T, addr string) map[string]map[string]string {
	t.Helper()
	var groups map[string]map[string]string
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/api/v1/rules")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var out struct {
			Data struct {
				Groups []struct {
					Name  string `json:"name"`
					Rules []struct {
						Name   string `json:"name"`
						Health string `json:"health"`
					} `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&out) != nil {
			return false
		}
		groups = map[string]map[string]string{}
		for _, g := range out.Data.Groups {
			groups[g.Name] = map[string]string{}
			for _, r := range g.Rules {
				groups[g.Name][r.Name] = r.Health
			}
		}
		for _, h := range groups["alertfan"] {
			if h != "ok" {
				return false
			}
		}
		return len(groups["alertfan"]) > 0
	}, 30*time.Second, 500*time.Millisecond)
	return groups
}

func metrics(t *testing.T, addr string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func urlQuery(s string) string {
	r := strings.NewReplacer(" ", "%20", "{", "%7B", "}", "%7D", "\"", "%22", "=", "%3D", "~", "%7E", "|", "%7C", "+", "%2B")
	return r.Replace(s)
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(s), 0o600))
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	require.NoError(t, err)
	for _, e := range entries {
		if !e.IsDir() {
			writeFile(t, filepath.Join(to, e.Name()), readFile(t, filepath.Join(from, e.Name())))
		}
	}
}
