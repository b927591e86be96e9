package queue

import (
	"context"
	"errors"
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
// errors, timeouts and 5xx, and a refusal of the credentials that every
// call would get (sinks.ReasonUnauthorized: a revoked key), and a config
// the target shows cannot work (sinks.ReasonMisconfigured) — not a 429
// (the target is fine, alertfan is fast) and not another 4xx (the target
// answered; the request was wrong).
type health struct {
	mu  sync.Mutex
	m   map[string]*targetHealth
	gen uint64 // the last probe's number
}

type targetHealth struct {
	down      bool
	since     time.Time
	upAt      time.Time // when it last came back: calls started before say nothing now
	failures  int       // consecutive
	nextProbe time.Time // while down: when the next probe may start
	probe     uint64    // the probe under way (its number), 0 if none
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
	case sinks.ReasonNetwork, sinks.ReasonTimeout, sinks.ReasonServerError, sinks.ReasonUnexpectedReply, sinks.ReasonUnauthorized, sinks.ReasonMisconfigured:
		return true
	}
	return false
}

// admit says whether a delivery to target may call it now. While the
// target is down only one probe at a time may, once its time has come;
// the others are told how long to wait. probe is the probe's number (0:
// not a probe), which its end (failed, released) names, so that a call
// from before cannot end a newer probe.
func (h *health) admit(target string, now time.Time) (probe uint64, wait time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	th := h.m[target]
	if wait := th.holdBack(now); wait > 0 || th == nil || !th.down {
		return 0, wait
	}
	h.gen++
	th.probe, th.offered = h.gen, time.Time{}
	return th.probe, 0
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
	if !th.offered.IsZero() && now.Before(th.offered.Add(probeOffer)) {
		// Back soon, not at the offer's end: the probe may fail at once
		// and the next be due at a short min_backoff.
		th.held++
		return 100 * time.Millisecond
	}
	th.offered = now
	return 0
}

// holdBack counts a delivery held back and says for how long, while th
// is down and its next probe is taken or not due; otherwise 0. th may be
// nil (never failed). The caller holds the health's lock.
func (th *targetHealth) holdBack(now time.Time) time.Duration {
	if th == nil || !th.down || (th.probe == 0 && !now.Before(th.nextProbe)) {
		return 0
	}
	th.held++
	return max(th.nextProbe.Sub(now), 100*time.Millisecond)
}

// failed records a failure that says the target is unwell, of a call
// that started at started (probe: the probe's number, 0 if it was not
// one), and whether the target just went down. A failure says nothing new,
// and is not counted, when its call started before the target last came
// back, or when the target is down and the call is not the probe under
// way: calls in flight when a target hangs time out one by one after it
// is marked down, and each ended the probe and pushed the next one out
// (a second probe could start while the first ran).
func (h *health) failed(target string, now, started time.Time, probe uint64, minBackoff time.Duration) (wentDown bool, failures int) {
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
	if started.Before(th.upAt) || (th.down && (probe == 0 || probe != th.probe)) {
		return false, th.failures
	}
	wentDown = !th.down
	if wentDown {
		th.down, th.since, th.held = true, now, 0
	}
	th.fail(now, minBackoff)
	return wentDown, th.failures
}

// fail counts a failed call and ends the probe under way: the next one
// may start after minBackoff, doubling with each consecutive failure, at
// most maxProbeInterval.
func (th *targetHealth) fail(now time.Time, minBackoff time.Duration) {
	th.failures++
	th.probe, th.offered = 0, time.Time{}
	d := minBackoff
	for i := 1; i < th.failures && d < maxProbeInterval; i++ {
		d *= 2
	}
	th.nextProbe = now.Add(min(d, maxProbeInterval))
}

// putOff ends probe (its number), which ended in a panic of alertfan's
// own, and puts the next probe off as a failed probe's would be: its call
// may have gone out, and a sink that panics on every call probed a down
// target ~40 times a second. It keeps the target down (a panic is no
// answer) and the back-off grows as for a failure.
func (h *health) putOff(target string, probe uint64, now time.Time, minBackoff time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if th := h.m[target]; th != nil && th.probe == probe {
		th.fail(now, minBackoff)
	}
}

// answered records that the target answered a call (a success, or a
// failure that is not its fault) and whether it just came back; th is
// its health until then.
func (h *health) answered(target string, now time.Time) (cameBack bool, th targetHealth) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.m[target]
	if t == nil || !t.down {
		return false, targetHealth{}
	}
	th = *t
	h.m[target] = &targetHealth{upAt: now}
	return true, th
}

// released ends a probe that made no call (the limiter parked it, the
// state moved on, the sink had nothing to send), so another delivery may
// probe; probe is its number, and a probe that ended already is not ended
// again.
func (h *health) released(target string, probe uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if th := h.m[target]; th != nil && th.probe == probe {
		th.probe, th.offered = 0, time.Time{}
	}
}

// reassign follows a reload: a target's health goes with its destination
// to the id it has now (to[id]; "" when the id is gone and its work with
// it), so that a removed target is not reported down for ever and an id
// that now sends elsewhere starts afresh.
func (h *health) reassign(to map[string]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	moved := map[string]*targetHealth{}
	for from, nid := range to {
		if th := h.m[from]; th != nil {
			delete(h.m, from)
			if nid != "" {
				moved[nid] = th
			}
		}
	}
	for id, th := range moved {
		h.m[id] = th
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
//
// targetFailed takes the call's start, the probe's number (0: not a
// probe) and whether the target answered at all (an HTTP status came
// back): a failure that is not the target's fault (a 4xx, a 429) is an
// answer only then; a template error, say, made no call. A panic of the
// sink says nothing of the target, but a probe's call may have gone out:
// the next probe waits as after a failed one, or a sink that panics on
// every call would probe a down target many times a second.
func (s *Store) targetFailed(t Target, e *sinks.Error, started time.Time, probe uint64, answered bool) {
	switch {
	case errors.Is(e, errSinkPanicked):
		if probe != 0 {
			s.health.putOff(t.ID, probe, time.Now(), s.opts.MinBackoff)
		}
		return
	case !downFailure(e):
		if answered {
			s.targetAnswered(t)
		}
		return
	}
	wentDown, n := s.health.failed(t.ID, time.Now(), started, probe, s.opts.MinBackoff)
	if wentDown {
		s.setTargetUp(t.ID, 0)
		s.logger.Warn("Target is down; holding its deliveries and probing it with one call at a time", "target", t.ID, "reason", e.Reason, "err", e)
	} else {
		s.logger.Debug("Target still down", "target", t.ID, "failures", n, "err", e)
	}
}

func (s *Store) targetAnswered(t Target) {
	back, th := s.health.answered(t.ID, time.Now())
	if !back {
		return
	}
	s.setTargetUp(t.ID, 1)
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

// setTargetUp sets alertfan_target_up for a configured target. A retired
// one (retired/<destination>, finishing what it holds) has no series: a
// reload would never remove it, and "a target is down" would fire until a
// restart after its last work was done.
func (s *Store) setTargetUp(id string, v float64) {
	if _, configured := (*s.targets.Load())[id]; configured {
		s.metrics.targetUp.WithLabelValues(id).Set(v)
	}
}
