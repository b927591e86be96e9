package queue

import (
	"context"
	"fmt"
	"time"
)

// Queue states an operator lists with `alertfan queue list --state`.
const (
	StatePending  = "pending"  // a delivery is owed and its key has not failed yet (it may be held while its target is down)
	StateRetrying = "retrying" // a delivery is owed and its key has failed at least once
	StateDead     = "dead"     // a dead letter
)

// Entry is one (target, key) that still needs a delivery: the alert it is,
// and, when it has failed, the attempts, the last error and when the next
// attempt is due.
type Entry struct {
	State       string            `json:"state"`
	Target      string            `json:"target"`
	Key         string            `json:"key"`
	Alertname   string            `json:"alertname,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Attempts    int               `json:"attempts,omitempty"`
	LastError   string            `json:"last_error,omitempty"`
	NextAttempt *time.Time        `json:"next_attempt,omitempty"`
	UpdatedAt   time.Time         `json:"updated_at"`
}

// maxListed bounds one listing; a storm's backlog is read from metrics.
const maxListed = 1000

// Pending lists deliveries still owed (pending and retrying), oldest
// change first, at most 1000.
func (s *Store) Pending(ctx context.Context) ([]Entry, error) {
	rows, err := s.rdb.QueryContext(ctx, s.rebind(`SELECT target, key, payload, updated_at, CASE WHEN attempts_seq = seq THEN attempts ELSE 0 END, CASE WHEN attempts_seq = seq THEN last_error ELSE '' END
		FROM alertfan_state WHERE pending = 1 ORDER BY updated_at LIMIT ?`), maxListed)
	if err != nil {
		return nil, fmt.Errorf("queue: list pending: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		var payload string
		var at int64
		if err := rows.Scan(&e.Target, &e.Key, &payload, &at, &e.Attempts, &e.LastError); err != nil {
			return nil, err
		}
		e.State = StatePending
		if e.Attempts > 0 {
			e.State = StateRetrying
		}
		e.UpdatedAt = time.Unix(0, at).UTC()
		var d DeadLetter
		d.describe([]byte(payload))
		e.Alertname, e.Labels = d.Alertname, d.Labels
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return out, nil
	}
	// Jobs that have failed at least once say when the key is tried
	// next, and, when the key itself has failed, how.
	retrying, err := s.retryingKeys(ctx)
	if err != nil {
		return nil, err
	}
	for i := range out {
		e := &out[i]
		if r, ok := retrying[[2]string{e.Target, e.Key}]; ok {
			next := r.next
			e.NextAttempt = &next
			if e.Attempts > 0 && e.LastError == "" {
				e.LastError = r.lastError
			}
		}
	}
	return out, nil
}
