// Command alertfan-bench measures alertfan against baselines measured in the
// same run, and prints a Markdown report for BENCHMARKS.md:
//
//   - ingest: POST /webhook (5 alerts per notification, 16 concurrent
//     senders) on alertfan (SQLite, durable) vs a bare decode-only handler;
//   - fixed-rate intake latency at 500 notifications/s;
//   - accept → delivered latency to a local fake PagerDuty at 200/s;
//   - RSS idle and while ingesting at full speed;
//   - with -backlog-storm: 2,000 distinct alerts to a fake Backlog limited
//     to 600 writes/min, drained against the minimum time that allows;
//   - with -mechanics: the queue's re-planning, priority, recovery, storm and escalation
//     scenarios (see mechanics.go);
//   - draining and drain: ingest while deliveries run unthrottled, and a
//     50,000-alert queue drained with no intake (see drain.go).
//   - with -prune: intake while the janitor prunes a large backlog of
//     rows past their retention at once (see prune.go, ~4 minutes);
//   - with -soak N: alone, the retention soak (see soak.go).
//
// Usage: go run ./cmd/alertfan-bench [-duration 10s] [-backlog-storm] [-mechanics] [-prune] [-only ingest,draining,drain] [-pprof DIR]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

const routingKey = "0123456789abcdef0123456789abcdef"

func main() {
	baseline := flag.String("baseline-server", "", "internal: serve the decode-only baseline on this address")
	duration := flag.Duration("duration", 10*time.Second, "length of each closed-loop and fixed-rate run")
	senders := flag.Int("senders", 16, "concurrent senders for the closed-loop run")
	storm := flag.Bool("backlog-storm", false, "also run the 2,000-alert Backlog storm (takes ~4 minutes)")
	mech := flag.Bool("mechanics", false, "also run the queue-mechanics scenarios: re-plan, priority, recovery, storm, escalation (~2 minutes)")
	only := flag.String("only", "", "run only these parts, comma-separated: ingest, draining, drain, mechanics, storm, history, replicas, prune")
	fsyncBase := flag.String("fsync-baseline-server", "", "internal: serve the decode + fdatasync group-commit baseline on this address")
	fsyncFile := flag.String("fsync-baseline-file", "", "internal: the file the group-commit baseline appends to")
	flag.StringVar(&pprofDir, "pprof", "", "build alertfan with -tags pprof and write a CPU profile of each scenario into this directory")
	traces := flag.String("trace", "", "with -pprof: take a runtime trace instead of a CPU profile of these scenarios, comma-separated (ingest, draining-closed, draining-500, drain)")
	bin := flag.String("alertfan", "", "alertfan binary (default: build ./cmd/alertfan)")
	driveURL := flag.String("drive", "", "instead of benchmarking, send a realistic alert mix to this running alertfan webhook URL")
	driveRate := flag.Int("drive.rate", 20, "notifications per second for -drive")
	pruneRun := flag.Bool("prune", false, "also measure intake while the janitor prunes a large backlog at once (~4 minutes; sized by -prune.firing and -prune.resolved)")
	flag.IntVar(&pruneOpts.firing, "prune.firing", 200_000, "for -prune: alerts left firing, older than the resolved ones")
	flag.IntVar(&pruneOpts.resolved, "prune.resolved", 200_000, "for -prune: alerts fired and resolved, all pruned at once")
	flag.IntVar(&pruneOpts.rate, "prune.rate", 200, "for -prune: the probe's notifications per second")
	reps := flag.Bool("replicas", false, "also run 1, 2 and 3 replicas on one PostgreSQL database beside SQLite, and the storm with 3 (~8 minutes)")
	flag.DurationVar(&replicaLatency, "replicas.latency", 0, "for -replicas: the fake PagerDuty answers each drained event after this long (a distant API), so that the drain is bound by the calls each replica keeps in flight rather than by the CPU")
	flag.StringVar(&postgresDSN, "postgres-dsn", postgresDSN, "PostgreSQL server for -replicas (default $ALERTFAN_TEST_POSTGRES_DSN); a fresh database per run")
	flag.Parse()
	for _, name := range strings.Split(*traces, ",") {
		if name != "" {
			traceScenarios[name] = true
		}
	}
	if *soakN > 0 {
		if err := runSoak(*bin); err != nil {
			fmt.Fprintln(os.Stderr, "alertfan-bench:", err)
			os.Exit(1)
		}
		return
	}
	if *driveURL != "" {
		if err := drive(*driveURL, *driveRate, *duration); err != nil {
			fmt.Fprintln(os.Stderr, "alertfan-bench:", err)
			os.Exit(1)
		}
		return
	}
	if *baseline != "" {
		serveBaseline(*baseline)
		return
	}
	if *fsyncBase != "" {
		serveFsyncBaseline(*fsyncBase, *fsyncFile)
		return
	}
	parts := map[string]bool{"ingest": true, "draining": true, "drain": true, "storm": *storm, "mechanics": *mech, "replicas": *reps, "prune": *pruneRun}
	if *only != "" {
		parts = map[string]bool{}
		for _, p := range strings.Split(*only, ",") {
			parts[strings.TrimSpace(p)] = true
		}
	}
	if err := run(*duration, *senders, parts, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "alertfan-bench:", err)
		os.Exit(1)
	}
}

