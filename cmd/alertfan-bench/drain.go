package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// This file holds the scenarios of issue 14 (deliveries running at full
// speed) and their baselines:
//
//   - the decode + fdatasync group-commit baseline: the decode-only
//     handler that also appends each body to a file, many requests per
//     fdatasync, and answers only after it — the least any durable intake
//     on this disk can cost;
//   - draining: ingest (closed loop) and latency at a fixed 500/s while
//     alertfan delivers everything, unthrottled, to a local fake;
//   - drain: 50,000 queued alerts delivered with no intake, against raw
//     Events v2 POSTs to the same fake with the same concurrency.
//
// With -pprof DIR, alertfan is built with -tags pprof and a CPU profile of
// each scenario is written to DIR/<scenario>.pprof.

var pprofDir string

// fsyncReq is one decoded request waiting for its fdatasync.
type fsyncReq struct {
	body []byte
	done chan error
}

// serveFsyncBaseline decodes each webhook like the decode-only baseline,
// then appends the body to path; one goroutine writes whatever requests
// are waiting and fdatasyncs once for all of them (group commit), and each
// request is answered after the sync that covers it.
func serveFsyncBaseline(addr, path string) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	reqs := make(chan fsyncReq, 4096)
	go func() {
		var buf bytes.Buffer
		for first := range reqs {
			batch := []fsyncReq{first}
		gather:
			for len(batch) < 512 {
				select {
				case r := <-reqs:
					batch = append(batch, r)
				default:
					break gather
				}
			}
			buf.Reset()
			for _, r := range batch {
				buf.Write(r.body)
				buf.WriteByte('\n')
			}
			_, err := f.Write(buf.Bytes())
			if err == nil {
				err = syscall.Fdatasync(int(f.Fd()))
			}
			for _, r := range batch {
				r.done <- err
			}
		}
	}()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		var m baselineMessage
		if err := json.Unmarshal(body, &m); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		done := make(chan error, 1)
		reqs <- fsyncReq{body: body, done: done}
		if err := <-done; err != nil {
			http.Error(w, err.Error(), 500)
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

// fsyncBaseline runs the group-commit baseline in its own process,
// closed loop and at 500/s.
func fsyncBaseline(work, self string, d time.Duration, senders int) (closed, at500 *result, err error) {
	addr := freeAddr()
	file := filepath.Join(work, fmt.Sprintf("fsync-baseline-%d.log", time.Now().UnixNano()))
	p, err := startProc(addr, work, self, "-fsync-baseline-server", addr, "-fsync-baseline-file", file)
	if err != nil {
		return nil, nil, err
	}
	defer os.Remove(file)
	defer p.stop()
	c0 := cpuSeconds(p.cmd.Process.Pid)
	closed = closedLoop("http://"+addr+"/webhook", senders, d, 0)
	closed.cpu = cpuSeconds(p.cmd.Process.Pid) - c0
	at500 = fixedRate("http://"+addr+"/webhook", 500, d)
	return closed, at500, nil
}

// pprofEnv gives the next alertfan a pprof address when profiling.
func pprofEnv() string {
	if pprofDir == "" {
		return ""
	}
	addr := freeAddr()
	os.Setenv("ALERTFAN_PPROF_ADDR", addr) //nolint:errcheck
	return addr
}

// traceScenarios, with -pprof, are the scenarios that get a runtime
// trace (-trace) instead of a CPU profile.
var traceScenarios = map[string]bool{}

// profile takes a CPU profile of p for d (at least 1 s) into
// pprofDir/name.pprof, or a runtime trace into pprofDir/name.trace when
// -trace names the scenario, and a heap profile d/4 in into
// pprofDir/name.heap; the returned func waits for them.
func profile(p *proc, name string, d time.Duration) func() {
	if pprofDir == "" || p.pprof == "" {
		return func() {}
	}
	secs := max(1, int(d.Seconds()))
	endpoint, ext := "profile", ".pprof"
	if traceScenarios[name] {
		endpoint, ext = "trace", ".trace"
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		saveProfile(fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", p.pprof, endpoint, secs), filepath.Join(pprofDir, name+ext))
	}()
	// The heap a quarter into the profile (in use at the last collection
	// then), for what a scenario's resident memory holds while it runs:
	// a drain is over before its profile is.
	heap := make(chan struct{})
	go func() {
		defer close(heap)
		time.Sleep(d / 4)
		saveProfile(fmt.Sprintf("http://%s/debug/pprof/heap", p.pprof), filepath.Join(pprofDir, name+".heap"))
	}()
	return func() { <-done; <-heap }
}

// saveProfile writes what url answers into file; a failure is reported on
// stderr, not fatal: profiles are extras of a run.
func saveProfile(url, file string) {
	resp, err := http.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile", file, err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile", file, err)
		return
	}
	defer f.Close()
	io.Copy(f, resp.Body) //nolint:errcheck
}

