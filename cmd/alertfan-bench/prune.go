package main

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// pruneOptions sizes the prune scenario.
type pruneOptions struct {
	firing, resolved int // alerts left firing, alerts fired then resolved
	rate             int // the probe's notifications per second
}

var pruneOpts pruneOptions

// pruneStall measures intake while the janitor prunes a large backlog of
// rows past their retention at once, as after an operator shortens
// storage.retention on a big store, or the store comes back after a long
// stop. A store is filled with alerts that stay firing, then alerts fired
// and resolved after them, and every delivery drained; the probe (fixed
// rate, 5 new alerts per notification) runs on it for the baseline; then
// alertfan restarts with every retention at 1 s, and the same probe runs
// while the janitor prunes (its first run is 5 s after start) and gives
// the freed pages back. Reported: the probe's latency before and while
// the janitor works, as a ratio, and how long it worked and what it
// pruned.
func pruneStall(work, bin string, o pruneOptions) error {
	pd, events := countingPagerDuty()
	defer pd.Close()
	long := "  retention:\n    completed_jobs: 1h\n    resolved_states: 1h\n    history: 1h\n"
	short := "  retention:\n    completed_jobs: 1s\n    resolved_states: 1s\n    history: 1s\n"
	p, err := startAlertfanWith(work, "prune", bin, pd.EventsURL(), 6_000_000, long)
	if err != nil {
		return err
	}
	url := "http://" + p.addr + "/webhook"
	const per = 50
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	send := func(prefix string, n int, status string) error {
		jobs := make(chan int)
		var failed atomic.Int64
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					as := make([]sinkstest.WebhookAlert, 0, per)
					for j := i; j < min(i+per, n); j++ {
						as = append(as, sinkstest.NamedAlert("PruneBench", "warning", fmt.Sprintf("%s-%d", prefix, j), status, base))
					}
					b := sinkstest.Webhook("bench", fmt.Sprintf(`{}:{batch="%s-%d"}`, prefix, i), map[string]string{"batch": fmt.Sprint(i)}, as...)
					if !postRetrying(url, b) {
						failed.Add(1)
					}
				}
			}()
		}
		for i := 0; i < n; i += per {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		if f := failed.Load(); f > 0 {
			return fmt.Errorf("prune: %d notifications failed", f)
		}
		return nil
	}
	fill := time.Now()
	for _, step := range []struct {
		prefix string
		n      int
		status string
	}{{"held", o.firing, "firing"}, {"gone", o.resolved, "firing"}, {"gone", o.resolved, "resolved"}} {
		if err := send(step.prefix, step.n, step.status); err != nil {
			p.stop()
			return err
		}
	}
	// Every delivery done (a resolved state goes only once its resolve
	// has been; a resolve that came before its trigger went makes no
	// call): no job waiting or running, twice in a row.
	queued := func() float64 {
		lines, _ := metricLines("http://" + p.addr + "/metrics")
		var n float64
		for _, sm := range samples(lines, "alertfan_queue_jobs") {
			for _, st := range []string{"available", "running", "retryable", "scheduled"} {
				if sm.labels == `sink="pagerduty",state="`+st+`"` {
					f, _ := strconv.ParseFloat(sm.value, 64)
					n += f
				}
			}
		}
		return n
	}
	for deadline, idle := time.Now().Add(10*time.Minute), 0; idle < 2 && time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		if queued() == 0 {
			idle++
		} else {
			idle = 0
		}
	}
	fmt.Fprintf(os.Stderr, "prune: filled in %s, %d events delivered\n", time.Since(fill).Round(time.Second), events.Load())
	before := fixedRate(url, o.rate, 20*time.Second)
	p.stop()
	cfg := filepath.Join(work, "prune", "config.yml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		return err
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), long, short, 1)), 0o600); err != nil {
		return err
	}
	dir := filepath.Join(work, "prune")
	addr := freeAddr()
	p, err = startProc(addr, dir, bin, "--config.file=config.yml", "--web.listen-address="+addr, "--log.level=error")
	if err != nil {
		return err
	}
	defer p.stop()
	url, metrics := "http://"+addr+"/webhook", "http://"+addr+"/metrics"
	pruned := func() (map[string]float64, float64) {
		lines, _ := metricLines(metrics)
		m, sum := map[string]float64{}, 0.0
		for _, sm := range samples(lines, "alertfan_store_pruned_rows_total") {
			f, _ := strconv.ParseFloat(sm.value, 64)
			m[strings.TrimSuffix(strings.TrimPrefix(sm.labels, `table="`), `"`)] = f
			sum += f
		}
		return m, sum
	}
	// The probe runs in 2-second slices until the janitor has started and
	// then neither pruned nor given pages back (its incremental vacuum)
	// for two slices; the slices in which it did are the janitor's.
	during := &result{}
	var busyTime time.Duration
	_, last := pruned()
	started, still := false, 0
	for deadline := time.Now().Add(15 * time.Minute); time.Now().Before(deadline); {
		r := fixedRate(url, o.rate, 2*time.Second)
		_, now := pruned()
		free, _ := scrapeFloat(metrics, "alertfan_store_free_bytes")
		fmt.Fprintf(os.Stderr, "prune: slice p50 %s p99 %s max %s, pruned %.0f, free %.1f MiB\n", ms(pct(r.lat, 0.5)), ms(pct(r.lat, 0.99)), ms(pct(r.lat, 1)), now-last, free/(1<<20))
		switch {
		case now > last || started && free >= 1<<20:
			started, still = true, 0
			during.lat = append(during.lat, r.lat...)
			during.errors += r.errors
			busyTime += r.elapsed
		case started:
			still++
		}
		last = now
		if started && still >= 2 {
			break
		}
	}
	counts, _ := pruned()
	var rows []string
	for _, t := range slices.Sorted(maps.Keys(counts)) {
		if counts[t] > 0 {
			rows = append(rows, fmt.Sprintf("%s %.0f", t, counts[t]))
		}
	}
	fmt.Printf("### Intake while the janitor prunes a large backlog at once\n\n")
	fmt.Printf("A store of %d alerts still firing and, after them, %d fired and resolved, every event delivered (1h retentions); alertfan restarted with completed_jobs, resolved_states and history at 1 s, so that its janitor's first run (5 s after start) prunes all of them at once. A probe of %d notifications/s (5 new alerts each) before the restart (the baseline) and while the janitor pruned and gave the pages back.\n\n", o.firing, o.resolved, o.rate)
	fmt.Println("| | requests | p50 | p99 | max | errors |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, r := range []struct {
		name string
		r    *result
	}{{"before (baseline)", before}, {"while the janitor works", during}} {
		fmt.Printf("| %s | %d | %s | %s | %s | %d |\n", r.name, len(r.r.lat), ms(pct(r.r.lat, 0.5)), ms(pct(r.r.lat, 0.99)), ms(pct(r.r.lat, 1)), r.r.errors)
	}
	ratio := func(p float64) string {
		b := pct(before.lat, p)
		if b == 0 {
			return "—"
		}
		return fmt.Sprintf("%.1f×", float64(pct(during.lat, p))/float64(b))
	}
	fmt.Printf("\nWhile the janitor works, against the baseline: p50 %s, p99 %s, max %s. It worked about %s (the 2 s slices in which `alertfan_store_pruned_rows_total` moved, or `alertfan_store_free_bytes` was 1 MiB or more: its incremental vacuum); rows pruned: %s.\n\n",
		ratio(0.5), ratio(0.99), ratio(1), busyTime.Round(time.Second), strings.Join(rows, ", "))
	return nil
}
