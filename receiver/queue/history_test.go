package queue

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// TestHistoryRowClean: PostgreSQL refuses invalid UTF-8 and NUL in TEXT,
// and a refused history row would fail the whole group commit (intake and
// acks with it), so every text is made storable first.
func TestHistoryRowClean(t *testing.T) {
	cases := []struct {
		name string
		row  histRow
		want func(t *testing.T, r histRow)
	}{
		{"multi-byte character across the cut", histRow{errText: strings.Repeat("a", maxHistError-1) + strings.Repeat("日本語", 20)}, func(t *testing.T, r histRow) {
			require.True(t, utf8.ValidString(r.errText))
			require.LessOrEqual(t, len(r.errText), maxHistError)
			require.Equal(t, strings.Repeat("a", maxHistError-1), r.errText)
		}},
		{"invalid UTF-8 and NUL", histRow{errText: "bad \xff\xfe byte\x00s", labels: "{\"a\":\"\xc3\"}", ref: "k\x00"}, func(t *testing.T, r histRow) {
			require.Equal(t, "bad \uFFFD bytes", r.errText)
			require.Equal(t, `{"a":"`+"\uFFFD"+`"}`, r.labels)
			require.Equal(t, "k", r.ref)
		}},
		{"clean text unchanged", histRow{errText: "pagerduty answered 400", labels: `{"alertname":"ディスク"}`}, func(t *testing.T, r histRow) {
			require.Equal(t, "pagerduty answered 400", r.errText)
			require.Equal(t, `{"alertname":"ディスク"}`, r.labels)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.row
			r.clean()
			c.want(t, r)
		})
	}
}

// TestHistoryChunksKeepEveryRowAndItsAlert: SQLite writes a batch's
// history in INSERTs of 32, 8 and 1 rows, each row finding its alert's
// rowid in the INSERT itself. Every row count that crosses those chunks
// keeps every row, in order, with the aid it was given, the aid of its
// alert when it was not given one, and 0 for a key with no alert (a
// group key).
func TestHistoryChunksKeepEveryRowAndItsAlert(t *testing.T) {
	s := openStore(t, Options{Driver: DriverSQLite, Path: t.TempDir() + "/q.db"}, &recordingSink{})
	ctx := context.Background()
	_, err := s.db.ExecContext(ctx, `INSERT INTO alertfan_alert (identity, input, status, starts_at, ends_at, labels, seen_at) VALUES ('am:a', 'alertmanager', 'firing', 0, 0, '{}', 0), ('am:b', 'alertmanager', 'firing', 0, 0, '{}', 0)`)
	require.NoError(t, err)
	aids := map[string]int64{}
	for _, id := range []string{"am:a", "am:b"} {
		var aid int64
		require.NoError(t, s.db.QueryRowContext(ctx, sqlAlertRowid, id).Scan(&aid))
		aids[id] = aid
	}
	for _, n := range []int{1, 7, 8, 9, 31, 32, 33, 41, 42, 100} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			ref := "chunk-" + strconv.Itoa(n)
			want := make([]int64, n)
			require.NoError(t, s.submit(ctx, func(ctx context.Context, b *batch) error {
				for i := range n {
					r := histRow{event: EventCall, target: "r/pagerduty/0", key: "k", attempt: i, ref: ref}
					switch i % 4 {
					case 0: // an alert the caller knew
						r.aid, r.identity = aids["am:b"], "am:b"
					case 1, 2: // an alert found by its identity
						r.identity = "am:a"
					case 3: // a group key: no alert
						r.identity = ""
					}
					want[i] = map[int]int64{0: aids["am:b"], 1: aids["am:a"], 2: aids["am:a"], 3: 0}[i%4]
					b.record(r)
				}
				return nil
			}))
			rows, err := s.db.QueryContext(ctx, `SELECT aid, attempt FROM alertfan_history WHERE ref = ? ORDER BY rowid`, ref)
			require.NoError(t, err)
			defer rows.Close()
			var got []int64
			for rows.Next() {
				var aid int64
				var attempt int
				require.NoError(t, rows.Scan(&aid, &attempt))
				require.Equal(t, len(got), attempt, "rows in the order recorded")
				got = append(got, aid)
			}
			require.NoError(t, rows.Err())
			require.Equal(t, want, got)
		})
	}
}

