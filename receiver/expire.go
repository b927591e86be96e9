package receiver

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/alertfan/alertfan/receiver/queue"
	"github.com/alertfan/alertfan/sinks"
)

// expireEvery is how often alerts not refreshed within resolve_after are
// looked for: a quarter of the shortest resolve_after (of the receivers,
// and of the destinations a reload removed), between 250ms and 30s (late
// by a few seconds is nothing next to resolve_after's hours).
func (s *server) expireEvery() time.Duration {
	every := 30 * time.Second
	shorter := func(after model.Duration) {
		if d := time.Duration(after) / 4; d > 0 && d < every {
			every = max(d, 250*time.Millisecond)
		}
	}
	for _, r := range s.rt.Load().cfg.Receivers {
		shorter(r.ResolveAfter)
	}
	if p := s.retiredExpiry.Load(); p != nil {
		for _, r := range *p {
			shorter(r.after)
		}
	}
	return every
}

// retiredTarget is a destination a reload removed, with what expiring its
// open alerts needs from the receiver it was in.
type retiredTarget struct {
	kind     string
	grouped  bool
	receiver string
	after    model.Duration
}

// retire records, after a reload from old to rt, the destinations old had
// (with resolve_after) that rt has nowhere: SetTargets moved their open
// alerts to "retired/<destination>", where this process's old sink still
// serves them, and their sender may never resolve them. A destination
// back in the config is dropped from the record (its alerts are its own
// again, under its new receiver's rules).
func (s *server) retire(old, rt *runtime) {
	now := map[string]bool{}
	for _, t := range rt.targets {
		now[t.Destination] = true
	}
	next := map[string]retiredTarget{}
	if p := s.retiredExpiry.Load(); p != nil {
		for id, r := range *p {
			if !now[strings.TrimPrefix(id, queue.RetiredPrefix)] {
				next[id] = r
			}
		}
	}
	if old != nil {
		for _, r := range old.cfg.Receivers {
			if r.ResolveAfter <= 0 {
				continue
			}
			for _, t := range old.receivers[r.Name] {
				if t.Destination != "" && !now[t.Destination] {
					next[queue.RetiredPrefix+t.Destination] = retiredTarget{kind: t.Kind, grouped: t.grouped, receiver: r.Name, after: r.ResolveAfter}
				}
			}
		}
	}
	s.retiredExpiry.Store(&next)
}

// ReasonAnnotation is the annotation alertfan adds to an alert it resolves
// on its own, saying why (templates can show it).
const ReasonAnnotation = "alertfan_resolved_reason"

func (s *server) expireLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.expireEvery()):
			s.expire(ctx, time.Now())
		case <-s.expireWake:
			s.expire(ctx, time.Now())
		}
	}
}

// expire resolves, for every receiver with resolve_after, the alerts its
// alert-mode targets hold open, and the groups its group-mode targets hold
// open, that no sender refreshed since.
func (s *server) expire(ctx context.Context, now time.Time) {
	rt := s.rt.Load()
	for _, r := range rt.cfg.Receivers {
		after := time.Duration(r.ResolveAfter)
		if after <= 0 {
			continue
		}
		if now.Sub(s.expireFrom) < after {
			// Not before alertfan has been up for resolve_after: while it
			// was down, senders' refreshes failed (Alertmanager tries
			// again at its next group_interval), and an outage longer than
			// resolve_after would otherwise resolve, then page again,
			// every alert still firing.
			continue
		}
		for _, t := range rt.receivers[r.Name] {
			s.expireTarget(ctx, now, t.ID, t.Kind, t.grouped, r.Name, r.ResolveAfter)
		}
	}
	// Destinations a reload removed, under their old receiver's rule.
	if p := s.retiredExpiry.Load(); p != nil {
		for id, r := range *p {
			if now.Sub(s.expireFrom) >= time.Duration(r.after) {
				s.expireTarget(ctx, now, id, r.kind, r.grouped, r.receiver, r.after)
			}
		}
	}
}

// expireTarget resolves what target id (of kind, in group mode or not)
// holds open that no sender refreshed within after, for receiver.
func (s *server) expireTarget(ctx context.Context, now time.Time, id, kind string, grouped bool, receiver string, after model.Duration) {
	reason := "not refreshed by its sender within resolve_after (" + after.String() + "); resolved by alertfan"
	resolve := expiredPayload(now, reason)
	cutoff := now.Add(-time.Duration(after))
	var n int
	var err error
	if grouped {
		n, err = s.store.ExpireGroups(ctx, id, kind, cutoff, resolve)
	} else {
		n, err = s.store.Expire(ctx, id, kind, cutoff, resolve)
	}
	if err != nil {
		s.logger.Warn("Could not resolve alerts past resolve_after; will try again", "receiver", receiver, "target", id, "err", err)
		return
	}
	if n > 0 {
		s.metrics.expired.WithLabelValues(receiver).Add(float64(n))
		s.logger.Info("Resolved alerts their sender stopped refreshing", "receiver", receiver, "target", id, "alerts", n, "resolve_after", after)
	}
}

// expiredPayload rewrites a state's payload into its resolve by alertfan:
// every alert resolved at now, with the reason as an annotation. A group's
// count of alerts left out (truncatedAlerts) is dropped: the group resolves
// as a whole, and its description must not say that some may still fire.
func expiredPayload(now time.Time, reason string) func(string, []byte) ([]byte, bool) {
	return func(_ string, payload []byte) ([]byte, bool) {
		var notif sinks.Notification
		if json.Unmarshal(payload, &notif) != nil {
			return nil, false
		}
		for i := range notif.Alerts {
			a := &notif.Alerts[i]
			a.Status, a.EndsAt, a.Action = sinks.StatusResolved, now.UTC(), ""
			if a.Annotations == nil {
				a.Annotations = map[string]string{}
			}
			a.Annotations[ReasonAnnotation] = reason
		}
		notif.Truncated = 0
		notif.AcceptedAt = now.UTC()
		b, err := json.Marshal(&notif)
		return b, err == nil
	}
}
