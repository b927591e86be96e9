package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// mechanics runs the queue-mechanics scenarios, each against a baseline
// measured in the same run:
//
//   - re-plan: 2,000 alerts queued behind a routing key at 60/min, then a
//     SIGHUP raising the limit to 600,000/min; the time to deliver all of
//     them is compared with a fresh alertfan delivering the same 2,000 at
//     600,000/min from the start;
//   - priority: 2,000 warnings, then one critical, to a key at 120/min; the
//     critical's accept → delivered time is compared with one pacing slot
//     (0.5 s), the least a budget that is spent can offer;
//   - recovery: 200 alerts while the target answers 503 for 20 s; the time
//     from recovery to the last delivery, and the calls made during the
//     outage, are compared with delivering the same 200 to a target that
//     is up;
//   - storm: 300 warnings to a key at 600/min; the time to deliver them
//     all is compared with the least the limit allows, 299 pacing slots;
//   - escalation: 1,000 warnings to a key at 120/min, then a PagerDuty
//     sender's warning that turns critical under the same dedup_key; the
//     critical's accept → delivered time is compared with one pacing slot.
func mechanics(work, bin string) error {
	fmt.Println("### Queue mechanics")
	fmt.Println()
	fmt.Println("| scenario | alertfan | baseline in the same run | ratio |")
	fmt.Println("|---|---:|---:|---:|")

	// Baseline for re-plan and recovery: a fresh queue at full rate.
	pd := sinkstest.NewPagerDuty()
	base, err := timeToDeliver(work, "base-2000", bin, pd, 600000, 2000, nil)
	pd.Close()
	if err != nil {
		return err
	}

	pd = sinkstest.NewPagerDuty()
	replan, err := timeToDeliver(work, "replan", bin, pd, 60, 2000, func(p *proc, dir string) error {
		time.Sleep(2 * time.Second)
		cfgPath := filepath.Join(dir, "config.yml")
		b, err := os.ReadFile(cfgPath)
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfgPath, []byte(strings.Replace(string(b), "rate_limit_per_minute: 60\n", "rate_limit_per_minute: 600000\n", 1)), 0o600); err != nil {
			return err
		}
		return p.cmd.Process.Signal(syscall.SIGHUP)
	})
	pd.Close()
	if err != nil {
		return err
	}
	fmt.Printf("| re-plan: 2,000 queued at 60/min, SIGHUP to 600,000/min → all delivered | %.2f s after the reload | %.2f s (fresh queue at 600,000/min) | %.2f× |\n",
		replan.Seconds(), base.Seconds(), replan.Seconds()/base.Seconds())

	crit, err := priority(work, bin)
	if err != nil {
		return err
	}
	slot := 500 * time.Millisecond
	fmt.Printf("| priority: 1 critical behind 2,000 warnings at 120/min → delivered | %.3f s | %.3f s (one pacing slot) | %.2f× |\n",
		crit.Seconds(), slot.Seconds(), crit.Seconds()/slot.Seconds())

	pd = sinkstest.NewPagerDuty()
	base200, err := timeToDeliver(work, "base-200", bin, pd, 600000, 200, nil)
	pd.Close()
	if err != nil {
		return err
	}
	pd = sinkstest.NewPagerDuty()
	pd.SetDown(true)
	var during int
	recovery, err := timeToDeliver(work, "recovery", bin, pd, 600000, 200, func(p *proc, dir string) error {
		time.Sleep(20 * time.Second)
		during = pd.Attempts()
		pd.SetDown(false)
		return nil
	})
	pd.Close()
	if err != nil {
		return err
	}
	fmt.Printf("| recovery: 200 alerts, 20 s outage → all delivered | %.2f s after recovery, %d calls during the outage | %.2f s (target up), 200 calls | %.2f× |\n",
		recovery.Seconds(), during, base200.Seconds(), recovery.Seconds()/base200.Seconds())

	pd = sinkstest.NewPagerDuty()
	storm, err := timeToDeliver(work, "storm-300", bin, pd, 600, 300, nil)
	pd.Close()
	if err != nil {
		return err
	}
	least := 299 * time.Duration(1.01*float64(time.Minute)/600)
	fmt.Printf("| storm: 300 warnings at 600/min → all delivered | %.2f s | %.2f s (299 pacing slots, the least the limit allows) | %.3f× |\n",
		storm.Seconds(), least.Seconds(), storm.Seconds()/least.Seconds())

	esc, err := escalation(work, bin)
	if err != nil {
		return err
	}
	fmt.Printf("| escalation: a queued warning turns critical behind 1,000 warnings at 120/min → delivered | %.3f s | %.3f s (one pacing slot) | %.2f× |\n\n",
		esc.Seconds(), slot.Seconds(), esc.Seconds()/slot.Seconds())
	return nil
}