// baselineMessage is what the decode-only handler decodes: the same shape
// alertfan decodes, without validation, routing or storage.
type baselineMessage struct {
	Version  string `json:"version"`
	GroupKey string `json:"groupKey"`
	Alerts   []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		StartsAt    time.Time         `json:"startsAt"`
		Fingerprint string            `json:"fingerprint"`
	} `json:"alerts"`
}

func serveBaseline(addr string) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m baselineMessage
		if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&m); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"success"}`) //nolint:errcheck
	})
	if err := http.ListenAndServe(addr, h); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type proc struct {
	cmd  *exec.Cmd
	addr string
	logs bytes.Buffer
	// pprof is the process's net/http/pprof address, with -pprof.
	pprof string
}

func startProc(addr, dir, path string, args ...string) (*proc, error) {
	p := &proc{addr: addr}
	p.cmd = exec.Command(path, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout = &p.logs
	p.cmd.Stderr = &p.logs
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return p, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.stop()
	return nil, fmt.Errorf("%s did not start: %s", path, p.logs.String())
}

func (p *proc) stop() {
	p.cmd.Process.Signal(os.Interrupt) //nolint:errcheck
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }() //nolint:errcheck
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill() //nolint:errcheck
		<-done
	}
}

// rss reads VmRSS and VmHWM (peak) of a process, in MiB.
func rss(pid int) (cur, peak float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			cur = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return cur, peak
}

var bodyCounter atomic.Int64

// notification returns a 5-alert webhook with fresh alerts, so every
// request is new work for alertfan (no coalescing flatters the numbers).
func notification() ([]byte, []string) {
	n := bodyCounter.Add(1)
	start := time.Now().UTC()
	alerts := make([]sinkstest.WebhookAlert, 5)
	keys := make([]string, 5)
	for i := range alerts {
		alerts[i] = sinkstest.NamedAlert("BenchAlert", "critical", fmt.Sprintf("host-%d-%d", n, i), "firing", start)
		keys[i] = alerts[i].Fingerprint
	}
	return sinkstest.Webhook("bench", fmt.Sprintf(`{}:{group="%d"}`, n), map[string]string{"group": strconv.FormatInt(n, 10)}, alerts...), keys
}

type result struct {
	n       int
	errors  int
	elapsed time.Duration
	lat     []time.Duration
	peakRSS float64
	cpu     float64  // CPU seconds the server process spent during the run
	sentAt  sync.Map // fingerprint → time the request was sent
}

func (r *result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

func pct(l []time.Duration, p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// client sends the load and the raw baseline's calls. Each call's
// timeout is its context's: http.Client.Timeout costs two goroutines and a
// timer per request (net/http's setRequestCancel), which alertfan's sinks
// do not pay either.
var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}

// postJSON POSTs body to url within 30 s, reads the answer and returns
// its status.
func postJSON(url string, body io.Reader) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck
	resp.Body.Close()
	return resp.StatusCode, nil
}

// postRetrying posts body until alertfan takes it, as Alertmanager retries
// a refused notification (a 503 while the store is busy): up to 21 tries,
// 100 ms apart. It reports whether one was taken.
func postRetrying(url string, body []byte) bool {
	for attempt := 0; ; attempt++ {
		if post(url, body) == nil {
			return true
		} else if attempt == 20 {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func post(url string, body []byte) error {
	code, err := postJSON(url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("status %d", code)
	}
	return nil
}

// closedLoop runs senders as fast as answers come back.
func closedLoop(url string, senders int, d time.Duration, pid int) *result {
	return closedLoopOver([]string{url}, senders, d, pid)
}

// closedLoopOver is closedLoop with sender i posting to urls[i%len(urls)];
// with pid > 0 it samples that process's RSS.
func closedLoopOver(urls []string, senders int, d time.Duration, pid int) *result {
	r := &result{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	start := time.Now()
	done := make(chan struct{})
	if pid > 0 {
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					if c, _ := rss(pid); c > r.peakRSS {
						r.peakRSS = c
					}
				}
			}
		}()
	}
	for i := 0; i < senders; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			errs := 0
			for time.Now().Before(stop) {
				body, _ := notification()
				t0 := time.Now()
				if err := post(urls[i%len(urls)], body); err != nil {
					errs++
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			r.lat = append(r.lat, local...)
			r.errors += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(done)
	r.elapsed = time.Since(start)
	r.n = len(r.lat)
	return r
}

// fixedRate sends rate notifications per second (open loop), so latency
// is measured under a known load rather than at saturation.
func fixedRate(url string, rate int, d time.Duration) *result {
	r := &result{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	total := int(d / interval)
	for i := 0; i < total; i++ {
		due := start.Add(time.Duration(i) * interval)
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		body, keys := notification()
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			for _, k := range keys {
				r.sentAt.Store(k, t0)
			}
			err := post(url, body)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.errors++
				return
			}
			r.lat = append(r.lat, time.Since(t0))
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	r.n = len(r.lat)
	return r
}

func buildAlertfan(dir string) (string, error) {
	out := filepath.Join(dir, "alertfan")
	args := []string{"build", "-o", out}
	if pprofDir != "" {
		args = append(args, "-tags", "pprof")
	}
	cmd := exec.Command("go", append(args, "./cmd/alertfan")...)
	cmd.Stderr = os.Stderr
	return out, cmd.Run()
}

func run(d time.Duration, senders int, parts map[string]bool, bin string) error {
	work, err := os.MkdirTemp("", "alertfan-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if bin == "" {
		if bin, err = buildAlertfan(work); err != nil {
			return fmt.Errorf("build alertfan: %w", err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	fmt.Printf("## alertfan benchmark — %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Printf("Machine: %d cores, %s/%s, %s. Each run %s; %d senders in the closed-loop runs; 5 alerts per notification, every alert new.\n\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), d, senders)
	if parts["ingest"] {
		if err := ingestParts(work, self, bin, d, senders); err != nil {
			return err
		}
	}
	if err := drainParts(work, self, bin, d, senders, parts); err != nil {
		return err
	}
	if parts["mechanics"] {
		if err := mechanics(work, bin); err != nil {
			return err
		}
	}
	if parts["storm"] {
		if err := backlogStorm(work, bin); err != nil {
			return err
		}
	}
	if parts["history"] {
		if err := historyCost(work, bin, d, senders); err != nil {
			return err
		}
	}
	if parts["prune"] {
		if err := pruneStall(work, bin, pruneOpts); err != nil {
			return err
		}
	}
	if parts["replicas"] {
		if err := replicasBench(work, bin, postgresDSN, d, senders); err != nil {
			return err
		}
	}
	return nil
}

// ingestParts measures ingest, fixed-rate latency, accept → delivered and
// memory, each beside its baseline.
func ingestParts(work, self, bin string, d time.Duration, senders int) error {

	// Baseline: the bare decode-only handler, in its own process like alertfan.
	baseAddr := freeAddr()
	bp, err := startProc(baseAddr, work, self, "-baseline-server", baseAddr)
	if err != nil {
		return err
	}
	c0 := cpuSeconds(bp.cmd.Process.Pid)
	base := closedLoop("http://"+baseAddr+"/webhook", senders, d, 0)
	base.cpu = cpuSeconds(bp.cmd.Process.Pid) - c0
	bp.stop()
	fsClosed, _, err := fsyncBaseline(work, self, d, senders)
	if err != nil {
		return err
	}

	// alertfan on the embedded default store, delivering to a fake PagerDuty.
	var delivered sync.Map // dedup key → time received
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	pd.OnEvent = func(e sinkstest.PDEvent) { delivered.LoadOrStore(e.DedupKey, e.Received) }

	// Ingest runs with PagerDuty's default per-key rate (120/min), as a
	// real storm meets it: intake takes everything durably at once and
	// deliveries drain at the rate PagerDuty allows.
	ap, err := startAlertfan(work, "ingest", bin, pd.EventsURL(), 120)
	if err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	idle, _ := rss(ap.cmd.Process.Pid)
	url := "http://" + ap.addr + "/webhook"
	wait := profile(ap, "ingest", d)
	c0 = cpuSeconds(ap.cmd.Process.Pid)
	metrics := "http://" + ap.addr + "/metrics"
	w0 := scrapeWriter(metrics)
	ingest := closedLoop(url, senders, d, ap.cmd.Process.Pid)
	ingest.cpu = cpuSeconds(ap.cmd.Process.Pid) - c0
	writer := scrapeWriter(metrics).report(w0, ingest)
	wait()
	_, hwm := rss(ap.cmd.Process.Pid)
	at500 := fixedRate(url, 500, d)
	ap.stop()
	base500 := func() *result {
		bp, err := startProc(baseAddr, work, self, "-baseline-server", baseAddr)
		if err != nil {
			return &result{}
		}
		defer bp.stop()
		return fixedRate("http://"+baseAddr+"/webhook", 500, d)
	}()

	// Delivery latency: a fresh store, the target's limit out of the way.
	lp, err := startAlertfan(work, "latency", bin, pd.EventsURL(), 6000000)
	if err != nil {
		return err
	}
	defer lp.stop()
	time.Sleep(time.Second)
	at200 := fixedRate("http://"+lp.addr+"/webhook", 200, d)
	waitDrained(pd, 60*time.Second)
	var dl []time.Duration
	missing := 0
	at200.sentAt.Range(func(k, v any) bool {
		key := sha256hex("am:" + k.(string))
		if got, ok := delivered.Load(key); ok {
			dl = append(dl, got.(time.Time).Sub(v.(time.Time)))
		} else {
			missing++
		}
		return true
	})

	fmt.Println("### Ingest (closed loop, durable commit before 200)")
	fmt.Println()
	fmt.Println("alertfan routes every alert to one PagerDuty target at its default rate limit (120 events/min), so deliveries drain behind intake as in a real storm.")
	fmt.Println()
	fmt.Println("| handler | notifications/s | alerts/s | p50 | p99 | errors | server CPU per notification |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	fmt.Printf("| bare decode-only baseline | %.0f | %.0f | %s | %s | %d | %s |\n", base.rate(), 5*base.rate(), ms(pct(base.lat, .5)), ms(pct(base.lat, .99)), base.errors, base.cpuPer())
	fmt.Printf("| decode + fdatasync group-commit baseline | %.0f | %.0f | %s | %s | %d | %s |\n", fsClosed.rate(), 5*fsClosed.rate(), ms(pct(fsClosed.lat, .5)), ms(pct(fsClosed.lat, .99)), fsClosed.errors, fsClosed.cpuPer())
	fmt.Printf("| alertfan (SQLite, WAL, synchronous FULL) | %.0f | %.0f | %s | %s | %d | %s |\n", ingest.rate(), 5*ingest.rate(), ms(pct(ingest.lat, .5)), ms(pct(ingest.lat, .99)), ingest.errors, ingest.cpuPer())
	fmt.Printf("\nalertfan / decode-only baseline throughput: **%.2f×**; / group-commit baseline: **%.2f×**.\n\n", ingest.rate()/base.rate(), ingest.rate()/fsClosed.rate())
	fmt.Printf("The store's single writer (SQLite takes one) was %s: near 100%% it is the bottleneck.\n\n", writer)
	fmt.Println("### Intake latency at a fixed 500 notifications/s")
	fmt.Println()
	fmt.Println("| handler | sent/s | p50 | p99 | errors |")
	fmt.Println("|---|---:|---:|---:|---:|")
	fmt.Printf("| bare decode-only baseline | %.0f | %s | %s | %d |\n", base500.rate(), ms(pct(base500.lat, .5)), ms(pct(base500.lat, .99)), base500.errors)
	fmt.Printf("| alertfan | %.0f | %s | %s | %d |\n\n", at500.rate(), ms(pct(at500.lat, .5)), ms(pct(at500.lat, .99)), at500.errors)
	fmt.Println("### Accept → delivered to a local fake PagerDuty at 200 notifications/s (1,000 alerts/s)")
	fmt.Println()
	fmt.Println("Measured from the moment the sender starts its POST to the moment the fake PagerDuty receives the event.")
	fmt.Println()
	fmt.Println("| alerts | delivered | p50 | p99 | max |")
	fmt.Println("|---:|---:|---:|---:|---:|")
	fmt.Printf("| %d | %d | %s | %s | %s |\n\n", len(dl)+missing, len(dl), ms(pct(dl, .5)), ms(pct(dl, .99)), ms(pct(dl, 1)))
	fmt.Println("### Memory (RSS of the alertfan process)")
	fmt.Println()
	fmt.Printf("| idle | peak while ingesting at full speed (VmHWM) | sampled max during ingest |\n|---:|---:|---:|\n| %.1f MiB | %.1f MiB | %.1f MiB |\n\n", idle, hwm, ingest.peakRSS)
	return nil
}

func startAlertfan(work, name, bin, pdURL string, perMinute int) (*proc, error) {
	return startAlertfanWith(work, name, bin, pdURL, perMinute, "")
}

// startAlertfanWith is startAlertfan with more storage settings (YAML
// lines indented under storage:).
func startAlertfanWith(work, name, bin, pdURL string, perMinute int, storage string) (*proc, error) {
	dir := filepath.Join(work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`storage:
  driver: sqlite
  path: data/alertfan.db
%sroute:
  receiver: bench
receivers:
  - name: bench
    pagerduty_configs:
      - routing_key: %s
        url: %s
        rate_limit_per_minute: %d
`, storage, routingKey, pdURL, perMinute)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	addr := freeAddr()
	pp := pprofEnv()
	p, err := startProc(addr, dir, bin, "--config.file=config.yml", "--web.listen-address="+addr, "--log.level=error")
	if p != nil {
		p.pprof = pp
	}
	return p, err
}

func waitDrained(pd *sinkstest.PagerDuty, max time.Duration) {
	deadline := time.Now().Add(max)
	last, stable := -1, 0
	for time.Now().Before(deadline) {
		n := len(pd.Events())
		if n == last {
			stable++
			if stable >= 10 {
				return
			}
		} else {
			stable = 0
		}
		last = n
		time.Sleep(100 * time.Millisecond)
	}
}
