package receiver

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/alertfan/alertfan/receiver/queue"
	"github.com/alertfan/alertfan/sinks"
)

// targetLog keeps one target's delivery state for the log: each outcome
// at debug; a run of failures once at warn when it starts and once at
// info when it ends, with the count; never a line per attempt.
type targetLog struct {
	mu       sync.Mutex
	failing  bool
	failures int
	since    time.Time
	reason   string
}

// loggedSink reports a target's outcomes through its targetLog.
type loggedSink struct {
	queue.Sink
	id     string
	state  *targetLog
	logger *slog.Logger
}

func (l *loggedSink) Deliver(ctx context.Context, n *sinks.Notification) error {
	err := l.Sink.Deliver(ctx, n)
	st := l.state
	if err == nil {
		l.logger.Debug("Delivered", "target", l.id, "key", n.Key, "status", n.Status(), "alerts", len(n.Alerts))
		st.mu.Lock()
		if st.failing {
			l.logger.Info("Target delivers again", "target", l.id, "failed_attempts", st.failures, "failing_for", time.Since(st.since).Round(time.Second))
			st.failing, st.failures = false, 0
		}
		st.mu.Unlock()
		return nil
	}
	e := sinks.AsError(err)
	l.logger.Debug("Delivery failed", "target", l.id, "key", n.Key, "reason", e.Reason, "retryable", e.Retryable, "err", err)
	if !e.Retryable || e.Reason == sinks.ReasonRateLimitWait {
		return err // dead letters are logged one by one; our own limiter is no failure
	}
	st.mu.Lock()
	st.failures++
	if !st.failing {
		st.failing, st.since, st.reason = true, time.Now(), e.Reason
		l.logger.Warn("Target is failing; deliveries are kept and retried (logged again when it recovers)", "target", l.id, "reason", e.Reason, "err", err)
	} else if e.Reason != st.reason {
		st.reason = e.Reason
		l.logger.Warn("Target is still failing, for a new reason", "target", l.id, "reason", e.Reason, "failed_attempts", st.failures, "err", err)
	}
	st.mu.Unlock()
	return err
}

// Admit and Schedule pass the rate limiter's answers through.
func (l *loggedSink) Admit() time.Duration {
	if a, ok := l.Sink.(interface{ Admit() time.Duration }); ok {
		return a.Admit()
	}
	return 0
}

func (l *loggedSink) Schedule(keys int) time.Duration {
	if s, ok := l.Sink.(interface{ Schedule(int) time.Duration }); ok {
		return s.Schedule(keys)
	}
	return 0
}

// logged wraps the targets the store delivers to; a target's state
// survives reloads.
func (s *server) logged(ts map[string]queue.Target) map[string]queue.Target {
	s.tlogMu.Lock()
	defer s.tlogMu.Unlock()
	if s.tlogs == nil {
		s.tlogs = map[string]*targetLog{}
	}
	out := make(map[string]queue.Target, len(ts))
	for id, t := range ts {
		st := s.tlogs[id]
		if st == nil {
			st = &targetLog{}
			s.tlogs[id] = st
		}
		t.Sink = &loggedSink{Sink: t.Sink, id: id, state: st, logger: s.logger}
		out[id] = t
	}
	return out
}

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
