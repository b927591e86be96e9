package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// replicaRun is one row of the replicas table.
type replicaRun struct {
	store    string
	replicas int
	ingest   *result
	alerts   int           // accepted
	drain    time.Duration // first to last delivery once the limit is lifted
	drained  int           // delivered once the limit was lifted
	total    int           // delivered in all
}

// replicaLatency is how long the fake PagerDuty takes to answer each call
// of the drain (-replicas.latency): 0 measures a drain bound by the
// machine's CPU, a round trip like a distant API's one bound by the calls
// in flight that each replica keeps (at most 128 connections per target
// host).
var replicaLatency time.Duration

// postgresDSN is the server -replicas creates its databases on.
var postgresDSN = os.Getenv("ALERTFAN_TEST_POSTGRES_DSN")

// replicasBench compares 1, 2 and 3 alertfan processes on one PostgreSQL
// database (a fresh database per run) with one process on SQLite:
//
//   - ingest: senders in a closed loop, spread round robin over the
//     replicas, every alert routed to one PagerDuty target at 120/min (the
//     deliveries wait scheduled, as in a storm);
//   - drain: the replicas are stopped, restarted together with the
//     target's limit lifted, and deliver everything accepted; the drain is
//     the time from the first delivery to the last.
//
// Then the Backlog storm with 3 replicas: the rate budget they share keeps
// the key's limit.
func replicasBench(work, bin, dsn string, d time.Duration, senders int) error {
	if dsn == "" {
		return fmt.Errorf("-replicas needs PostgreSQL: set -postgres-dsn or ALERTFAN_TEST_POSTGRES_DSN")
	}
	var runs []replicaRun
	r, err := replicaScenario(work, bin, "", 1, d, senders)
	if err != nil {
		return err
	}
	runs = append(runs, r)
	for n := 1; n <= 3; n++ {
		db, drop, err := freshDatabase(dsn)
		if err != nil {
			return err
		}
		r, err := replicaScenario(work, bin, db, n, d, senders)
		drop()
		if err != nil {
			return err
		}
		runs = append(runs, r)
	}
	fmt.Println("### Replicas: 1, 2 and 3 alertfan processes on one PostgreSQL database, beside one on SQLite")
	fmt.Println()
	fmt.Printf("Ingest: %d senders for %s, spread over the replicas, PagerDuty target at 120/min. Drain: the replicas restarted together with the limit lifted, first to last delivery of everything accepted", senders, d)
	if replicaLatency > 0 {
		fmt.Printf(", the fake PagerDuty answering each call after %s", replicaLatency)
	}
	fmt.Print(".\n\n")
	fmt.Println("| store | replicas | notifications/s | alerts/s | p99 | errors | alerts drained | drain | drained/s | drain vs 1 PostgreSQL replica |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	var onePG float64
	for _, r := range runs {
		rate := float64(r.drained) / r.drain.Seconds()
		if r.store == "PostgreSQL" && r.replicas == 1 {
			onePG = rate
		}
		ratio := "—"
		if r.store == "PostgreSQL" && onePG > 0 {
			ratio = fmt.Sprintf("%.2f×", rate/onePG)
		}
		fmt.Printf("| %s | %d | %.0f | %.0f | %s | %d | %d of %d | %.1f s | %.0f | %s |\n", r.store, r.replicas, r.ingest.rate(), 5*r.ingest.rate(),
			ms(pct(r.ingest.lat, .99)), r.ingest.errors, r.total, r.alerts, r.drain.Seconds(), rate, ratio)
	}
	fmt.Println()
	db, drop, err := freshDatabase(dsn)
	if err != nil {
		return err
	}
	defer drop()
	return replicaStorm(work, bin, db, 3)
}

// freshDatabase creates a database of its own on the server of dsn and
// returns its DSN and a function that drops it.
func freshDatabase(dsn string) (string, func(), error) {
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		return "", nil, err
	}
	b := make([]byte, 6)
	rand.Read(b) //nolint:errcheck
	name := "alertfan_bench_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("create database: %w", err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		admin.Close()
		return "", nil, err
	}
	u.Path = "/" + name
	return u.String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`) //nolint:errcheck
		admin.Close()
	}, nil
}

// replicaDirs writes n working directories with config (the storage part
// from dsn: SQLite when empty).
func replicaDirs(work, name, dsn string, n int, config string) ([]string, error) {
	storage := "storage:\n  driver: sqlite\n  path: data/alertfan.db\n"
	if dsn != "" {
		// A small pool each: 3 replicas stay well under PostgreSQL's
		// default max_connections (100) on a server others use too.
		storage = "storage:\n  driver: postgres\n  dsn_file: dsn\n  max_connections: 16\n"
	}
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = filepath.Join(work, fmt.Sprintf("%s-%d", name, i))
		if err := os.MkdirAll(dirs[i], 0o755); err != nil {
			return nil, err
		}
		if dsn != "" {
			if err := os.WriteFile(filepath.Join(dirs[i], "dsn"), []byte(dsn), 0o600); err != nil {
				return nil, err
			}
		}
		if err := os.WriteFile(filepath.Join(dirs[i], "config.yml"), []byte(storage+config), 0o600); err != nil {
			return nil, err
		}
	}
	return dirs, nil
}

// startAll starts one alertfan per directory, all at once; the first one
// alone when the database is new (it migrates).
func startAll(dirs []string, bin string, fresh bool) ([]*proc, error) {
	ps := make([]*proc, len(dirs))
	errs := make([]error, len(dirs))
	start := func(i int) {
		addr := freeAddr()
		ps[i], errs[i] = startProc(addr, dirs[i], bin, "--config.file=config.yml", "--web.listen-address="+addr, "--log.level=error")
		if errs[i] == nil {
			errs[i] = waitReady(addr)
		}
	}
	first := 0
	if fresh {
		start(0)
		first = 1
	}
	var wg sync.WaitGroup
	for i := first; i < len(dirs); i++ {
		wg.Add(1)
		go func() { defer wg.Done(); start(i) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			stopAll(ps)
			return nil, fmt.Errorf("replica %d: %w", i, err)
		}
	}
	return ps, nil
}

func waitReady(addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready", addr)
}

func stopAll(ps []*proc) {
	var wg sync.WaitGroup
	for _, p := range ps {
		if p != nil {
			wg.Add(1)
			go func() { defer wg.Done(); p.stop() }()
		}
	}
	wg.Wait()
}

func replicaScenario(work, bin, dsn string, n int, d time.Duration, senders int) (replicaRun, error) {
	store := "SQLite"
	if dsn != "" {
		store = "PostgreSQL"
	}
	run := replicaRun{store: store, replicas: n}
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	var (
		seen      sync.Map
		delivered atomic.Int64
		mu        sync.Mutex
		firsts    []time.Time
	)
	pd.OnEvent = func(e sinkstest.PDEvent) {
		if _, dup := seen.LoadOrStore(e.DedupKey, true); !dup {
			delivered.Add(1)
			mu.Lock()
			firsts = append(firsts, e.Received)
			mu.Unlock()
		}
	}
	config := func(perMinute int) string {
		return fmt.Sprintf(`route:
  receiver: bench
