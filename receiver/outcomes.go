package receiver

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/alertfan/alertfan/sinks"
)

// logDropped says, at debug, which alerts go to a receiver without
// destinations (counted in alertfan_alerts_dropped_total either way).
func (s *server) logDropped(ctx context.Context, rt *runtime, input string, alerts []sinks.Alert, forced string) {
	if !s.logger.Enabled(ctx, slog.LevelDebug) {
		return
	}
	for _, a := range alerts {
		receivers := []string{forced}
		if forced == "" {
			receivers = rt.router.Match(a.Labels)
		}
		for _, r := range receivers {
			if len(rt.receivers[r]) == 0 {
				s.logger.Debug("Alert dropped: its receiver has no destinations", "input", input, "receiver", r, "alertname", a.Labels["alertname"], "identity", a.Identity)
			}
		}
	}
}

// quietHandler demotes the store's per-attempt retry warnings to debug
// (loggedSink reports a target's failures once per state change) and
// collapses a flood of identical River errors (PostgreSQL away: ~20
// lines/s) to one line per minute per message, with the count.
type quietHandler struct {
	slog.Handler
	river bool
	flood *floodState
}

type floodState struct {
	mu   sync.Mutex
	seen map[string]*floodEntry
}

type floodEntry struct {
	last       time.Time
	suppressed int
}

var demoted = map[string]bool{
	"Delivery failed; will retry":                              true,
	"Delivery failed; retrying after the target's Retry-After": true,
}

func newQuietHandler(h slog.Handler) *quietHandler {
	return &quietHandler{Handler: h, flood: &floodState{seen: map[string]*floodEntry{}}}
}

func (q *quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return q.Handler.Enabled(ctx, l) || (l == slog.LevelWarn && q.Handler.Enabled(ctx, slog.LevelDebug))
}

func (q *quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if demoted[r.Message] && r.Level == slog.LevelWarn {
		if !q.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
		return q.Handler.Handle(ctx, r)
	}
	if !q.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	if q.river && r.Level >= slog.LevelWarn {
		f := q.flood
		f.mu.Lock()
		e := f.seen[r.Message]
		if e == nil {
			e = &floodEntry{}
			f.seen[r.Message] = e
		}
		if !e.last.IsZero() && r.Time.Sub(e.last) < time.Minute {
			e.suppressed++
			f.mu.Unlock()
			return nil
		}
		n := e.suppressed
		e.last, e.suppressed = r.Time, 0
		f.mu.Unlock()
		if n > 0 {
			r = r.Clone()
			r.AddAttrs(slog.Int("repeated_in_last_minute", n))
		}
	}
	return q.Handler.Handle(ctx, r)
}

func (q *quietHandler) WithAttrs(as []slog.Attr) slog.Handler {
	river := q.river
	for _, a := range as {
		if a.Key == "component" && a.Value.String() == "river" {
			river = true
		}
	}
	return &quietHandler{Handler: q.Handler.WithAttrs(as), river: river, flood: q.flood}
}

func (q *quietHandler) WithGroup(name string) slog.Handler {
	return &quietHandler{Handler: q.Handler.WithGroup(name), river: q.river, flood: q.flood}
}