// TestHistoryOrderWithinOneCommit: a trigger and its resolve that the
// committer writes in one batch share their time; the alert view, oldest
// first, shows them in the order they were accepted (it showed the
// resolve first).
func TestHistoryOrderWithinOneCommit(t *testing.T) {
	s := openStore(t, drivers()[0].opts(t), &recordingSink{})
	ctx := context.Background()
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	upd := func(want Phase, status string, ends time.Time) *Intake {
		return &Intake{Updates: []Update{{Identity: "am:tie", Input: "alertmanager", Want: want, StartsAt: start, EndsAt: ends,
			Ordered: true, Labels: []byte(`{"alertname":"tie"}`), Items: []Item{item("am:tie", status)}}}}
	}
	rel := holdCommitter(t, s) // both Accepts in one batch
	errs := make(chan error, 2)
	go func() { _, err := s.Accept(ctx, upd(PhaseTriggered, "firing", time.Time{})); errs <- err }()
	require.Eventually(t, func() bool { return len(s.ops) == 1 }, 5*time.Second, time.Millisecond)
	go func() { _, err := s.Accept(ctx, upd(PhaseResolved, "resolved", start.Add(time.Minute))); errs <- err }()
	require.Eventually(t, func() bool { return len(s.ops) == 2 }, 5*time.Second, time.Millisecond)
	rel()
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)

	v, err := s.Alert(ctx, "am:tie")
	require.NoError(t, err)
	var acc []string
	var at []time.Time
	for _, e := range v.History {
		if e.Event == EventAccepted {
			acc, at = append(acc, e.Status), append(at, e.At)
		}
	}
	require.Equal(t, []string{string(PhaseTriggered), string(PhaseResolved)}, acc, "oldest first")
	require.Equal(t, at[0], at[1], "one commit: the case this test is about")
}

// TestHistoryOfAPrunedAlertRowStaysInItsView: with storage.retention.history
// longer than resolved_states, an alert's row is pruned and its history
// rows kept; when the alert fires again (a new alert row, a new rowid) its
// view still shows them. On SQLite the rows pointed at the pruned rowid
// and vanished from the view. A database whose earlier prunes left such
// rows gets them back when it is upgraded.
func TestHistoryOfAPrunedAlertRowStaysInItsView(t *testing.T) {
	ret := Retention{CompletedJobs: time.Hour, ResolvedStates: time.Hour, ClosedIssues: 2 * time.Hour, DeadLetters: time.Hour, History: 30 * 24 * time.Hour}
	ctx := context.Background()
	refire := func(t *testing.T, s *Store) {
		t.Helper()
		_, err := s.Accept(ctx, &Intake{Updates: []Update{{Identity: "am:x", Input: "alertmanager", Want: PhaseTriggered, StartsAt: time.Now().Truncate(time.Second),
			Ordered: true, Labels: []byte(`{"alertname":"x"}`), Items: []Item{item("am:x", "firing")}}}})
		require.NoError(t, err)
		v, err := s.Alert(ctx, "am:x")
		require.NoError(t, err)
		var evs []string
		for _, e := range v.History {
			evs = append(evs, e.Event)
		}
		require.Contains(t, evs, EventCall, "the kept call of the earlier occurrence: %v", evs)
	}
	// seed writes an alert row last seen 2 h ago with a call in its
	// history, and a newer alert after it (so x's rowid is not reused).
	seed := func(t *testing.T, s *Store) {
		t.Helper()
		old := time.Now().Add(-2 * time.Hour).UnixNano()
		_, err := s.db.ExecContext(ctx, `INSERT INTO alertfan_alert (identity, input, status, starts_at, ends_at, labels, seen_at) VALUES ('am:x', 'alertmanager', 'resolved', 1, 2, '{}', ?), ('am:y', 'alertmanager', 'firing', 1, 0, '{}', ?)`, old, time.Now().UnixNano())
		require.NoError(t, err)
		require.NoError(t, s.submit(ctx, func(ctx context.Context, b *batch) error {
			b.record(histRow{identity: "am:x", target: "r/pagerduty/0", key: "am:x", event: EventCall, action: "trigger", outcome: OutcomeSuccess, at: old})
			return nil
		}))
	}
	t.Run("pruned", func(t *testing.T) {
		s := openStore(t, Options{Driver: DriverSQLite, Path: t.TempDir() + "/q.db", Retention: ret}, &recordingSink{})
		seed(t, s)
		_, err := s.prune(ctx, time.Now())
		require.NoError(t, err)
		var n int
		require.NoError(t, s.db.QueryRowContext(ctx, `SELECT count(*) FROM alertfan_alert WHERE identity = 'am:x'`).Scan(&n))
		require.Zero(t, n, "the alert row is pruned")
		refire(t, s)
	})
	t.Run("pruned by an earlier build, then upgraded", func(t *testing.T) {
		path := t.TempDir() + "/q.db"
		s := openStore(t, Options{Driver: DriverSQLite, Path: path, Retention: ret}, &recordingSink{})
		seed(t, s)
		// What an earlier build left: no trigger, a prune that kept the
		// history rows' aid, a database at schema 36.
		for _, q := range []string{`DROP TRIGGER alertfan_alert_unlink_history`, `DELETE FROM alertfan_alert WHERE identity = 'am:x'`, `ALTER TABLE alertfan_state DROP COLUMN ref`, `DELETE FROM alertfan_migration WHERE version > 36`} {
			_, err := s.db.ExecContext(ctx, q)
			require.NoError(t, err)
		}
		require.NoError(t, s.Close(ctx))
		refire(t, openStore(t, Options{Driver: DriverSQLite, Path: path, Retention: ret}, &recordingSink{}))
	})
}

