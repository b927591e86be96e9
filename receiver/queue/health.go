package queue

import (
	"context"
	"sync"
	"time"

	"github.com/alertfan/alertfan/sinks"
)

// maxProbeInterval caps how long a down target waits between probes, so a
// target that comes back is noticed within seconds, whatever the back-off
// of the work waiting for it has grown to.
const maxProbeInterval = 5 * time.Second

// health tracks whether each target answers. While a target is down one
// delivery at a time probes it, at the back-off rate, and the rest of its
// work waits without calling it (and without spending attempts); the
// first success releases the waiting work at once, to go out at the rate
// limit. Only failures that say the target is unwell count: network
// errors, timeouts and 5xx — not a 429 (the target is fine, alertfan is
// fast) and not a 4xx (the target answered; the request was wrong).
type health struct {
	mu sync.Mutex
	m  map[string]*targetHealth
}

type targetHealth struct {
	down      bool
	since     time.Time
	failures  int       // consecutive
	nextProbe time.Time // while down: when the next probe may start
	probing   bool
	// offered is when wait let a delivery go on to claim the due probe
	// (zero once it is claimed or ends): the others are held meanwhile.
	offered time.Time
	held    int // deliveries held back since it went down
}

// probeOffer is how long the due probe is kept for the delivery wait let
// through, which claims it in admit after its turn behind intake
// (yield.go: milliseconds, up to ~1.6 s in a storm). Should it never come
// (shutdown began, its context ended), another is let through after this.
const probeOffer = time.Second

// downFailure reports whether a failure says the target is unwell.
func downFailure(e *sinks.Error) bool {
	if !e.Retryable {
		return false
	}
	switch e.Reason {
	case sinks.ReasonNetwork, sinks.ReasonTimeout, sinks.ReasonServerError, sinks.ReasonUnexpectedReply:
		return true
	}
	return false
}

// admit says whether a delivery to target may call it now. While the
// target is down only one probe at a time may, once its time has come;
// the others are told how long to wait.
func (h *health) admit(target string, now time.Time) (probe bool, wait time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	th := h.m[target]
	if wait := th.holdBack(now); wait > 0 || th == nil || !th.down {
		return false, wait
	}
	th.probing, th.offered = true, time.Time{}
	return true, 0
}

// wait is how long a delivery to target must wait before it tries (0: it
// may go on to admit), checked before it queues for intake's turn. While
// the target is down and its probe is due, one delivery is let through to
// claim it and the others are held: jobs parked until the same probe time
// come back together, and letting all of them through queued each for a
// turn (a storm's intake waits behind those turns) only for admit to park
// them. It claims nothing itself; admit does.
func (h *health) wait(target string, now time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	th := h.m[target]
	if d := th.holdBack(now); d > 0 || th == nil || !th.down {
		return d
	}
	if until := th.offered.Add(probeOffer); !th.offered.IsZero() && now.Before(until) {
		th.held++
		return max(until.Sub(now), 100*time.Millisecond)
	}
	th.offered = now
	return 0
}

// holdBack counts a delivery held back and says for how long, while th
// is down and its next probe is taken or not due; otherwise 0. th may be
// nil (never failed). The caller holds the health's lock.
func (th *targetHealth) holdBack(now time.Time) time.Duration {
	if th == nil || !th.down || (!th.probing && !now.Before(th.nextProbe)) {
		return 0
	}
	th.held++
	return max(th.nextProbe.Sub(now), 100*time.Millisecond)
}

// failed records a failure that says the target is unwell and whether it
// just went down.
func (h *health) failed(target string, now time.Time, minBackoff time.Duration) (wentDown bool, failures int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string]*targetHealth{}
	}
	th := h.m[target]
	if th == nil {
		th = &targetHealth{}
		h.m[target] = th
	}
	th.failures++
	th.probing, th.offered = false, time.Time{}
	wentDown = !th.down
	if wentDown {
		th.down, th.since, th.held = true, now, 0
	}
	d := minBackoff
	for i := 1; i < th.failures && d < maxProbeInterval; i++ {
		d *= 2
	}
	th.nextProbe = now.Add(min(d, maxProbeInterval))
	return wentDown, th.failures
}

// answered records that the target answered (a success, or a failure that
// is not its fault) and whether it just came back.
func (h *health) answered(target string) (cameBack bool, th targetHealth) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.m[target]
	if t == nil {
		return false, targetHealth{}
	}
	th = *t
	delete(h.m, target)
	return th.down, th
}

// released ends a probe that made no call (the limiter parked it), so
// another delivery may probe.
func (h *health) released(target string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if th := h.m[target]; th != nil {
		th.probing, th.offered = false, time.Time{}
	}
}

// Down lists the targets that are down now, with when they went down.
func (s *Store) Down() map[string]time.Time {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	out := map[string]time.Time{}
	for id, th := range s.health.m {
		if th.down {
			out[id] = th.since
		}
	}
	return out
}

// targetFailed and targetAnswered are the worker's side: state changes
// are logged once each (not once per attempt), and a target that comes
// back gets its waiting work released.
func (s *Store) targetFailed(t Target, e *sinks.Error) {
	if !downFailure(e) {
		s.targetAnswered(t)
		return
	}
	wentDown, n := s.health.failed(t.ID, time.Now(), s.opts.MinBackoff)
	if wentDown {
		s.metrics.targetUp.WithLabelValues(t.ID).Set(0)
		s.logger.Warn("Target is down; holding its deliveries and probing it with one call at a time", "target", t.ID, "reason", e.Reason, "err", e)
	} else {
		s.logger.Debug("Target still down", "target", t.ID, "failures", n, "err", e)
	}
}

func (s *Store) targetAnswered(t Target) {
	back, th := s.health.answered(t.ID)
	if !back {
		return
	}
	s.metrics.targetUp.WithLabelValues(t.ID).Set(1)
	s.logger.Info("Target is back; releasing its waiting deliveries", "target", t.ID,
		"down_for", time.Since(th.since).Round(time.Millisecond), "failed_calls", th.failures, "held_deliveries", th.held)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := s.wake(ctx, t.ID, true); err != nil {
			s.logger.Debug("Could not release a recovered target's work; it follows its back-off", "target", t.ID, "err", err)
		}
	}()
}
