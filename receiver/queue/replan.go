package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/riverqueue/river/rivertype"
)

// replanEvery is how often waiting jobs are checked against the present:
// a job scheduled for later whose keys all need no call any more (their
// alert resolved before the trigger was sent) leaves the queue at once.
const replanEvery = 2 * time.Second

// dbTime is a timestamp as River stores it in the store's dialect.
func (s *Store) dbTime(t time.Time) any {
	if s.dialect == dialectSQLite {
		return t.UTC().Format("2006-01-02 15:04:05.999999999")
	}
	return t.UTC()
}

// jobTargetExpr reads a delivery job's target from its JSON args.
func (s *Store) jobTargetExpr() string {
	if s.dialect == dialectSQLite {
		return `json_extract(args, '$.target')`
	}
	return `args->>'target'`
}

// wake makes waiting delivery jobs available now: every parked one
// (target empty; a job past max_attempts of its own that snoozes for its
// back-off is a retry: metaBackoff), or those of one target, including
// its retries (a target that recovered). Their keys then meet the limiter and
// the target as they are now, not as they were when the wait was planned.
func (s *Store) wake(ctx context.Context, target string, retries bool) (int64, error) {
	states := `'scheduled'`
	if retries {
		states = `'scheduled', 'retryable'`
	}
	q := `UPDATE river_job SET state = 'available', scheduled_at = ? WHERE kind = 'alertfan_deliver' AND state IN (` + states + `)`
	if !retries {
		// A snooze that is a retry's back-off waits as a retry does.
		q += s.dialect.pick(` AND NOT (metadata @> '{"`+metaBackoff+`": true}')`, ` AND COALESCE(json_extract(metadata, '$.`+metaBackoff+`'), 0) = 0`)
	}
	args := []any{s.dbTime(time.Now())}
	if target != "" {
		q += ` AND ` + s.jobTargetExpr() + ` = ?`
		args = append(args, target)
	}
	var n int64
	err := s.submit(ctx, func(ctx context.Context, b *batch) error {
		res, err := b.tx.ExecContext(ctx, s.rebind(q), args...)
		if err != nil {
			return fmt.Errorf("queue: wake jobs: %w", err)
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n, err
}

// Replan makes every parked or scheduled delivery job available now, so
// that rates changed by a reload or a restart take effect on queued work
// at once: each key meets the limiter as it is now and parks again only
// for as long as the new rate needs.
func (s *Store) Replan(ctx context.Context) error {
	s.replanGen.Add(1)
	n, err := s.wake(ctx, "", false)
	if err == nil && n > 0 {
		s.logger.Info("Re-planned queued deliveries for the current rate limits", "jobs", n)
	}
	return err
}

// replanDone finds waiting jobs none of whose keys needs a call any more
// and makes them available now, so they complete at once instead of
// sitting in the queue (and in its depth and age metrics) until their
// planned turn; and it moves keys whose newest update asks a better
// priority class than their job's to a job of that class (escalate.go).
//
// It looks only after a resolve was accepted (the only update that can make
// a queued call unneeded) or a queued key was asked a better class, so a
// storm of firing alerts costs it nothing.
func (s *Store) replanDone() {
	if !s.replanWanted.Swap(false) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args := `args`
	if s.dialect == dialectSQLite {
		args = `json(args)` // River's SQLite driver keeps args as JSONB
	}
	// What callsUnrecorded reads of a job, as text JSON on both databases
	// (River keeps PostgreSQL's errors as jsonb[], SQLite's as JSONB).
	meta, errs := `metadata`, `COALESCE(array_to_json(errors), '[]')`
	if s.dialect == dialectSQLite {
		meta, errs = `json(metadata)`, `COALESCE(json(errors), '[]')`
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT id, queue, state, attempt, `+args+`, `+meta+`, `+errs+` FROM river_job WHERE kind = 'alertfan_deliver' AND state IN ('scheduled', 'retryable') ORDER BY id LIMIT 5000`)
	if err != nil {
		s.logger.Debug("Could not look for jobs that need no call", "err", err)
		return
	}
	type job struct {
		id          int64
		kind, state string
		args        deliverArgs
		uncertain   bool
	}
	var jobs []job
	for rows.Next() {
		var j job
		var attempt int
		var raw, meta, errs []byte
		if rows.Scan(&j.id, &j.kind, &j.state, &attempt, &raw, &meta, &errs) != nil || json.Unmarshal(raw, &j.args) != nil {
			continue
		}
		// As its next attempt will judge it: a call of an earlier one may
		// have reached the target unrecorded, and a resolve is then owed.
		next := &rivertype.JobRow{Attempt: attempt + 1, Metadata: meta}
		if json.Unmarshal(errs, &next.Errors) != nil {
			continue
		}
		j.uncertain = callsUnrecorded(next)
		jobs = append(jobs, j)
	}
	rows.Close()
	var done []any
	var escalations []escalation
	for _, j := range jobs {
		if len(j.args.Keys) == 0 {
			continue
		}
		states, err := s.loadStates(ctx, j.args.Target, j.args.Keys)
		if err != nil {
			return
		}
		var todo []int
		for i, k := range j.args.Keys {
			st := states[k.Key]
			if st != nil {
				st.uncertain = st.unsettled || j.uncertain
			}
			if st != nil && st.pending && st.seq == k.Seq && len(plan(st)) > 0 {
				todo = append(todo, i)
			}
		}
		if len(todo) == 0 {
			done = append(done, j.id)
			continue
		}
		// Only a job waiting for its turn on the rate limit: a retry's
		// keys wait for its back-off (the target failed them), which a
		// better class does not shorten.
		if j.state != "scheduled" {
			continue
		}
		if moved := escalated(j.args, states, todo); len(moved) > 0 {
			escalations = append(escalations, escalation{jobID: j.id, kind: j.kind, args: j.args, moved: moved, uncertain: j.uncertain})
		}
	}
	for _, e := range escalations {
		if _, err := s.escalate(ctx, e, "scheduled"); err != nil && !errors.Is(err, ErrClosed) {
			s.logger.Debug("Could not move escalated keys to a better class", "target", e.args.Target, "job_id", e.jobID, "err", err)
		}
	}
	if len(done) == 0 {
		return
	}
	q := `UPDATE river_job SET state = 'available', scheduled_at = ? WHERE state IN ('scheduled', 'retryable') AND id IN (` +
		placeholders(len(done)) + `)`
	qargs := append([]any{s.dbTime(time.Now())}, done...)
	err = s.submit(ctx, func(ctx context.Context, b *batch) error {
		_, err := b.tx.ExecContext(ctx, s.rebind(q), qargs...)
		return err
	})
	if err != nil && !errors.Is(err, ErrClosed) {
		s.logger.Debug("Could not release jobs that need no call", "err", err)
	}
}