// countingPagerDuty is a fake PagerDuty that keeps no events, only counts.
func countingPagerDuty() (*sinkstest.PagerDuty, *atomic.Int64) {
	pd := sinkstest.NewPagerDuty()
	pd.CountOnly = true
	n := &atomic.Int64{}
	pd.OnEvent = func(sinkstest.PDEvent) { n.Add(1) }
	return pd, n
}

// draining measures ingest while alertfan delivers, unthrottled, every
// alert it takes to a local fake: a closed loop, then 500/s open loop
// right after it (the closed loop's backlog is still draining then).
func draining(work, self, bin string, d time.Duration, senders int, fsClosed, fs500 *result) error {
	pd, delivered := countingPagerDuty()
	defer pd.Close()
	ap, err := startAlertfan(work, "draining", bin, pd.EventsURL(), 6000000)
	if err != nil {
		return err
	}
	defer ap.stop()
	time.Sleep(time.Second)
	url := "http://" + ap.addr + "/webhook"
	c0 := delivered.Load()
	wait := profile(ap, "draining-closed", d)
	cpu0 := cpuSeconds(ap.cmd.Process.Pid)
	closed := closedLoop(url, senders, d, ap.cmd.Process.Pid)
	closed.cpu = cpuSeconds(ap.cmd.Process.Pid) - cpu0
	wait()
	c1 := delivered.Load()
	metrics := "http://" + ap.addr + "/metrics"
	h0, _ := scrapeHistogram(metrics, "alertfan_intake_duration_seconds")
	wait = profile(ap, "draining-500", d)
	at500 := fixedRate(url, 500, d)
	wait()
	c2 := delivered.Load()
	h1, _ := scrapeHistogram(metrics, "alertfan_intake_duration_seconds")
	waited := scrapeValue(metrics, "alertfan_delivery_intake_wait_seconds_total")

	fmt.Println("### Ingest while deliveries run unthrottled to a local fake PagerDuty")
	fmt.Println()
	fmt.Println("The target's limit is out of the way (6,000,000/min): every accepted alert is delivered at once, so intake shares the store and the CPU with the deliveries. The 500/s run starts right after the closed loop, while its backlog drains. Baseline: decode + append + fdatasync with group commit, its own process, same senders.")
	fmt.Println()
	fmt.Println("| handler | notifications/s | p50 | p99 | errors | deliveries/s meanwhile | server CPU per notification |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	fmt.Printf("| decode + fdatasync group-commit baseline, closed loop | %.0f | %s | %s | %d | — | %s |\n", fsClosed.rate(), ms(pct(fsClosed.lat, .5)), ms(pct(fsClosed.lat, .99)), fsClosed.errors, fsClosed.cpuPer())
	fmt.Printf("| alertfan, closed loop | %.0f | %s | %s | %d | %.0f | %s (with its deliveries) |\n", closed.rate(), ms(pct(closed.lat, .5)), ms(pct(closed.lat, .99)), closed.errors, float64(c1-c0)/closed.elapsed.Seconds(), closed.cpuPer())
	fmt.Printf("| decode + fdatasync group-commit baseline, 500/s | %.0f | %s | %s | %d | — | |\n", fs500.rate(), ms(pct(fs500.lat, .5)), ms(pct(fs500.lat, .99)), fs500.errors)
	fmt.Printf("| alertfan, 500/s | %.0f | %s | %s | %d | %.0f | |\n", at500.rate(), ms(pct(at500.lat, .5)), ms(pct(at500.lat, .99)), at500.errors, float64(c2-c1)/at500.elapsed.Seconds())
	fmt.Printf("\nalertfan / group-commit baseline throughput while draining: **%.2f×**; p99 at 500/s: **%s**.\n\n", closed.rate()/fsClosed.rate(), ms(pct(at500.lat, .99)))
	fmt.Printf("At 500/s, as alertfan measured its own requests (`alertfan_intake_duration_seconds`: decode, route, durable commit; the client's figures above add the wait for a CPU on a machine shared with the load and the fake): %s. Deliveries waited for intake (`alertfan_delivery_intake_wait_seconds_total`) %s s over the whole run.\n\n", h1.since(h0).summary(), waited)
	return nil
}

const drainAlerts = 50000

// drain queues 50,000 alerts behind PagerDuty's 120/min, lifts the limit
// with a SIGHUP, and times the delivery of the queue with no intake;
// the baseline is valid Events v2 POSTs to the same fake, as many at once
// as alertfan's senders (16).
func drain(work, bin string, senders int) error {
	pd, delivered := countingPagerDuty()
	defer pd.Close()
	ap, err := startAlertfan(work, "drain", bin, pd.EventsURL(), 120)
	if err != nil {
		return err
	}
	url := "http://" + ap.addr + "/webhook"
	start := time.Now().UTC()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Int64
	const per = 50
	for i := 0; i < senders; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				b := int(next.Add(1)) - 1
				if b*per >= drainAlerts {
					return
				}
				as := make([]sinkstest.WebhookAlert, 0, per)
				for k := b * per; k < (b+1)*per; k++ {
					as = append(as, sinkstest.NamedAlert("Drain", "critical", fmt.Sprintf("drain-%06d", k), "firing", start))
				}
				if err := post(url, sinkstest.Webhook("bench", fmt.Sprintf(`{}:{batch="%d"}`, b), nil, as...)); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		ap.stop()
		return fmt.Errorf("drain: %d notifications failed while queueing", n)
	}
	queuedIn := time.Since(start)
	time.Sleep(2 * time.Second)
	before := delivered.Load()
	cfgPath := filepath.Join(work, "drain", "config.yml")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		ap.stop()
		return err
	}
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(string(b), "rate_limit_per_minute: 120\n", "rate_limit_per_minute: 6000000\n", 1)), 0o600); err != nil {
		ap.stop()
		return err
	}
	t0 := time.Now()
	cpu0 := cpuSeconds(ap.cmd.Process.Pid)
	if err := ap.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		ap.stop()
		return err
	}
	wait := profile(ap, "drain", 10*time.Second)
	deadline := t0.Add(10 * time.Minute)
	for delivered.Load() < drainAlerts && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(t0)
	got := delivered.Load()
	cpu := cpuSeconds(ap.cmd.Process.Pid) - cpu0
	wait()
	_, hwm := rss(ap.cmd.Process.Pid)
	ap.stop()
	if got < drainAlerts {
		return fmt.Errorf("drain: %d of %d delivered in 10 minutes", got, drainAlerts)
	}
	rate := float64(got-before) / took.Seconds()

	raw := rawPosts(pd.EventsURL(), senders, 10*time.Second)

	fmt.Println("### Drain: 50,000 queued alerts, no intake, to a local fake PagerDuty")
	fmt.Println()
	fmt.Printf("50,000 alerts queued behind 120/min (accepted in %.1f s), then a SIGHUP lifts the limit to 6,000,000/min; timed from the reload to the fake's 50,000th event. Baseline: valid Events v2 trigger POSTs to the same fake by %d concurrent senders for 10 s.\n\n", queuedIn.Seconds(), senders)
	fmt.Println("| | events/s | time | errors | peak RSS | alertfan CPU per event |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	fmt.Printf("| raw Events v2 POSTs, %d senders | %.0f | 10 s | %d | — | — |\n", senders, raw.rate(), raw.errors)
	fmt.Printf("| alertfan drains the queue | %.0f | %.1f s for %d | 0 | %.1f MiB | %.3f ms |\n", rate, took.Seconds(), got-before, hwm, 1000*cpu/float64(got-before))
	fmt.Printf("\nalertfan / raw round trips: **%.2f×**.\n\n", rate/raw.rate())
	return nil
}

