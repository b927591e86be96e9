package main

import (
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // reads row counts at the end

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// soakOptions tune the soak (-soak N).
type soakOptions struct {
	alerts    int
	retention time.Duration
	every     time.Duration
	idle      time.Duration
	senders   int
}

// soakSample is one sampling of the store's files and alertfan's memory.
type soakSample struct {
	at        time.Duration
	fired     int64
	resolved  int64
	events    int64
	db, wal   int64
	rss       float64
	idlePhase bool
}

// soak fires N distinct alerts through the webhook (5 per notification) and
// resolves each a little later, to a fast fake PagerDuty (no rate limit),
// with every retention set short; it samples the SQLite file, its WAL and
// alertfan's RSS while it runs and while it idles afterwards. The store
// stays bounded when the file stops growing once the janitor has work.
func soak(work, bin string, o soakOptions) error {
	var events atomic.Int64
	pd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A fast stand-in for PagerDuty's Events API v2: the answer
		// PagerDuty documents for an accepted event, nothing kept.
		var ev struct {
			DedupKey string `json:"dedup_key"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&ev); err != nil {
			http.Error(w, `{"status":"invalid event","message":"Event object is invalid"}`, http.StatusBadRequest)
			return
		}
		events.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"status":"success","message":"Event processed","dedup_key":%q}`, ev.DedupKey)
	}))
	defer pd.Close()

	dir := filepath.Join(work, "soak")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	r := model(o.retention)
	cfg := fmt.Sprintf(`storage:
  driver: sqlite
  path: data/alertfan.db
  retention:
    completed_jobs: %[3]s
    resolved_states: %[3]s
    closed_issues: %[3]s
    dead_letters: %[3]s
    history: %[3]s
route:
  receiver: soak
receivers:
  - name: soak
    pagerduty_configs:
      - routing_key: %[1]s
        url: %[2]s
        rate_limit_per_minute: 6000000
`, routingKey, pd.URL+"/v2/enqueue", r)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		return err
	}
	addr := freeAddr()
	p, err := startProc(addr, dir, bin, "--config.file=config.yml", "--web.listen-address="+addr, "--log.level=warn")
	if err != nil {
		return err
	}
	defer p.stop()
	pid := p.cmd.Process.Pid
	dbPath := filepath.Join(dir, "data", "alertfan.db")
	url := "http://" + addr + "/webhook"

	// Notification i fires alerts 5i..5i+4; it is resolved lag
	// notifications later, so about lag*5 alerts are open at any time and
	// every alert gets its trigger and its resolve.
	const per, lag = 5, 400
	notifs := (o.alerts + per - 1) / per
	base := time.Now().UTC().Truncate(time.Second)
	body := func(i int, status string) []byte {
		as := make([]sinkstest.WebhookAlert, per)
		for j := range as {
			as[j] = sinkstest.NamedAlert("SoakAlert", "warning", fmt.Sprintf("host-%d", i*per+j), status, base.Add(time.Duration(i)*time.Millisecond))
		}
		return sinkstest.Webhook("soak", fmt.Sprintf(`{}:{n="%d"}`, i), map[string]string{"n": fmt.Sprint(i)}, as...)
	}
	type job struct {
		i    int
		fire bool
	}
	jobs := make(chan job, 256)
	go func() {
		for i := 0; i < notifs+lag; i++ {
			if i < notifs {
				jobs <- job{i, true}
			}
			if i >= lag {
				jobs <- job{i - lag, false}
			}
		}
		close(jobs)
	}()
	var fired, resolved, errs atomic.Int64
	var wg sync.WaitGroup
	for range o.senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				status := "resolved"
				if j.fire {
					status = "firing"
				}
				b := body(j.i, status)
				if !postRetrying(url, b) {
					errs.Add(1)
				}
				if j.fire {
					fired.Add(per)
				} else {
					resolved.Add(per)
				}
			}
		}()
	}
	sendDone := make(chan struct{})
	go func() { wg.Wait(); close(sendDone) }()

	start := time.Now()
	var samples []soakSample
	sample := func(idle bool) soakSample {
		cur, _ := rss(pid)
		s := soakSample{at: time.Since(start), fired: fired.Load(), resolved: resolved.Load(), events: events.Load(),
			db: fileSize(dbPath), wal: fileSize(dbPath + "-wal"), rss: cur, idlePhase: idle}
		fmt.Fprintf(os.Stderr, "soak %6.0fs fired %8d resolved %8d events %8d db %7.1f MiB wal %6.1f MiB rss %6.1f MiB idle=%v\n",
			s.at.Seconds(), s.fired, s.resolved, s.events, mib(s.db), mib(s.wal), s.rss, idle)
		return s
	}
	tick := time.NewTicker(o.every)
	defer tick.Stop()
	samples = append(samples, sample(false))
