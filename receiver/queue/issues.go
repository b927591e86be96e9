package queue

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/alertfan/alertfan/sinks/backlog"
)

var _ backlog.IssueStore = (*Store)(nil)

// GetIssue reads the issue record of (target, identity). The identity is
// kept in its StoreKey form (a group-mode issue's is the group key), as the
// states are, so that retention finds an issue's state by it.
func (s *Store) GetIssue(ctx context.Context, target, identity string) (backlog.IssueRecord, bool, error) {
	identity = StoreKey(identity)
	var rec backlog.IssueRecord
	var closed, updated int64
	err := s.rdb.QueryRowContext(ctx, s.rebind(`SELECT issue_id, issue_key, state, gen, closed_at, content_hash, updated_at FROM alertfan_backlog_issue WHERE target = ? AND identity = ?`), target, identity).
		Scan(&rec.IssueID, &rec.IssueKey, &rec.State, &rec.Gen, &closed, &rec.ContentHash, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, fmt.Errorf("queue: read issue record: %w", err)
	}
	if closed > 0 {
		rec.ClosedAt = time.Unix(0, closed)
	}
	rec.RecordedAt = time.Unix(0, updated)
	return rec, true, nil
}

// PutIssue durably writes the record; the primary key on (target,
// identity) means there is only ever one. The identity is kept in its
// StoreKey form, as GetIssue reads it.
func (s *Store) PutIssue(ctx context.Context, target, identity string, rec backlog.IssueRecord) error {
	identity = StoreKey(identity)
	var closed int64
	if !rec.ClosedAt.IsZero() {
		closed = rec.ClosedAt.UnixNano()
	}
	return s.submit(ctx, func(ctx context.Context, b *batch) error {
		_, err := b.exec(ctx, `INSERT INTO alertfan_backlog_issue (target, identity, issue_id, issue_key, state, gen, closed_at, content_hash, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (target, identity) DO UPDATE SET issue_id = excluded.issue_id, issue_key = excluded.issue_key,
				state = excluded.state, gen = excluded.gen, closed_at = excluded.closed_at, content_hash = excluded.content_hash,
				updated_at = excluded.updated_at`,
			target, identity, rec.IssueID, rec.IssueKey, rec.State, rec.Gen, closed, rec.ContentHash, b.now)
		if err != nil {
			return fmt.Errorf("queue: write issue record: %w", err)
		}
		return nil
	})
}

// A Backlog call is not idempotent: its retry after a lost answer waits
// for it to land (settler).
var _ settler = (*backlog.Notifier)(nil)
