package receiver

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alertfan/alertfan/sinks"
)

// reasonNotReady labels deliveries held because their target is not ready.
const reasonNotReady = sinks.ReasonNotReady

// gateRecheck is how often a target that is not ready is checked again.
var gateRecheck = 30 * time.Second

// gatedSink holds a target that could not be set up at start — a Backlog
// key revoked (401), a project renamed (404) — out of delivery without
// taking the process down: its deliveries stay in the queue, retried every
// gateRecheck; when its check passes it delivers as usual. Everything else
// alertfan does (PagerDuty, intake) goes on.
type gatedSink struct {
	notifier
	id     string
	check  func(context.Context) error
	logger *slog.Logger
	gauge  prometheus.Gauge

	mu       sync.Mutex
	ready    bool
	reason   string
	next     time.Time
	checking bool
	failures int
}

func newGatedSink(n notifier, id string, check func(context.Context) error, reason error, logger *slog.Logger, gauge prometheus.Gauge) *gatedSink {
	g := &gatedSink{notifier: n, id: id, check: check, logger: logger, gauge: gauge, reason: reason.Error(), next: time.Now().Add(gateRecheck), failures: 1}
	gauge.Set(0)
	logger.Error("Target is not ready; its deliveries are held in the queue and retried, everything else runs", "target", id, "reason", g.reason, "retry_every", gateRecheck)
	return g
}

// Deliver delivers when the target is ready, else says when to retry.
func (g *gatedSink) Deliver(ctx context.Context, n *sinks.Notification) error {
	if err := g.ensureReady(ctx); err != nil {
		return sinks.Retryable(reasonNotReady, gateRecheck, err)
	}
	return g.notifier.Deliver(ctx, n)
}

func (g *gatedSink) ensureReady(ctx context.Context) error {
	g.mu.Lock()
	if g.ready {
		g.mu.Unlock()
		return nil
	}
	if g.checking || time.Now().Before(g.next) {
		reason := g.reason
		g.mu.Unlock()
		return fmt.Errorf("target %s is not ready: %s", g.id, reason)
	}
	g.checking = true
	g.mu.Unlock()
	// A check that panics (recovered by the queue's worker) must not
	// leave the gate checking forever — every later delivery would be
	// "not ready" until a restart — and counts as a failed check, so the
	// next one waits gateRecheck like any other.
	checked := false
	defer func() {
		if !checked {
			g.mu.Lock()
			g.checking = false
			g.failures++
			g.next = time.Now().Add(gateRecheck)
			g.mu.Unlock()
		}
	}()

	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err := g.check(cctx)
	cancel()
	checked = true

	g.mu.Lock()
	defer g.mu.Unlock()
	g.checking = false
	if err == nil {
		g.ready = true
		g.gauge.Set(1)
		g.logger.Info("Target is ready again; delivering its held work", "target", g.id, "failed_checks", g.failures)
		return nil
	}
	// One line per state change: the reason changing is one; the same
	// failure again is only counted.
	g.failures++
	g.next = time.Now().Add(gateRecheck)
	if err.Error() != g.reason {
		g.reason = err.Error()
		g.logger.Warn("Target is still not ready, for a new reason", "target", g.id, "reason", g.reason, "failed_checks", g.failures)
	}
	return fmt.Errorf("target %s is not ready: %s", g.id, g.reason)
}

// notReady reports why, or "" when ready.
func (g *gatedSink) notReady() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ready {
		return ""
	}
	return g.reason
}

// Admit, Schedule and Pace pass the rate limiter's answers through.
func (g *gatedSink) Admit(class int) time.Duration {
	if a, ok := g.notifier.(interface{ Admit(int) time.Duration }); ok {
		return a.Admit(class)
	}
	return 0
}

func (g *gatedSink) Schedule(keys, class int) time.Duration {
	if s, ok := g.notifier.(interface{ Schedule(int, int) time.Duration }); ok {
		return s.Schedule(keys, class)
	}
	return 0
}

func (g *gatedSink) Hold(d time.Duration) {
	if h, ok := g.notifier.(interface{ Hold(time.Duration) }); ok {
		h.Hold(d)
	}
}

func (g *gatedSink) HeldUntil() time.Time {
	if h, ok := g.notifier.(interface{ HeldUntil() time.Time }); ok {
		return h.HeldUntil()
	}
	return time.Time{}
}

// Settle passes the sink's wait before an uncertain retry through.
func (g *gatedSink) Settle() time.Duration {
	if st, ok := g.notifier.(interface{ Settle() time.Duration }); ok {
		return st.Settle()
	}
	return 0
}

func (g *gatedSink) Pace(ctx context.Context, maxWait time.Duration) (time.Duration, error) {
	if p, ok := g.notifier.(interface {
		Pace(context.Context, time.Duration) (time.Duration, error)
	}); ok {
		return p.Pace(ctx, maxWait)
	}
	return 0, nil
}

// notReadyTargets lists the targets that are not ready, with the reason.
func (rt *runtime) notReadyTargets() map[string]string {
	out := map[string]string{}
	for id, t := range rt.targets {
		if g, ok := t.Sink.(*gatedSink); ok {
			if r := g.notReady(); r != "" {
				out[id] = r
			}
		}
	}
	return out
}

func sortedIDs(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
