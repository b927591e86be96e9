package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// A key's job is planned at the priority class of the update that made
// the key pending (batch.jobs: its turn on the target's rate limit). An
// update that comes while the job waits and asks a better class — a
// PagerDuty sender's warning that turns critical, a Mackerel WARNING that
// turns CRITICAL, the resolve of an update queued behind a storm — would
// otherwise wait for the worse class's turn: behind every warning queued
// before it. The upsert notes the better class on the state (migration
// 42, enqueuedBetterClass), and the key is moved to a job of that class:
// by the re-planner when its job waits (replanDone), by the job itself
// when it runs (Work).
//
// Moving never puts a key in two jobs: the key leaves the old job's args
// in the transaction that enqueues it again, and only while that job is
// in a state no worker holds it in (or, from Work, running under this
// worker), so no other run of the old job can take the key up. The key
// keeps its seq, so its attempts (counted on the state under the seq) and
// its place in the lifecycle carry over.

// escalation is the keys of one job to move to a better class.
type escalation struct {
	jobID int64
	kind  string // the job's queue: the target's kind
	args  deliverArgs
	// moved are the keys to move, each with the class it asks.
	moved []movedKey
	// uncertain: a call of an earlier attempt of the job may have reached
	// the target unrecorded (callsUnrecorded); the moved keys keep it on
	// their rows (uncertain), as the job's errors no longer reach them.
	uncertain bool
}

type movedKey struct {
	keySeq
	class int
}

// moves reports whether k is one of the keys e moves.
func (e escalation) moves(k keySeq) bool {
	return slices.ContainsFunc(e.moved, func(m movedKey) bool { return m.keySeq == k })
}

// escalated is the keys of args, pending under the job's seq with work
// to do, whose state asks a better class than the job's.
func escalated(args deliverArgs, states map[string]*state, todo []int) []movedKey {
	var out []movedKey
	for _, i := range todo {
		k := args.Keys[i]
		if st := states[k.Key]; st != nil && st.pending && st.seq == k.Seq && st.class < args.Class && len(plan(st)) > 0 {
			out = append(out, movedKey{keySeq: k, class: st.class})
		}
	}
	return out
}

// escalate moves e's keys out of job e.jobID, if it is still in one of
// states, into jobs of their classes; it reports whether it did (false:
// the job moved on meanwhile, and keeps its keys). The keys' booking on
// the target's rate limit moves with them.
func (s *Store) escalate(ctx context.Context, e escalation, states ...string) (bool, error) {
	left := deliverArgs{Target: e.args.Target, Class: e.args.Class, Keys: slices.DeleteFunc(slices.Clone(e.args.Keys), e.moves)}
	raw, err := json.Marshal(left)
	if err != nil {
		return false, err
	}
	was, err := json.Marshal(e.args)
	if err != nil {
		return false, err
	}
	// Only if the job still holds the keys as they were read: another
	// replica's re-planner may have moved some of them since, and a move
	// from the args read before it would put a key in two jobs (a fresh
	// helper: 2 PostgreSQL replicas sent 3–14 of 150 escalated triggers
	// twice).
	set, args := `args = `+s.dialect.pick(`?::jsonb`, `jsonb(?)`), []any{string(raw)}
	if len(left.Keys) == 0 && !slices.Contains(states, "running") {
		// Nothing left to wait for: done now, not at its planned turn
		// (in the queue's depth and age metrics until then).
		set, args = set+`, state = 'available', scheduled_at = ?`, append(args, s.dbTime(time.Now()))
	}
	q := `UPDATE river_job SET ` + set + ` WHERE id = ? AND ` + s.dialect.pick(`args = ?::jsonb`, `json(args) = json(?)`) + ` AND state IN (` +
		placeholders(len(states)) + `)`
	args = append(args, e.jobID, string(was))
	for _, st := range states {
		args = append(args, st)
	}
	moved := false
	err = s.submit(ctx, func(ctx context.Context, b *batch) error {
		res, err := b.tx.ExecContext(ctx, s.rebind(q), args...)
		if err != nil {
			return fmt.Errorf("queue: move escalated keys out of their job: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		for _, m := range e.moved {
			if e.uncertain {
				if _, err := b.exec(ctx, `UPDATE alertfan_state SET uncertain = 1 WHERE target = ? AND key = ? AND seq = ?`, e.args.Target, m.Key, m.Seq); err != nil {
					return fmt.Errorf("queue: move escalated keys: %w", err)
				}
			}
			b.enqueue(e.args.Target, m.Key, e.kind, m.class, m.Seq)
		}
		moved = true
		return nil
	})
	if err != nil || !moved {
		return false, err
	}
	if t, ok := s.target(e.args.Target); ok {
		if sch, ok := t.Sink.(scheduler); ok {
			s.unschedule(sch, e.args.Target, len(e.moved), e.args.Class)
		}
	}
	s.metrics.escalated.Add(float64(len(e.moved)))
	s.logger.Debug("Moved queued keys to a job of the better priority class their newest update asks", "target", e.args.Target, "job_id", e.jobID, "keys", len(e.moved))
	return true, nil
}
