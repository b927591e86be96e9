package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

const crashRoutingKey = "0123456789abcdef0123456789abcdef"

type crashStorage struct {
	name    string
	storage func(t *testing.T, dir string) string
	// driver and dsn open the store storage set up (database/sql).
	driver string
	dsn    func(dir string) string
}

func crashStorages() []crashStorage {
	return []crashStorage{
		{"sqlite", func(t *testing.T, dir string) string {
			return "storage:\n  driver: sqlite\n  path: data/alertfan.db\n"
		}, "sqlite", func(dir string) string { return "file:" + filepath.Join(dir, "data/alertfan.db") }},
		{"postgres", func(t *testing.T, dir string) string {
			dsn := testenv.PostgresDSN(t)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "dsn"), []byte(dsn), 0o600))
			return "storage:\n  driver: postgres\n  dsn_file: dsn\n"
		}, "pgx", func(dir string) string {
			b, _ := os.ReadFile(filepath.Join(dir, "dsn"))
			return string(b)
		}},
	}
}

func crashConfig(storage, pdURL string) string {
	return storage + fmt.Sprintf(`
delivery:
  workers: 20
  min_backoff: 50ms
  max_backoff: 500ms
  poll_interval: 10ms
  job_timeout: 5s
  rescue_after: 6s
route:
  receiver: oncall
receivers:
  - name: oncall
    pagerduty_configs:
      - routing_key: %s
        url: %s
        rate_limit_per_minute: 600000
`, crashRoutingKey, pdURL)
}

// TestKill9MidStream kills alertfan with SIGKILL while notifications are
// arriving and deliveries are in flight, restarts it on the same store, and
// checks that every alert that got a 200 reaches PagerDuty. A repeat is
// allowed only for a job in flight at the kill, with the same dedup_key.
func TestKill9MidStream(t *testing.T) {
	for _, tc := range crashStorages() {
		t.Run(tc.name, func(t *testing.T) {
			pd := sinkstest.NewPagerDuty()
			defer pd.Close()
			// A slow target keeps deliveries in flight when the kill lands;
			// flying counts the calls the fake is answering.
			var flying atomic.Int64
			slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				flying.Add(1)
				defer flying.Add(-1)
				time.Sleep(5 * time.Millisecond)
				pd.Config.Handler.ServeHTTP(w, r)
			})
			ln, stopSlow := serve(t, slow)
			defer stopSlow()

			dir := t.TempDir()
			cfg := crashConfig(tc.storage(t, dir), "http://"+ln.Addr().String()+"/v2/enqueue")
			require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600))
			c := startChild(t, dir, "")
			addr := c.addr

			// ~1,000 delivered and acknowledged before the kill: the repeats
			// measure how promptly acks reach the store.
			const total = 2500
			var (
				mu       sync.Mutex
				accepted = map[string]bool{} // dedup keys that got a 200
				next     atomic.Int64
				wg       sync.WaitGroup
			)
			start := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
			send := func(cur *child) {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > total {
						return
					}
					a := sinkstest.NamedAlert("Crash", "critical", fmt.Sprintf("host-%05d", i), "firing", start)
					body := sinkstest.Webhook("oncall", fmt.Sprintf(`{}:{instance="host-%05d"}`, i), nil, a)
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					code, err := cur.post(ctx, "/webhook", body)
					cancel()
					if err == nil && code == 200 {
						mu.Lock()
						accepted[sha256hex("am:"+a.Fingerprint)] = true
						mu.Unlock()
					}
					if err != nil {
						// The server is gone: this sender stops, as
						// Alertmanager would until its next retry.
						return
					}
				}
			}
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go send(c)
			}
			// Kill once deliveries are flowing and intake is still busy.
			require.Eventually(t, func() bool { return len(pd.Events()) >= 1000 }, 60*time.Second, time.Millisecond)
			killStart := time.Now()
			inFlight := flying.Load()
			c.kill()
			killedAt := len(pd.Events())
			wg.Wait()
			mu.Lock()
			acceptedBeforeKill := len(accepted)
			mu.Unlock()

			// Restart on the same store and send the rest. Anything the fake
			// received before this instant was sent by the killed process:
			// once its connections are all handled and closed, the fake
			// has every request it sent (a fixed 100 ms was not always
			// enough for a starved fake to get through them).
			require.Eventually(t, func() bool { return fakeDrained(pd) }, 30*time.Second, time.Millisecond)
			settledFake(t, pd)
			unrecorded := unrecordedCalls(t, tc.driver, tc.dsn(dir), receivedKeys(pd))
			restarting := time.Now()
			c = startChild(t, dir, addr)
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go send(c)
			}
			wg.Wait()

			mu.Lock()
			want := len(accepted)
			mu.Unlock()
			require.Eventually(t, func() bool {
				got := map[string]bool{}
				for _, e := range pd.Events() {
					got[e.DedupKey] = true
				}
				for k := range accepted {
					if !got[k] {
						return false
					}
				}
				return true
			}, 60*time.Second, 50*time.Millisecond, "every accepted alert must be delivered")

			// Jobs a dead replica left running are rescued after
			// rescue_after (PostgreSQL); wait until nothing is left so every
			// repeat is counted.
			require.Eventually(t, func() bool { return queueIdle(c.addr) }, 90*time.Second, 200*time.Millisecond)

			counts, first := eventsByKey(pd)
			repeats := 0
			for k, n := range counts {
				if n == 1 {
					continue
				}
				repeats += n - 1
				// A repeat is only allowed for a delivery the killed process
				// made and had not yet recorded: first sent just before the kill.
				require.True(t, first[k].Before(restarting), "key %s first delivered by the restarted process, then again: work done twice", k)
				require.False(t, first[k].Before(killStart.Add(-2*time.Second)), "key %s delivered long before the kill was repeated", k)
				require.LessOrEqual(t, n, 2, "key %s delivered %d times", k, n)
			}
			t.Logf("%s: %d notifications accepted (%d before the kill), %d events at the kill, %d calls in flight at the fake at the kill, %d calls received and not recorded in the store, %d delivered, %d repeats (same dedup_key, all in flight at the kill)",
				tc.name, want, acceptedBeforeKill, killedAt, inFlight, unrecorded, len(counts), repeats)
			require.LessOrEqual(t, repeats, unrecorded, "only calls made and not recorded at the kill repeat")
			// In flight at most: workers × keys delivered at once per job.
			require.LessOrEqual(t, repeats, 20*16)
		})
	}
}

