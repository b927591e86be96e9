package receiver

import (
	"context"
	"encoding/json"
	"time"

	"github.com/alertfan/alertfan/sinks"
)

// expireEvery is how often alerts not refreshed within resolve_after are
// looked for: a quarter of the shortest resolve_after, between 250ms and
// 30s (late by a few seconds is nothing next to resolve_after's hours).
func expireEvery(rt *runtime) time.Duration {
	every := 30 * time.Second
	for _, r := range rt.cfg.Receivers {
		if d := time.Duration(r.ResolveAfter) / 4; d > 0 && d < every {
			every = max(d, 250*time.Millisecond)
		}
	}
	return every
}

// ReasonAnnotation is the annotation alertfan adds to an alert it resolves
// on its own, saying why (templates can show it).
const ReasonAnnotation = "alertfan_resolved_reason"

func (s *server) expireLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(expireEvery(s.rt.Load())):
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
		reason := "not refreshed by its sender within resolve_after (" + r.ResolveAfter.String() + "); resolved by alertfan"
		for _, t := range rt.receivers[r.Name] {
			resolve := expiredPayload(now, reason)
			var n int
			var err error
			if t.grouped {
				n, err = s.store.ExpireGroups(ctx, t.ID, t.Kind, now.Add(-after), resolve)
			} else {
				n, err = s.store.Expire(ctx, t.ID, t.Kind, now.Add(-after), resolve)
			}
			if err != nil {
				s.logger.Warn("Could not resolve alerts past resolve_after; will try again", "receiver", r.Name, "err", err)
				continue
			}
			if n > 0 {
				s.metrics.expired.WithLabelValues(r.Name).Add(float64(n))
				s.logger.Info("Resolved alerts their sender stopped refreshing", "receiver", r.Name, "target", t.ID, "alerts", n, "resolve_after", r.ResolveAfter)
			}
		}
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
