package queue

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/alertfan/alertfan/sinks"
)

// History events: what alertfan accepted for an alert and what it did
// about it, one row each in alertfan_history (migration 22).
const (
	EventAccepted = "accepted" // a transition stored for a destination (or, with no target, for none)
	EventStale    = "stale"    // an update older than what was accepted; it changed nothing
	EventExpired  = "expired"  // resolved by resolve_after: the sender stopped refreshing it
	EventCall     = "call"     // a call to the destination, with its outcome
	EventRetried  = "retried"  // an operator re-queued its dead letter
	EventDropped  = "dropped"  // an operator dropped its dead letter
)

// Call outcomes in the history.
const (
	OutcomeSuccess = "success"
	OutcomeRetry   = "retry"
	OutcomeDead    = "dead"
)

// histRow is one alertfan_history row. Rows are collected by the batch
// that makes the change they describe and written by it, in its
// transaction, before its COMMIT (flushHistory): the history costs no
// transaction and no fsync of its own.
type histRow struct {
	// aid is the alert's alertfan_alert rowid on SQLite (0: none known).
	aid                                    int64
	at                                     int64
	identity, target, key, event           string
	input, status, labels, receiver, route string
	action, outcome                        string
	httpStatus                             int
	reason, errText                        string
	attempt                                int
	ref                                    string
}

const histColumns = `aid, at, identity, target, key, event, input, status, labels, receiver, route, action, outcome, http_status, reason, error, attempt, ref`

// histChunk rows go in one PostgreSQL INSERT: 18 parameters each stays well
// under its limit of 65,535.
const histChunk = 128

// maxHistError bounds the error text kept per call.
const maxHistError = 1024

// clean makes every text storable: valid UTF-8 without NUL (PostgreSQL
// refuses both in TEXT, and a refused history row would fail the batch
// that carries intake and acks), the error cut to maxHistError bytes on a
// character boundary.
func (r *histRow) clean() {
	for _, f := range []*string{&r.identity, &r.target, &r.key, &r.input, &r.labels, &r.receiver, &r.route, &r.action, &r.reason, &r.ref} {
		*f = storableText(*f)
	}
	r.errText = storableError(r.errText)
}

// storableError is an error text as alertfan stores it (history rows,
// dead letters, River's job errors): storable, then cut to maxHistError
// bytes — after, since each invalid byte became a 3-byte U+FFFD.
func storableError(s string) string { return sinks.CutBytes(storableText(s), maxHistError) }

// storableText is s as valid UTF-8 without NUL, which PostgreSQL refuses
// in TEXT (a target's error body may be Latin-1 or Shift_JIS).
func storableText(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// record queues a history row for this batch's transaction.
func (b *batch) record(r histRow) {
	if b.s.opts.NoHistory {
		return
	}
	if r.at == 0 {
		r.at = b.now
	}
	b.hist = append(b.hist, r)
}

// On SQLite the history goes in multi-row INSERTs of sqliteHistChunks rows
// (32, 8, then one at a time): three texts, each prepared once on the
// writer (hotStatements) — a text per row count would be parsed again by
// every batch, since modernc parses at every prepare. Each row finds its
// alert's rowid (aid) in the INSERT itself when the caller did not know
// it (a call, an expiry, an operator's action; none for a group key):
// COALESCE stops at a known aid, so the lookup runs only for those rows.
// Per-row statements, with the aid read by a statement of its own, were
// 9% of a drain's CPU (BENCHMARKS.md, "History in chunks, no common
// labels per payload").
// PostgreSQL, which has no alert rowid, takes chunks of up to histChunk
// rows, one round trip each.
var sqliteHistChunks = [...]int{32, 8, 1}

// sqliteHistRow is one row of the SQLite INSERT: 19 parameters, the aid
// and the identity it is looked up by first.
const sqliteHistRow = `(COALESCE(NULLIF(?, 0), (SELECT rowid FROM alertfan_alert WHERE identity = ?), 0), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// sqliteHistInserts are the SQLite INSERT texts, by sqliteHistChunks.
var sqliteHistInserts = func() (q [len(sqliteHistChunks)]string) {
	for i, n := range sqliteHistChunks {
		q[i] = "INSERT INTO alertfan_history (" + histColumns + ") VALUES " + strings.TrimSuffix(strings.Repeat(sqliteHistRow+", ", n), ", ")
	}
	return q
}()

// sqlAlertRowid finds the aid of an alert by its identity.
const sqlAlertRowid = `SELECT rowid FROM alertfan_alert WHERE identity = ?`

// appendValues appends the row's values of histColumns after aid, which
// each dialect gives its own way.
func (r *histRow) appendValues(args []any) []any {
	return append(args, r.at, r.identity, r.target, r.key, r.event, r.input, r.status, r.labels, r.receiver, r.route,
		r.action, r.outcome, r.httpStatus, r.reason, r.errText, r.attempt, r.ref)
}

// flushHistory writes the batch's history rows.
func (b *batch) flushHistory(ctx context.Context) error {
	if b.s.dialect == dialectSQLite {
		rows := b.hist
		for i, n := range sqliteHistChunks {
			for len(rows) >= n {
				args := make([]any, 0, n*19)
				for j := range rows[:n] {
					r := &rows[j]
					r.clean()
					args = r.appendValues(append(args, r.aid, r.identity))
				}
				if _, err := b.exec(ctx, sqliteHistInserts[i], args...); err != nil {
					return fmt.Errorf("queue: write history: %w", err)
				}
				rows = rows[n:]
			}
		}
		b.hist = b.hist[:0]
		return nil
	}
	for start := 0; start < len(b.hist); start += histChunk {
		rows := b.hist[start:min(start+histChunk, len(b.hist))]
		args := make([]any, 0, len(rows)*18)
		for _, r := range rows {
			r.clean()
			args = r.appendValues(append(args, int64(0)))
		}
		if _, err := b.exec(ctx, historyInsert(len(rows)), args...); err != nil {
			return fmt.Errorf("queue: write history: %w", err)
		}
	}
	b.hist = b.hist[:0]
	return nil
}

// historyInserts caches the PostgreSQL INSERT text per row count (the
// statement cache is keyed by text).
var historyInserts [histChunk + 1]string

func init() {
	one := "(" + placeholders(18) + ")"
	for n := 1; n <= histChunk; n++ {
		historyInserts[n] = "INSERT INTO alertfan_history (" + histColumns + ") VALUES " + strings.TrimSuffix(strings.Repeat(one+", ", n), ", ")
	}
}

func historyInsert(n int) string { return historyInserts[n] }

// receiverOfTarget is the receiver a stored target id belongs to, whether
// or not it is still configured ("receiver/kind/index", or
// "retired/<destination>").
func (s *Store) receiverOfTarget(id string) string {
	if t, ok := s.target(id); ok {
		return t.Receiver
	}
	if i := strings.LastIndexByte(id, '/'); i > 0 {
		if j := strings.LastIndexByte(id[:i], '/'); j > 0 {
			return id[:j]
		}
	}
	return ""
}

// recordCalls writes call rows whose outcome is not written with an ack
// (a retry), with the other delivery outcomes (s.acks).
func (s *Store) recordCalls(ctx context.Context, rows []histRow) {
	s.recordFailure(ctx, "", keySeq{}, 0, rows, time.Time{}, nil)
}