// queueIdle reports whether no delivery job is waiting or running.
func queueIdle(addr string) bool {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "alertfan_queue_jobs{") {
			continue
		}
		for _, st := range []string{`state="available"`, `state="running"`, `state="retryable"`, `state="scheduled"`} {
			if strings.Contains(line, st) && !strings.HasSuffix(line, " 0") {
				return false
			}
		}
	}
	return true
}

// TestKill9BetweenBacklogCreateAndRecord kills alertfan after Backlog has
// created the issue but before alertfan could record it; after a restart
// the marker search finds the issue and no second one is made.
func TestKill9BetweenBacklogCreateAndRecord(t *testing.T) {
	const key = "crash-test-backlog-key"
	b := sinkstest.NewBacklog(key)
	defer b.Close()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`storage:
  driver: sqlite
  path: data/alertfan.db
delivery:
  min_backoff: 50ms
  max_backoff: 500ms
  poll_interval: 10ms
route:
  receiver: tickets
receivers:
  - name: tickets
    backlog_configs:
      - api_url: %s
        api_key: %s
        project: OPS
        issue_type: Bug
`, b.URL, key)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600))
	c := startChild(t, dir, "")
	addr := c.addr
	var once sync.Once
	b.AfterCreate = func(*sinkstest.BacklogIssue) {
		once.Do(func() { c.kill() })
	}
	start := time.Now().UTC()
	body := sinkstest.Webhook("tickets", `{}:{alertname="DiskFull"}`, nil, sinkstest.NamedAlert("DiskFull", "critical", "db-1", "firing", start))
	code, err := c.post(context.Background(), "/webhook", body)
	require.NoError(t, err)
	require.Equal(t, 200, code)
	<-c.done
	require.Len(t, b.Issues(), 1, "the create reached Backlog")

	c = startChild(t, dir, addr)
	require.Eventually(t, func() bool { return queueIdle(c.addr) }, 30*time.Second, 50*time.Millisecond)
	// Alertmanager repeats the alert; still one issue.
	code, err = c.post(context.Background(), "/webhook", body)
	require.NoError(t, err)
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool { return queueIdle(c.addr) }, 30*time.Second, 50*time.Millisecond)
	require.Len(t, b.Issues(), 1, "no duplicate issue after the crash")
	var searched bool
	for _, call := range b.Calls() {
		if call.Method == http.MethodGet && call.Path == "/api/v2/issues" {
			searched = true
		}
	}
	require.True(t, searched, "the restart searched for the marker")
}

