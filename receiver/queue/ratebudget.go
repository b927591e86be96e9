package queue

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/alertfan/alertfan/sinks"
)

// RateBudget is the rate budget shared by every replica on this store, for
// sinks.Limiters.SetBudget; nil on SQLite, which one process owns (its
// limiters alone see every call).
//
// One row per limiter key holds the start of the next free call slot
// (alertfan_rate.next_slot, microseconds on the database's clock). A claim
// moves it on by n intervals in one upsert and gets the n slots before;
// the row lock orders claims, so no two replicas get the same slot and the
// slots of the whole deployment are interval apart. A 429's Retry-After
// sets held_until: no slot starts before it.
//
// Booked slots never reach further ahead than maxAhead intervals of the
// claim's own rate: far more than the replicas hold booked at once, and a
// raised rate (a reload) is not held behind slots booked at the old one.
func (s *Store) RateBudget() sinks.Budget {
	if s.dialect != dialectPostgres {
		return nil
	}
	return pgBudget{db: s.db}
}

type pgBudget struct{ db *sql.DB }

// The database's clock orders every replica's slots; each replica maps a
// slot to its own clock by the offset between the two, the database's read
// after the row lock was taken and the local one when the answer arrived
// (off by the answer's way back, a call a moment late, never early).
const (
	sqlClaim = `WITH c AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS now)
INSERT INTO alertfan_rate AS r (key, next_slot) SELECT $1, c.now + $2 FROM c
ON CONFLICT (key) DO UPDATE SET next_slot =
	GREATEST(LEAST(r.next_slot, (SELECT now FROM c) + $3), (SELECT now FROM c), r.held_until) + $2
RETURNING r.next_slot - $2, r.held_until, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint`
	sqlHold = `WITH c AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS now)
INSERT INTO alertfan_rate AS r (key, next_slot, held_until) SELECT $1, c.now + $2, c.now + $2 FROM c
ON CONFLICT (key) DO UPDATE SET held_until = GREATEST(r.held_until, (SELECT now FROM c) + $2)`
)

// maxAhead bounds, in intervals, how far ahead of now slots are booked.
const maxAhead = 1024

// Claim books n slots interval apart and returns the first one's start
// and the end of the key's 429 hold on the local clock.
func (b pgBudget) Claim(ctx context.Context, key string, n int, interval time.Duration) (time.Time, time.Time, error) {
	first, held, dbNow, err := b.claim(ctx, key, n, interval)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	now := time.Now()
	local := func(us int64) time.Time { return now.Add(time.Duration(us-dbNow) * time.Microsecond) }
	var heldUntil time.Time
	if held > 0 {
		heldUntil = local(held)
	}
	return local(first), heldUntil, nil
}

// claim returns the first slot booked, the end of the key's hold and the
// database's clock, all in microseconds since the epoch.
func (b pgBudget) claim(ctx context.Context, key string, n int, interval time.Duration) (first, held, dbNow int64, err error) {
	iv := interval.Microseconds()
	if err := b.db.QueryRowContext(ctx, sqlClaim, key, int64(n)*iv, maxAhead*iv).Scan(&first, &held, &dbNow); err != nil {
		return 0, 0, 0, fmt.Errorf("queue: claim rate slots: %w", err)
	}
	return first, held, dbNow, nil
}

// Hold gives nobody a slot of key for d.
func (b pgBudget) Hold(ctx context.Context, key string, d time.Duration) error {
	if _, err := b.db.ExecContext(ctx, sqlHold, key, d.Microseconds()); err != nil {
		return fmt.Errorf("queue: hold rate slots: %w", err)
	}
	return nil
}
