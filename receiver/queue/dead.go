package queue

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/alertfan/alertfan/sinks"
)

// DeadLetter is a delivery that failed permanently or ran out of attempts.
type DeadLetter struct {
	ID        int64     `json:"id"`
	Target    string    `json:"target"`
	Key       string    `json:"key"`
	Version   int64     `json:"version"`
	Reason    string    `json:"reason"`
	Error     string    `json:"error"`
	Attempts  int       `json:"attempts"`
	CreatedAt time.Time `json:"created_at"`
	// Alertname and Labels say which alert this is: the labels of the
	// alert (or the labels all alerts of a group share) in the newest
	// state kept for (target, key); empty when that state was cleaned up.
	Alertname string            `json:"alertname,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// describe fills Alertname and Labels from a state payload (a
// sinks.Notification in JSON).
func (d *DeadLetter) describe(payload []byte) {
	var n struct {
		Alerts []struct {
			Labels map[string]string `json:"labels"`
		} `json:"alerts"`
	}
	if len(payload) == 0 || json.Unmarshal(payload, &n) != nil || len(n.Alerts) == 0 {
		return
	}
	common := maps.Clone(n.Alerts[0].Labels)
	for _, a := range n.Alerts[1:] {
		maps.DeleteFunc(common, func(k, v string) bool { return a.Labels[k] != v })
	}
	d.Labels = common
	d.Alertname = common["alertname"]
}

// ErrNotFound is returned for a dead letter id that does not exist.
var ErrNotFound = errors.New("no such dead letter")

// DeadLetters lists dead letters, oldest first.
func (s *Store) DeadLetters(ctx context.Context) ([]DeadLetter, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT d.id, d.target, d.key, d.version, d.reason, d.error, d.attempts, d.created_at, COALESCE(st.payload, '')
		FROM alertfan_dead d LEFT JOIN alertfan_state st ON st.target = d.target AND st.key = d.key ORDER BY d.id`)
	if err != nil {
		return nil, fmt.Errorf("queue: list dead letters: %w", err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		var d DeadLetter
		var at int64
		var payload string
		if err := rows.Scan(&d.ID, &d.Target, &d.Key, &d.Version, &d.Reason, &d.Error, &d.Attempts, &at, &payload); err != nil {
			return nil, err
		}
		d.CreatedAt = time.Unix(0, at).UTC()
		d.describe([]byte(payload))
		out = append(out, d)
	}
	return out, rows.Err()
}

// RetryDead sends a dead letter's (target, key) again, with its newest
// state. all retries every dead letter; otherwise id names one.
func (s *Store) RetryDead(ctx context.Context, id int64, all bool) (int, error) {
	if !all {
		// An unknown id is answered before the write: an error inside a
		// group commit would fail the intake requests sharing it.
		var one int
		err := s.rdb.QueryRowContext(ctx, s.rebind(`SELECT 1 FROM alertfan_dead WHERE id = ?`), id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, ErrNotFound
		}
		if err != nil {
			return 0, fmt.Errorf("queue: find dead letter: %w", err)
		}
	}
	n := 0
	err := s.submit(ctx, func(ctx context.Context, b *batch) error {
		n = 0
		q := `SELECT d.id, d.target, d.key, d.version FROM alertfan_dead d ORDER BY d.id`
		args := []any{}
		if !all {
			q = `SELECT d.id, d.target, d.key, d.version FROM alertfan_dead d WHERE d.id = ?`
			args = append(args, id)
		}
		rows, err := b.tx.QueryContext(ctx, s.rebind(q), args...)
		if err != nil {
			return err
		}
		type ref struct {
			id          int64
			target, key string
			version     int64
		}
		var refs []ref
		for rows.Next() {
			var r ref
			if err := rows.Scan(&r.id, &r.target, &r.key, &r.version); err != nil {
				rows.Close()
				return err
			}
			refs = append(refs, r)
		}
		rows.Close()
		if !all && len(refs) == 0 {
			// Nothing written yet: the caller's error, not the batch's.
			return &OpError{Err: ErrNotFound}
		}
		for _, r := range refs {
			sent, err := b.retryDead(ctx, r.id, r.target, r.key, r.version)
			if err != nil {
				return err
			}
			if sent {
				n++
			}
		}
		return nil
	})
	return n, err
}

// retryDead deletes dead letter id of (target, key) and queues its state
// again, if it is still the newest (version): a newer state, delivered or
// queued, supersedes it, and retrying would repeat a call. It reports
// whether a delivery was queued.
func (b *batch) retryDead(ctx context.Context, id int64, target, key string, version int64) (bool, error) {
	if _, err := b.exec(ctx, `DELETE FROM alertfan_dead WHERE id = ?`, id); err != nil {
		return false, err
	}
	b.record(histRow{identity: key, target: target, key: key, event: EventRetried, receiver: b.s.receiverOfTarget(target)})
	res, err := b.exec(ctx, `UPDATE alertfan_state SET delivered = 0 WHERE target = ? AND key = ? AND version = ? AND pending = 0`, target, key, version)
	if err != nil {
		return false, err
	}
	if k, _ := res.RowsAffected(); k == 0 {
		return false, nil // superseded, or cleaned up: nothing left to send
	}
	kind, err := b.s.kindOf(target)
	if err != nil {
		return false, err
	}
	return true, b.markPending(ctx, target, key, kind, sinks.PriorityWarning)
}

// DropDead deletes one dead letter: an operator has looked at it and
// decided it needs no delivery. The id is checked before the write, since
// an error inside a group commit would fail the requests sharing it.
func (s *Store) DropDead(ctx context.Context, id int64) error {
	var one int
	err := s.rdb.QueryRowContext(ctx, s.rebind(`SELECT 1 FROM alertfan_dead WHERE id = ?`), id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("queue: find dead letter: %w", err)
	}
	return s.submit(ctx, func(ctx context.Context, b *batch) error {
		var target, key string
		err := b.tx.QueryRowContext(ctx, s.rebind(`DELETE FROM alertfan_dead WHERE id = ? RETURNING target, key`), id).Scan(&target, &key)
		if errors.Is(err, sql.ErrNoRows) {
			return &OpError{Err: ErrNotFound} // dropped meanwhile by another request
		}
		if err != nil {
			return err
		}
		b.record(histRow{identity: key, target: target, key: key, event: EventDropped, receiver: s.receiverOfTarget(target)})
		return nil
	})
}

// kindOf reads the sink kind from a target id ("receiver/kind/index"), so
// a dead letter of a target removed by a reload can still be retried once
// the target is back.
func (s *Store) kindOf(target string) (string, error) {
	if t, ok := s.target(target); ok {
		return t.Kind, nil
	}
	if dest, ok := strings.CutPrefix(target, RetiredPrefix); ok {
		if kind, _, ok := strings.Cut(dest, ":"); ok && slices.Contains(Kinds, kind) {
			return kind, nil
		}
	}
	parts := strings.Split(target, "/")
	if len(parts) >= 3 && slices.Contains(Kinds, parts[len(parts)-2]) {
		return parts[len(parts)-2], nil
	}
	return "", fmt.Errorf("target %s is not configured", target)
}