sending:
	for {
		select {
		case <-sendDone:
			break sending
		case <-tick.C:
			samples = append(samples, sample(false))
		}
	}
	sent := time.Since(start)
	// Idle: nothing is sent; deliveries finish, the janitor prunes what
	// passed its retention, the WAL is truncated.
	idleEnd := time.Now().Add(o.idle)
	for time.Now().Before(idleEnd) {
		<-tick.C
		samples = append(samples, sample(true))
	}
	samples = append(samples, sample(true))
	counts := rowCounts(dbPath)
	pruned := scrape("http://"+addr+"/metrics", "alertfan_store_pruned_rows_total")

	fmt.Printf("### Soak: %d alerts fired then resolved, retentions %s\n\n", o.alerts, r)
	fmt.Printf("POST /webhook, %d alerts per notification, %d senders, each notification resolved %d notifications after it fired (about %d alerts open at once); a fast fake PagerDuty without rate limit; every storage.retention set to %s. All sent after %.0f s (%.0f alerts/s fired+resolved), %d requests failed after retries; %d PagerDuty events received. Then %s idle.\n\n",
		per, o.senders, lag, lag*per, r, sent.Seconds(), float64(2*o.alerts)/sent.Seconds(), errs.Load(), events.Load(), o.idle)
	fmt.Println("| time | alerts fired | resolved | events delivered | database file | WAL | RSS |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|")
	for _, s := range samples {
		mark := ""
		if s.idlePhase {
			mark = " (idle)"
		}
		fmt.Printf("| %.0f s%s | %d | %d | %d | %.1f MiB | %.1f MiB | %.1f MiB |\n", s.at.Seconds(), mark, s.fired, s.resolved, s.events, mib(s.db), mib(s.wal), s.rss)
	}
	fmt.Printf("\nRows left at the end: %s. Pruned (alertfan_store_pruned_rows_total): %s.\n\n", counts, pruned)
	return nil
}

// model renders a duration as a config value (whole seconds).
func model(d time.Duration) string { return fmt.Sprintf("%ds", int(d.Seconds())) }

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// rowCounts reads the tables' row counts through a read-only connection
// (WAL readers do not disturb the running alertfan).
func rowCounts(path string) string {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return err.Error()
	}
	defer db.Close()
	var parts []string
	for _, t := range []string{"alertfan_state", "alertfan_alert", "river_job", "alertfan_history"} {
		var n int64
		if err := db.QueryRow(`SELECT COUNT(*) FROM ` + t).Scan(&n); err != nil {
			parts = append(parts, t+" ?")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %d", t, n))
	}
	return strings.Join(parts, ", ")
}

// scrape returns the samples of one metric family from /metrics, as
// "label value" pairs.
func scrape(url, name string) string {
	lines, err := metricLines(url)
	if lines == nil && err != nil {
		return err.Error() // no answer; a body cut short gives what was read
	}
	var out []string
	for _, sm := range samples(lines, name) {
		lbl := sm.labels
		if _, v, ok := strings.Cut(lbl, `="`); ok {
			lbl = strings.TrimSuffix(v, `"`)
		}
		if sm.value != "0" {
			out = append(out, lbl+" "+sm.value)
		}
	}
	return strings.Join(out, ", ")
}

var (
	soakN         = flag.Int("soak", 0, "instead of benchmarking, run the retention soak with this many alerts (fired then resolved)")
	soakRetention = flag.Duration("soak.retention", time.Minute, "every storage.retention for -soak")
	soakEvery     = flag.Duration("soak.every", 30*time.Second, "sampling interval for -soak")
	soakIdle      = flag.Duration("soak.idle", 3*time.Minute, "how long -soak samples the idle store after sending")
	soakSenders   = flag.Int("soak.senders", 8, "concurrent senders for -soak")
)

// runSoak runs the soak alone (see soak).
func runSoak(bin string) error {
	work, err := os.MkdirTemp("", "alertfan-soak")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if bin == "" {
		if bin, err = buildAlertfan(work); err != nil {
			return fmt.Errorf("build alertfan: %w", err)
		}
	}
	return soak(work, bin, soakOptions{alerts: *soakN, retention: *soakRetention, every: *soakEvery, idle: *soakIdle, senders: *soakSenders})
}