// TestHistoryReadsFindAnIdentityByIndex: the alert view's history reads
// (history, destinations, describeDestination) find an identity's rows by
// index, never by walking the rows of other identities. For an identity
// with no alert row (a group key, a pruned alert) SQLite took the (aid,
// id) index, which serves ORDER BY id, and walked every aid-0 row: once
// pruning unlinks alerts' rows (migration 37), most of the table (280 ms
// against 0.3 ms for one alert among 500,000 unlinked rows).
func TestHistoryReadsFindAnIdentityByIndex(t *testing.T) {
	s := openStore(t, drivers()[0].opts(t), &recordingSink{})
	ctx := context.Background()
	_, err := s.db.ExecContext(ctx, `INSERT INTO alertfan_alert (identity, input, status, starts_at, ends_at, labels, seen_at) VALUES ('am:linked', 'alertmanager', 'firing', 0, 0, '{}', 0)`)
	require.NoError(t, err)
	for _, id := range []string{"am:linked", "am:unlinked"} {
		src, args, err := s.historyConds().source(ctx, id)
		require.NoError(t, err)
		// The shapes of the view's reads.
		for _, q := range []string{
			`SELECT id, at FROM ` + src + ` ORDER BY id DESC LIMIT 2000`,
			`SELECT id, at FROM ` + src + ` AND target = 'r/pagerduty/0' AND event <> 'accepted' ORDER BY id DESC LIMIT 2000`,
			`SELECT outcome FROM ` + src + ` AND target = 'r/pagerduty/0' AND event = 'call' ORDER BY id DESC LIMIT 20`,
			`SELECT DISTINCT target, key FROM ` + src + ` AND event = 'accepted' AND key <> 'x' AND key <> ''`,
		} {
			rows, err := s.rdb.QueryContext(ctx, `EXPLAIN QUERY PLAN `+q, args...)
			require.NoError(t, err)
			var plan []string
			for rows.Next() {
				var id, parent, unused int
				var detail string
				require.NoError(t, rows.Scan(&id, &parent, &unused, &detail))
				plan = append(plan, detail)
			}
			require.NoError(t, rows.Err())
			rows.Close()
			all := strings.Join(plan, "; ")
			require.NotContains(t, all, "SCAN alertfan_history", q)
			require.Contains(t, all, "alertfan_history_identity (identity=?)", "the rows kept without an alert row: %s", q)
			if id == "am:unlinked" {
				require.NotContains(t, all, "alertfan_history_aid", "an identity with no alert row has no aid: %s", q)
			}
		}
	}
}

// TestHistoryLinksEachAlertRowItsWriteMade: a history row's aid is the
// rowid of the alert row the same accept wrote, whether the accept
// inserted it (a new alert: the insert's result gives it) or upserted it
// (an alert this process has seen, whose row was pruned meanwhile: the
// history row finds it by identity), and stays the row's when the accept
// refreshes a row that is there (read before the write).
func TestHistoryLinksEachAlertRowItsWriteMade(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, drivers()[0].opts(t), &recordingSink{})
	accept := func(status Phase, startsAt int64) {
		t.Helper()
		_, err := s.Accept(ctx, &Intake{Updates: []Update{{Identity: "am:z", Input: "alertmanager", Want: status, StartsAt: time.Unix(startsAt, 0),
			Ordered: true, Labels: []byte(`{"alertname":"z"}`), Items: []Item{item("am:z", string(status))}}}})
		require.NoError(t, err)
	}
	linked := func() (rowid, aid int64) {
		t.Helper()
		require.NoError(t, s.db.QueryRowContext(ctx, `SELECT rowid FROM alertfan_alert WHERE identity = 'am:z'`).Scan(&rowid))
		require.NoError(t, s.db.QueryRowContext(ctx, `SELECT aid FROM alertfan_history WHERE identity = 'am:z' ORDER BY id DESC LIMIT 1`).Scan(&aid))
		return rowid, aid
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO alertfan_alert (identity, input, status, starts_at, ends_at, labels, seen_at) VALUES ('am:other', 'alertmanager', 'firing', 1, 0, '{}', 1)`)
	require.NoError(t, err)
	accept(PhaseTriggered, 100) // new: inserted
	rowid, aid := linked()
	require.Equal(t, rowid, aid)
	require.NotZero(t, aid)
	accept(PhaseResolved, 100) // there: upserted, the row read first
	r2, a2 := linked()
	require.Equal(t, []int64{rowid, rowid}, []int64{r2, a2})
	// Pruned while this process remembers having seen it: the upsert
	// inserts a row with a new rowid.
	_, err = s.db.ExecContext(ctx, `DELETE FROM alertfan_alert WHERE identity = 'am:z'`)
	require.NoError(t, err)
	_, err = s.db.ExecContext(ctx, `INSERT INTO alertfan_alert (identity, input, status, starts_at, ends_at, labels, seen_at) VALUES ('am:later', 'alertmanager', 'firing', 1, 0, '{}', 1)`)
	require.NoError(t, err)
	require.True(t, s.seen.maybe("am:z"))
	accept(PhaseTriggered, 200)
	r3, a3 := linked()
	require.Equal(t, r3, a3)
	require.Greater(t, r3, rowid, "a new row")
}