// lifecycle is one alert's stream: the requests that make it, in order.
type lifecycle struct {
	key   string   // the dedup_key PagerDuty sees
	steps []string // PagerDuty event actions: trigger, acknowledge, resolve
	// am: an Alertmanager alert (firing, then resolved) instead of a
	// PagerDuty Events v2 sender's trigger/acknowledge/resolve.
	am    bool
	alert sinkstest.WebhookAlert
	done  int // steps accepted (2xx)
}

func (l *lifecycle) request(step int) (path string, body []byte) {
	action := l.steps[step]
	if l.am {
		a := l.alert
		if action == "resolve" {
			a.Status = "resolved"
		}
		return "/webhook", sinkstest.Webhook("oncall", `{}:{instance="`+a.Labels["instance"]+`"}`, nil, a)
	}
	ev := map[string]any{"routing_key": crashRoutingKey, "event_action": action, "dedup_key": l.key}
	if action == "trigger" {
		// A fixed timestamp makes a resent trigger the same content, as
		// Alertmanager's resends are.
		ev["payload"] = map[string]any{"summary": "Lifecycle " + l.key, "source": l.key, "severity": "critical",
			"timestamp": l.alert.StartsAt.Format(time.RFC3339)}
	}
	body, _ = json.Marshal(ev)
	return "/v2/enqueue", body
}