// rawPosts sends valid Events v2 triggers, each with its own dedup key, to
// the fake from senders goroutines for d.
func rawPosts(url string, senders int, d time.Duration) *result {
	r := &result{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var seq atomic.Int64
	stop := time.Now().Add(d)
	start := time.Now()
	for i := 0; i < senders; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, errs := 0, 0
			for time.Now().Before(stop) {
				k := seq.Add(1)
				body := fmt.Sprintf(`{"routing_key":%q,"event_action":"trigger","dedup_key":"raw-%d","payload":{"summary":"Raw on host-%d","source":"host-%d","severity":"critical","timestamp":%q,"custom_details":{"alertname":"Raw","instance":"host-%d"}},"client":"bench"}`,
					routingKey, k, k, k, time.Now().UTC().Format(time.RFC3339Nano), k)
				code, err := postJSON(url, strings.NewReader(body))
				if err != nil || code != http.StatusAccepted {
					errs++
					continue
				}
				n++
			}
			mu.Lock()
			r.n += n
			r.errors += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	return r
}

// drainParts runs the draining and drain scenarios that parts selects.
func drainParts(work, self, bin string, d time.Duration, senders int, parts map[string]bool) error {
	if parts["draining"] {
		fsClosed, fs500, err := fsyncBaseline(work, self, d, senders)
		if err != nil {
			return err
		}
		if err := draining(work, self, bin, d, senders, fsClosed, fs500); err != nil {
			return err
		}
	}
	if parts["drain"] {
		return drain(work, bin, senders)
	}
	return nil
}

// cpuSeconds is the user + system CPU time a process has used (from
// /proc/<pid>/stat, in clock ticks of 1/100 s). On a machine shared with
// other work, CPU per operation moves less than throughput does.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields count from its ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	sy, _ := strconv.ParseFloat(f[12], 64)
	return (u + sy) / 100
}

// cpuPer is the server's CPU time per notification of the run.
func (r *result) cpuPer() string {
	if r.n == 0 || r.cpu == 0 {
		return "—"
	}
	return fmt.Sprintf("%.3f ms", 1000*r.cpu/float64(r.n))
}
