package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// backlogStorm sends 2,000 distinct firing alerts routed to a Backlog
// target limited to 600 writes/min; the fake enforces the same 600/min and
// answers 429 above it. The drain time is compared with the minimum the
// limit allows: the first create at once, then one every 100 ms.
func backlogStorm(work, bin string) error {
	const alerts, perMinute = 2000, 600
	fake := sinkstest.NewBacklog("bench-api-key")
	defer fake.Close()
	fake.UpdateLimit = perMinute
	dir := filepath.Join(work, "storm")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg := "storage:\n  driver: sqlite\n  path: data/alertfan.db\n" + stormRoutes(fake.URL, perMinute)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		return err
	}
	addr := freeAddr()
	p, err := startProc(addr, dir, bin, "--config.file=config.yml", "--web.listen-address="+addr, "--log.level=error")
	if err != nil {
		return err
	}
	defer p.stop()
	url := "http://" + addr + "/webhook"
	start := time.Now()
	for i := 0; i < alerts; i += 5 {
		as := make([]sinkstest.WebhookAlert, 5)
		for j := range as {
			as[j] = sinkstest.NamedAlert("Storm", "warning", fmt.Sprintf("host-%04d", i+j), "firing", start)
		}
		if err := post(url, sinkstest.Webhook("tickets", fmt.Sprintf("{}:{g=\"%d\"}", i), nil, as...)); err != nil {
			return err
		}
	}
	accepted := time.Since(start)
	deadline := time.Now().Add(10 * time.Minute)
	var first, last time.Time
	for time.Now().Before(deadline) {
		if n := len(fake.Issues()); n >= alerts {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	issues := fake.Issues()
	if len(issues) > 0 {
		first, last = issues[0].Created, issues[len(issues)-1].Created
	}
	creates := 0
	maxInWindow := 0
	var times []time.Time
	for _, c := range fake.Calls() {
		if c.Method == http.MethodPost && strings.HasSuffix(c.Path, "/issues") && c.Status == 201 {
			creates++
			times = append(times, c.At)
		}
	}
	for i := range times {
		n := 0
		for j := i; j < len(times) && times[j].Sub(times[i]) < time.Minute; j++ {
			n++
		}
		maxInWindow = max(maxInWindow, n)
	}
	drain := last.Sub(start)
	minimum := time.Duration(alerts-1) * time.Minute / perMinute
	fmt.Println("### Backlog storm: 2,000 distinct firing alerts, rate_limit_per_minute 600")
	fmt.Println()
	fmt.Println("| issues created | all accepted after | first create | drained after | minimum the limit allows | ratio | 429s from the fake | max creates in any 60 s |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|")
	fmt.Printf("| %d | %.1f s | %.2f s | %.1f s | %.1f s | **%.3f×** | %d | %d |\n\n",
		len(issues), accepted.Seconds(), first.Sub(start).Seconds(), drain.Seconds(), minimum.Seconds(), drain.Seconds()/minimum.Seconds(), fake.CountStatus(429), maxInWindow)
	return nil
}

// stormRoutes is the storm's route and receiver: every alert to one
// Backlog target at perMinute.
func stormRoutes(url string, perMinute int) string {
	return fmt.Sprintf(`route:
  receiver: tickets
receivers:
  - name: tickets
    backlog_configs:
      - api_url: %s
        api_key: bench-api-key
        project: OPS
        issue_type: Bug
        rate_limit_per_minute: %d
`, url, perMinute)
}