// TestKill9MidStreamWithResolvesAndAcks is TestKill9MidStream with whole
// lifecycles in the stream: triggers, PagerDuty acknowledges of earlier
// triggers and resolves (PagerDuty Events v2 senders and Alertmanager),
// killed with SIGKILL mid-stream. Senders finish each interrupted
// lifecycle after the restart, as a sender retrying would. Every alert's
// last accepted action is the last event PagerDuty has for its dedup_key
// (a resolve accepted before its trigger was sent rightly sends nothing),
// no acknowledge precedes its trigger, and a call repeats only if it was
// in flight at the kill.
func TestKill9MidStreamWithResolvesAndAcks(t *testing.T) {
	for _, tc := range crashStorages() {
		t.Run(tc.name, func(t *testing.T) {
			pd := sinkstest.NewPagerDuty()
			defer pd.Close()
			slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(5 * time.Millisecond)
				pd.Config.Handler.ServeHTTP(w, r)
			})
			ln, stopSlow := serve(t, slow)
			defer stopSlow()

			dir := t.TempDir()
			cfg := crashConfig(tc.storage(t, dir), "http://"+ln.Addr().String()+"/v2/enqueue")
			require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600))
			c := startChild(t, dir, "")
			addr := c.addr

			// Five shapes of lifecycle, interleaved.
			const total = 800
			start := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
			lcs := make([]*lifecycle, total)
			for i := range lcs {
				l := &lifecycle{key: fmt.Sprintf("lc-%05d", i), alert: sinkstest.WebhookAlert{StartsAt: start}}
				switch i % 5 {
				case 0:
					l.steps = []string{"trigger"}
				case 1:
					l.steps = []string{"trigger", "acknowledge"}
				case 2:
					l.steps = []string{"trigger", "resolve"}
				case 3:
					l.steps = []string{"trigger", "acknowledge", "resolve"}
				case 4:
					l.am, l.steps = true, []string{"trigger", "resolve"}
					l.alert = sinkstest.NamedAlert("Lifecycle", "critical", fmt.Sprintf("host-%05d", i), "firing", start)
					l.key = sha256hex("am:" + l.alert.Fingerprint)
				}
				lcs[i] = l
			}
			var (
				next        atomic.Int64
				wg          sync.WaitGroup
				mu          sync.Mutex
				interrupted []*lifecycle // lifecycles a sender could not finish
				// resent are the steps (key action) whose request was under
				// way at the kill: the sender sends them again.
				resent = map[string]bool{}
			)
			// run sends a lifecycle's remaining steps; false when the
			// server is gone (the step in flight may or may not be stored).
			run := func(cur *child, l *lifecycle) bool {
				for l.done < len(l.steps) {
					path, body := l.request(l.done)
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					code, err := cur.post(ctx, path, body)
					cancel()
					if err != nil {
						return false
					}
					require.Contains(t, []int{200, 202}, code, "%s %s", l.key, l.steps[l.done])
					l.done++
				}
				return true
			}
			send := func(cur *child) {
				defer wg.Done()
				for {
					mu.Lock()
					var l *lifecycle
					if len(interrupted) > 0 {
						l, interrupted = interrupted[0], interrupted[1:]
					}
					mu.Unlock()
					if l == nil {
						i := next.Add(1) - 1
						if i >= total {
							return
						}
						l = lcs[i]
					}
					if !run(cur, l) {
						mu.Lock()
						resent[l.key+" "+l.steps[l.done]] = true
						interrupted = append(interrupted, l)
						mu.Unlock()
						return
					}
				}
			}
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go send(c)
			}
			require.Eventually(t, func() bool { return len(pd.Events()) >= 200 }, 30*time.Second, time.Millisecond)
			killStart := time.Now()
			c.kill()
			killedAt := len(pd.Events())
			wg.Wait()
			mu.Lock()
			cut := len(interrupted)
			mu.Unlock()

			// Every call the killed process made has reached the fake.
			require.Eventually(t, func() bool { return fakeDrained(pd) }, 30*time.Second, time.Millisecond)
			settledFake(t, pd)
			restarting := time.Now()
			c = startChild(t, dir, addr)
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go send(c)
			}
			wg.Wait()
			require.Empty(t, interrupted, "every lifecycle finished after the restart")

			// last is the final action each alert's stream asked for.
			want := map[string]string{}
			for _, l := range lcs {
				want[l.key] = l.steps[len(l.steps)-1]
			}
			byKey := func() map[string][]sinkstest.PDEvent {
				out := map[string][]sinkstest.PDEvent{}
				for _, e := range pd.Events() {
					out[e.DedupKey] = append(out[e.DedupKey], e)
				}
				return out
			}
			unsettled := func() []string {
				got := byKey()
				var bad []string
				for k, w := range want {
					evs := got[k]
					switch {
					case len(evs) == 0 && w == "resolve":
						// Resolved before its trigger went out: no call at all.
					case len(evs) == 0 || evs[len(evs)-1].EventAction != w:
						var acts []string
						for _, e := range evs {
							acts = append(acts, fmt.Sprintf("%s@%v", e.EventAction, e.Received.Sub(killStart).Round(time.Millisecond)))
						}
						bad = append(bad, fmt.Sprintf("%s want %s got %v", k, w, acts))
					}
				}
				return bad
			}
			idle := func() bool { return len(unsettled()) == 0 && queueIdle(c.addr) }
			if !assert.Eventually(t, idle, 60*time.Second, 200*time.Millisecond) {
				t.Fatalf("the last accepted action did not reach PagerDuty for (times relative to the kill): %v\n%s", unsettled(), c.logs.String())
			}

			got := byKey()
			repeats, silent := 0, 0
			actions := map[string]int{}
			for k, w := range want {
				evs := got[k]
				if len(evs) == 0 {
					require.Equal(t, "resolve", w)
					silent++
					continue
				}
				require.Equal(t, w, evs[len(evs)-1].EventAction, "key %s: last event", k)
				seen := map[string]time.Time{}
				triggered := false
				for _, e := range evs {
					actions[e.EventAction]++
					if e.EventAction == "acknowledge" {
						require.True(t, triggered, "key %s: acknowledge before its trigger", k)
					}
					if e.EventAction == "trigger" {
						triggered = true
					}
					first, again := seen[e.EventAction]
					if !again {
						seen[e.EventAction] = e.Received
						continue
					}
					repeats++
					if resent[k+" "+e.EventAction] {
						// The sender's own request was cut by the kill and
						// sent again; alertfan may have stored the first.
						t.Logf("repeat: %s %s, its request was under way at the kill and resent", k, e.EventAction)
						continue
					}
					t.Logf("repeat: %s %s, first sent %v before the kill, again %v after it",
						k, e.EventAction, killStart.Sub(first).Round(time.Millisecond), e.Received.Sub(killStart).Round(time.Millisecond))
					// Only a call the killed process made and had not recorded.
					require.True(t, first.Before(restarting), "key %s %s first sent by the restarted process, then again", k, e.EventAction)
					require.False(t, first.Before(killStart.Add(-2*time.Second)), "key %s %s sent long before the kill was repeated", k, e.EventAction)
				}
			}
			t.Logf("%s: %d lifecycles (%d interrupted by the kill and finished after it), %d events at the kill, %d events in all %v; %d resolved before any call; %d repeats (all in flight at the kill)",
				tc.name, total, cut, killedAt, len(pd.Events()), actions, silent, repeats)
			require.LessOrEqual(t, repeats, 20*16)
		})
	}
}

// eventsByKey counts the fake PagerDuty's events per dedup_key and when
// each key was first received.
func eventsByKey(pd *sinkstest.PagerDuty) (map[string]int, map[string]time.Time) {
	counts := map[string]int{}
	first := map[string]time.Time{}
	for _, e := range pd.Events() {
		counts[e.DedupKey]++
		if _, ok := first[e.DedupKey]; !ok {
			first[e.DedupKey] = e.Received
		}
	}
	return counts, first
}
