package queue

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/alertfan/alertfan/sinks"
)

// Sink is what the queue needs from a destination.
type Sink interface {
	// Deliver brings the target in line with the notification. A failure
	// should be a *sinks.Error; anything else is retried.
	Deliver(ctx context.Context, n *sinks.Notification) error
}

// Target is a configured destination: one entry of a receiver's
// pagerduty_configs or backlog_configs.
type Target struct {
	ID       string // "<receiver>/<kind>/<index>", stable across reloads
	Kind     string // one of Kinds; also the River queue it runs in
	Receiver string
	Sink     Sink
}

type deliverArgs struct {
	Target string `json:"target"`
	Key    string `json:"key"`
	Seq    int64  `json:"seq"`
}

func (deliverArgs) Kind() string { return "alertfan_deliver" }

type worker struct {
	river.WorkerDefaults[deliverArgs]
	s *Store
}

type state struct {
	version, delivered, seq int64
	pending                 bool
	payload                 []byte
}

func (s *Store) loadState(ctx context.Context, target, key string) (*state, error) {
	var st state
	var pending int
	var payload string
	err := s.db.QueryRowContext(ctx, s.rebind(`SELECT version, delivered, seq, pending, payload FROM alertfan_state WHERE target = ? AND key = ?`), target, key).
		Scan(&st.version, &st.delivered, &st.seq, &pending, &payload)
	if err != nil {
		return nil, err
	}
	st.pending = pending == 1
	st.payload = []byte(payload)
	return &st, nil
}

// Work delivers the newest state of one (target, key) and keeps going while
// newer states arrive, so a burst of updates to one alert costs few calls
// and an update that lands while a call is in flight is never lost.
func (w *worker) Work(ctx context.Context, job *river.Job[deliverArgs]) error {
	s, a := w.s, job.Args
	for {
		st, err := s.loadState(ctx, a.Target, a.Key)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("load state: %w", err)
		}
		if !st.pending || st.seq != a.Seq {
			return nil // a newer job owns this key, or nothing is left to do
		}
		var dead *deadRecord
		if st.delivered < st.version {
			dead, err = w.deliver(ctx, job, st)
			if err != nil {
				return err
			}
		}
		pending, err := s.ack(ctx, a, st.version, dead)
		if err != nil {
			return err
		}
		if !pending {
			return nil
		}
	}
}

// deliver makes one call. It returns a dead letter for a permanent failure,
// or an error for River to retry or snooze.
func (w *worker) deliver(ctx context.Context, job *river.Job[deliverArgs], st *state) (*deadRecord, error) {
	s, a := w.s, job.Args
	t, ok := s.target(a.Target)
	var n sinks.Notification
	var derr error
	switch {
	case !ok:
		derr = sinks.Permanent(sinks.ReasonUnknownTarget, fmt.Errorf("target %s is no longer configured", a.Target))
		t = Target{ID: a.Target, Kind: job.Queue}
	default:
		if err := json.Unmarshal(st.payload, &n); err != nil {
			derr = sinks.Permanent(sinks.ReasonOther, fmt.Errorf("stored state is unreadable: %w", err))
			break
		}
		start := time.Now()
		derr = t.Sink.Deliver(ctx, &n)
		s.metrics.attemptDuration.WithLabelValues(t.Kind).Observe(time.Since(start).Seconds())
	}
	if derr == nil {
		s.metrics.deliveries.WithLabelValues(t.Kind, t.Receiver, "success", "").Inc()
		if !n.AcceptedAt.IsZero() {
			s.metrics.latency.WithLabelValues(t.Kind).Observe(time.Since(n.AcceptedAt).Seconds())
		}
		return nil, nil
	}
	e := sinks.AsError(derr)
	log := s.logger.With("target", a.Target, "key", a.Key, "attempt", job.Attempt, "reason", e.Reason)
	if e.Reason == sinks.ReasonRateLimitWait {
		// Our own limiter parked the job: not a failure of the target.
		s.metrics.rateLimitParks.WithLabelValues(t.Kind).Inc()
		return nil, river.JobSnooze(e.RetryAfter)
	}
	if e.Retryable && job.Attempt < job.MaxAttempts {
		s.metrics.deliveries.WithLabelValues(t.Kind, t.Receiver, "retry", e.Reason).Inc()
		if e.RetryAfter > 0 {
			log.Warn("Delivery failed; retrying after the target's Retry-After", "retry_after", e.RetryAfter, "err", e)
			return nil, river.JobSnooze(e.RetryAfter)
		}
		log.Warn("Delivery failed; will retry", "err", e)
		return nil, e
	}
	reason := e.Reason
	if e.Retryable {
		reason = sinks.ReasonExhausted
	}
	s.metrics.deliveries.WithLabelValues(t.Kind, t.Receiver, "dead", reason).Inc()
	log.Error("Delivery failed permanently; dead-lettered", "err", e)
	return &deadRecord{reason: reason, err: e.Error(), attempts: job.Attempt}, nil
}

type deadRecord struct {
	reason   string
	err      string
	attempts int
}

const sqlAck = `UPDATE alertfan_state SET delivered = ?, pending = CASE WHEN version > ? THEN 1 ELSE 0 END
	WHERE target = ? AND key = ? AND seq = ? RETURNING pending`

// ack records that version was handled (delivered or dead-lettered) and
// says whether a newer version is waiting. It outlives the job's context:
// a delivery that happened must be recorded even during shutdown, or it
// would be made again.
func (s *Store) ack(ctx context.Context, a deliverArgs, version int64, dead *deadRecord) (bool, error) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitDeadline)
	defer cancel()
	var pending bool
	fn := func(ctx context.Context, b *batch) error {
		if dead != nil {
			if _, err := b.exec(ctx, `INSERT INTO alertfan_dead (target, key, version, reason, error, attempts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
				a.Target, a.Key, version, dead.reason, dead.err, dead.attempts, b.now); err != nil {
				return fmt.Errorf("queue: record dead letter: %w", err)
			}
		}
		var p int
		err := b.queryRow(ctx, sqlAck, version, version, a.Target, a.Key, a.Seq).Scan(&p)
		if errors.Is(err, sql.ErrNoRows) {
			pending = false
			return nil
		}
		if err != nil {
			return fmt.Errorf("queue: ack: %w", err)
		}
		pending = p == 1
		return nil
	}
	var err error
	for i := 0; i < 6; i++ {
		if err = s.submit(actx, fn); err == nil {
			return pending, nil
		}
		if errors.Is(err, ErrClosed) || actx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(100<<i) * time.Millisecond)
	}
	return false, fmt.Errorf("record delivery: %w", err)
}

// backoff is exponential with ±20% jitter between min and max, so that a
// target coming back is not hit by every queued job at the same instant.
type backoff struct{ min, max time.Duration }

func (b *backoff) NextRetry(job *rivertype.JobRow) time.Time {
	d := b.min
	for i := 1; i < job.Attempt && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	jitter := 0.8 + 0.4*rand.Float64()
	return time.Now().Add(time.Duration(float64(d) * jitter))
}

type errorHandler struct{ logger *slog.Logger }

func (h *errorHandler) HandleError(ctx context.Context, job *rivertype.JobRow, err error) *river.ErrorHandlerResult {
	return nil
}

func (h *errorHandler) HandlePanic(ctx context.Context, job *rivertype.JobRow, panicVal any, trace string) *river.ErrorHandlerResult {
	h.logger.Error("Delivery panicked; the job will be retried", "job_id", job.ID, "panic", fmt.Sprint(panicVal))
	return nil
}
