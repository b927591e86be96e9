package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// replicaDirs makes n working directories, each with config (which reads
// the DSN from the file "dsn") and the DSN of one shared database: n
// replicas of one deployment.
func replicaDirs(t *testing.T, n int, dsn, config string) []string {
	t.Helper()
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dirs[i], "dsn"), []byte(dsn), 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(dirs[i], "config.yml"), []byte(config), 0o600))
	}
	return dirs
}

// startReplicas starts one alertfan per directory, one after the other (the
// first migrates the shared database).
func startReplicas(t *testing.T, dirs []string) ([]*child, []string) {
	t.Helper()
	cs := make([]*child, len(dirs))
	addrs := make([]string, len(dirs))
	for i, d := range dirs {
		addrs[i] = freePort(t)
		cs[i] = startChild(t, d, addrs[i])
	}
	return cs, addrs
}

// TestReplicasShareTheRateLimit runs three replicas on one PostgreSQL
// database against a fake Backlog that answers 429 above the key's limit,
// with a storm spread across the three: together they keep the one limit
// (no 429), deliver every alert once, and take no less than the limit's
// minimum.
func TestReplicasShareTheRateLimit(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	// 2,400/min is 600 per 15 s; the fake counts in fixed 15 s windows, a
	// quarter of Backlog's minute, so the test takes 25 s instead of 100.
	const (
		perMinute = 2400
		alerts    = 1000
		apiKey    = "replica-test-backlog-key"
	)
	b := sinkstest.NewBacklog(apiKey)
	defer b.Close()
	b.UpdateLimit, b.Window = perMinute/4, 15*time.Second
	cfg := fmt.Sprintf(`storage:
  driver: postgres
  dsn_file: dsn
delivery:
  poll_interval: 20ms
route:
  receiver: tickets
receivers:
  - name: tickets
    backlog_configs:
      - api_url: %s
        api_key: %s
        project: OPS
        issue_type: Bug
        rate_limit_per_minute: %d
`, b.URL, apiKey, perMinute)
	cs, _ := startReplicas(t, replicaDirs(t, 3, dsn, cfg))

	// The storm: notifications of 5 alerts, round robin over the replicas.
	start := time.Now()
	var wg sync.WaitGroup
	var next atomic.Int64
	for s := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(5)) - 5
				if i >= alerts {
					return
				}
				as := make([]sinkstest.WebhookAlert, 5)
				for j := range as {
					as[j] = sinkstest.NamedAlert("Storm", "warning", fmt.Sprintf("host-%05d", i+j), "firing", start)
				}
				body := sinkstest.Webhook("tickets", fmt.Sprintf(`{}:{g="%d"}`, i), nil, as...)
				code, err := cs[(i/5+s)%3].post(context.Background(), "/webhook", body)
				require.NoError(t, err)
				require.Equal(t, 200, code)
			}
		}()
	}
	wg.Wait()
	accepted := time.Since(start)
	require.Eventually(t, func() bool { return len(b.Issues()) >= alerts || b.CountStatus(429) > 20 },
		3*time.Minute, 100*time.Millisecond)
	time.Sleep(time.Second) // a duplicate would show by now

	var creates []time.Time
	for _, c := range b.Calls() {
		if c.Method == http.MethodPost && strings.HasSuffix(c.Path, "/issues") && c.Status == 201 {
			creates = append(creates, c.At)
		}
	}
	sort.Slice(creates, func(i, j int) bool { return creates[i].Before(creates[j]) })
	require.NotEmpty(t, creates)
	drain := creates[len(creates)-1].Sub(creates[0])
	minimum := time.Duration(alerts-1) * time.Minute / perMinute
	maxIn := 0
	for i := range creates {
		n := 0
		for j := i; j < len(creates) && creates[j].Sub(creates[i]) < b.Window; j++ {
			n++
		}
		maxIn = max(maxIn, n)
	}
	t.Logf("3 replicas, %d alerts at %d/min: accepted in %.1f s, drained in %.2f s (minimum %.2f s, %.3f×), %d × 429, at most %d creates in any %s (limit %d)",
		alerts, perMinute, accepted.Seconds(), drain.Seconds(), minimum.Seconds(), drain.Seconds()/minimum.Seconds(), b.CountStatus(429), maxIn, b.Window, b.UpdateLimit)
	require.Zero(t, b.CountStatus(429), "the replicas together exceeded the key's limit")
	require.Len(t, b.Issues(), alerts, "every alert gets exactly one issue")
	require.Len(t, creates, alerts)
	require.GreaterOrEqual(t, drain, minimum)
	require.LessOrEqual(t, drain.Seconds(), 1.25*minimum.Seconds(), "the shared budget leaves few slots unused")
}