// escalation queues 1,000 warnings behind a key at 120/min, then a
// PagerDuty sender's warning, and 2 s later the same dedup_key as
// critical; it returns the critical's accept → delivered time.
func escalation(work, bin string) (time.Duration, error) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	var mu sync.Mutex
	var got time.Time
	pd.OnEvent = func(e sinkstest.PDEvent) {
		if e.DedupKey == "escalated-1" {
			mu.Lock()
			got = e.Received
			mu.Unlock()
		}
	}
	p, err := startAlertfan(work, "escalation", bin, pd.EventsURL(), 120)
	if err != nil {
		return 0, err
	}
	defer p.stop()
	url := "http://" + p.addr
	if err := postWarnings(url+"/webhook", 1000, time.Now().UTC()); err != nil {
		return 0, err
	}
	event := func(severity string) error {
		body := fmt.Sprintf(`{"routing_key":%q,"event_action":"trigger","dedup_key":"escalated-1","payload":{"summary":"Disk full on db-1","source":"db-1","severity":%q}}`, routingKey, severity)
		code, err := postJSON(url+"/v2/enqueue", strings.NewReader(body))
		if err == nil && code != 202 {
			err = fmt.Errorf("escalation: /v2/enqueue answered %d", code)
		}
		return err
	}
	if err := event("warning"); err != nil {
		return 0, err
	}
	time.Sleep(2 * time.Second)
	sent := time.Now()
	if err := event("critical"); err != nil {
		return 0, err
	}
	return waitReceived(&mu, &got, sent, 10*time.Minute, "escalation: the critical")
}

// timeToDeliver starts alertfan with one PagerDuty target at perMinute,
// posts n alerts, runs then (if any), and returns the time from the end
// of then (or of the posting) until the fake has every trigger.
func timeToDeliver(work, name, bin string, pd *sinkstest.PagerDuty, perMinute, n int, then func(p *proc, dir string) error) (time.Duration, error) {
	p, err := startAlertfan(work, name, bin, pd.EventsURL(), perMinute)
	if err != nil {
		return 0, err
	}
	defer p.stop()
	url := "http://" + p.addr + "/webhook"
	start := time.Now().UTC()
	for i := 0; i < n; i += 50 {
		var as []sinkstest.WebhookAlert
		for k := i; k < min(n, i+50); k++ {
			as = append(as, sinkstest.NamedAlert("Mech", "warning", fmt.Sprintf("%s-%05d", name, k), "firing", start))
		}
		if err := post(url, sinkstest.Webhook("bench", fmt.Sprintf(`{}:{batch="%d"}`, i), nil, as...)); err != nil {
			return 0, err
		}
	}
	from := time.Now()
	if then != nil {
		if err := then(p, filepath.Join(work, name)); err != nil {
			return 0, err
		}
		from = time.Now()
	}
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		if len(pd.Events()) >= n {
			return time.Since(from), nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s: %d of %d delivered in 5 minutes", name, len(pd.Events()), n)
}

// priority queues 2,000 warnings behind a key at 120/min, then sends one
// critical and returns its accept → delivered time.
func priority(work, bin string) (time.Duration, error) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	var mu sync.Mutex
	var got time.Time
	pd.OnEvent = func(e sinkstest.PDEvent) {
		if strings.Contains(string(e.Payload), "Critical") {
			mu.Lock()
			got = e.Received
			mu.Unlock()
		}
	}
	p, err := startAlertfan(work, "priority", bin, pd.EventsURL(), 120)
	if err != nil {
		return 0, err
	}
	defer p.stop()
	url := "http://" + p.addr + "/webhook"
	start := time.Now().UTC()
	if err := postWarnings(url, 2000, start); err != nil {
		return 0, err
	}
	time.Sleep(3 * time.Second)
	sent := time.Now()
	if err := post(url, sinkstest.Webhook("bench", `{}:{alertname="Critical"}`, nil, sinkstest.NamedAlert("Critical", "critical", "db-1", "firing", start))); err != nil {
		return 0, err
	}
	return waitReceived(&mu, &got, sent, 2*time.Minute, "priority: the critical")
}

// postWarnings posts n firing warnings in notifications of 50.
func postWarnings(url string, n int, start time.Time) error {
	for i := 0; i < n; i += 50 {
		var as []sinkstest.WebhookAlert
		for k := i; k < min(n, i+50); k++ {
			as = append(as, sinkstest.NamedAlert("Warn", "warning", fmt.Sprintf("w-%05d", k), "firing", start))
		}
		if err := post(url, sinkstest.Webhook("bench", fmt.Sprintf(`{}:{batch="%d"}`, i), nil, as...)); err != nil {
			return err
		}
	}
	return nil
}

// waitReceived waits up to max for *got (under mu) to be set, and
// returns how long after sent it was.
func waitReceived(mu *sync.Mutex, got *time.Time, sent time.Time, max time.Duration, what string) (time.Duration, error) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		mu.Lock()
		at := *got
		mu.Unlock()
		if !at.IsZero() {
			return at.Sub(sent), nil
		}
		time.Sleep(time.Millisecond)
	}
	return 0, fmt.Errorf("%s was not delivered in %s", what, max)
}