receivers:
  - name: bench
    pagerduty_configs:
      - routing_key: %s
        url: %s
        rate_limit_per_minute: %d
`, routingKey, pd.EventsURL(), perMinute)
	}
	name := fmt.Sprintf("replicas-%s-%d", strings.ToLower(store), n)
	dirs, err := replicaDirs(work, name, dsn, n, config(120))
	if err != nil {
		return run, err
	}
	ps, err := startAll(dirs, bin, true)
	if err != nil {
		return run, err
	}
	urls := make([]string, n)
	for i, p := range ps {
		urls[i] = "http://" + p.addr + "/webhook"
	}
	run.ingest = closedLoopOver(urls, senders, d, 0)
	run.alerts = 5 * run.ingest.n
	stopAll(ps)

	// Drain: the same stores, the limit lifted.
	for _, dir := range dirs {
		cfg, err := os.ReadFile(filepath.Join(dir, "config.yml"))
		if err != nil {
			return run, err
		}
		cfg = []byte(strings.Replace(string(cfg), "rate_limit_per_minute: 120", "rate_limit_per_minute: 6000000", 1))
		if err := os.WriteFile(filepath.Join(dir, "config.yml"), cfg, 0o600); err != nil {
			return run, err
		}
	}
	mu.Lock()
	before := len(firsts)
	mu.Unlock()
	pd.SetLatency(replicaLatency)
	if ps, err = startAll(dirs, bin, false); err != nil {
		return run, err
	}
	defer stopAll(ps)
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) && int(delivered.Load()) < run.alerts {
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	drained := append([]time.Time(nil), firsts[before:]...)
	sort.Slice(drained, func(i, j int) bool { return drained[i].Before(drained[j]) })
	run.drained, run.total = len(drained), len(firsts)
	if len(drained) > 1 {
		run.drain = drained[len(drained)-1].Sub(drained[0])
	}
	return run, nil
}

// replicaStorm is the Backlog storm (2,000 alerts, 600/min, a fake that
// answers 429 above 600 writes per minute) with n replicas on one
// PostgreSQL database, the alerts sent round robin over them.
func replicaStorm(work, bin, dsn string, n int) error {
	const alerts, perMinute = 2000, 600
	fake := sinkstest.NewBacklog("bench-api-key")
	defer fake.Close()
	fake.UpdateLimit = perMinute
	dirs, err := replicaDirs(work, "replica-storm", dsn, n, stormRoutes(fake.URL, perMinute))
	if err != nil {
		return err
	}
	ps, err := startAll(dirs, bin, true)
	if err != nil {
		return err
	}
	defer stopAll(ps)
	start := time.Now()
	for i := 0; i < alerts; i += 5 {
		as := make([]sinkstest.WebhookAlert, 5)
		for j := range as {
			as[j] = sinkstest.NamedAlert("Storm", "warning", fmt.Sprintf("host-%04d", i+j), "firing", start)
		}
		if err := post("http://"+ps[(i/5)%n].addr+"/webhook", sinkstest.Webhook("tickets", fmt.Sprintf("{}:{g=\"%d\"}", i), nil, as...)); err != nil {
			return err
		}
	}
	accepted := time.Since(start)
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) && len(fake.Issues()) < alerts {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // a duplicate would show by now
	var times []time.Time
	for _, c := range fake.Calls() {
		if c.Method == http.MethodPost && strings.HasSuffix(c.Path, "/issues") && c.Status == 201 {
			times = append(times, c.At)
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	maxInWindow := 0
	for i := range times {
		k := sort.Search(len(times), func(j int) bool { return !times[j].Before(times[i].Add(time.Minute)) })
		maxInWindow = max(maxInWindow, k-i)
	}
	var drain time.Duration
	if len(times) > 0 {
		drain = times[len(times)-1].Sub(start)
	}
	minimum := time.Duration(alerts-1) * time.Minute / perMinute
	fmt.Printf("### Backlog storm with %d replicas on one PostgreSQL database: 2,000 distinct firing alerts, rate_limit_per_minute 600\n\n", n)
	fmt.Println("| issues | creates | all accepted after | drained after | minimum the limit allows | ratio | 429s from the fake | max creates in any 60 s |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|")
	fmt.Printf("| %d | %d | %.1f s | %.1f s | %.1f s | **%.3f×** | %d | %d |\n\n",
		len(fake.Issues()), len(times), accepted.Seconds(), drain.Seconds(), minimum.Seconds(), drain.Seconds()/minimum.Seconds(), fake.CountStatus(429), maxInWindow)
	return nil
}
