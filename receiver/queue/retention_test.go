package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
)

// openIdle opens a store without starting it: the tests call prune
// themselves, at a chosen "now".
func openIdle(t *testing.T, opts Options) *Store {
	t.Helper()
	opts.Registerer = prometheus.NewRegistry()
	opts.Retention = Retention{CompletedJobs: time.Hour, ResolvedStates: time.Hour, ClosedIssues: 2 * time.Hour, DeadLetters: time.Hour, History: time.Hour}
	s, err := Open(context.Background(), opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Close(ctx) //nolint:errcheck
	})
	return s
}

// prunedCount reads alertfan_store_pruned_rows_total{table}.
func prunedCount(t *testing.T, s *Store, table string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(s.retention.pruned))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "table" && l.GetValue() == table {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestPrune: per table, rows past their retention go and younger or live
// ones stay; nothing the lifecycle needs is ever removed (a firing state,
// a pending one, an undelivered resolve whose dead letter is kept, the
// alert row of a state, an open Backlog issue record, a closed one within
// reopen_within, a person-closed one of an alert still firing).
func TestPrune(t *testing.T) {
	now := time.Now()
	old := now.Add(-3 * time.Hour).UnixNano()
	young := now.Add(-10 * time.Minute).UnixNano()
	type row struct {
		name string
		sql  string
		args []any
		// kept is the row's existence query after the prune.
		kept     string
		keptArgs []any
		want     bool
	}
	state := func(key string, resolved, pending, version, delivered int, at int64) (string, []any) {
		return `INSERT INTO alertfan_state (target, key, version, delivered, pending, resolved, payload, updated_at) VALUES ('t', ?, ?, ?, ?, ?, '', ?)`,
			[]any{key, version, delivered, pending, resolved, at}
	}
	stateKept := `SELECT COUNT(*) FROM alertfan_state WHERE key = ?`
	mk := func(name string, q string, args []any, kept string, key any, want bool) row {
		return row{name: name, sql: q, args: args, kept: kept, keptArgs: []any{key}, want: want}
	}
	var rows []row
	add := func(name, key string, resolved, pending, version, delivered int, at int64, want bool) {
		q, a := state(key, resolved, pending, version, delivered, at)
		rows = append(rows, mk("state/"+name, q, a, stateKept, key, want))
	}
	add("resolved delivered old", "s1", 1, 0, 2, 2, old, false)
	add("resolved delivered young", "s2", 1, 0, 2, 2, young, true)
	add("firing old", "s3", 0, 0, 1, 1, old, true)
	add("resolved pending old", "s4", 1, 1, 2, 1, old, true)
	add("resolved undelivered with dead letter", "s5", 1, 0, 2, 1, old, true)
	add("resolved undelivered, dead letter gone", "s6", 1, 0, 2, 1, old, false)
	add("resolved, its resolve dead-lettered (acked as done)", "s7", 1, 0, 2, 2, old, true)
	rows = append(rows,
		mk("dead letter keeping s5", `INSERT INTO alertfan_dead (target, key, version, reason, error, attempts, created_at) VALUES ('t', 's5', 2, 'x', 'x', 1, ?)`, []any{young},
			`SELECT COUNT(*) FROM alertfan_dead WHERE key = ?`, "s5", true),
		mk("dead letter keeping s7", `INSERT INTO alertfan_dead (target, key, version, reason, error, attempts, created_at) VALUES ('t', 's7', 2, 'x', 'x', 1, ?)`, []any{young},
			`SELECT COUNT(*) FROM alertfan_dead WHERE key = ?`, "s7", true),
		mk("dead letter old", `INSERT INTO alertfan_dead (target, key, version, reason, error, attempts, created_at) VALUES ('t', 'd1', 1, 'x', 'x', 1, ?)`, []any{old},
			`SELECT COUNT(*) FROM alertfan_dead WHERE key = ?`, "d1", false),
	)
	alert := func(name, id string, seen int64, want bool) {
		rows = append(rows, mk("alert/"+name, `INSERT INTO alertfan_alert (identity, input, status, starts_at, ends_at, labels, seen_at) VALUES (?, 'am', 'resolved', 0, 0, '{}', ?)`,
			[]any{id, seen}, `SELECT COUNT(*) FROM alertfan_alert WHERE identity = ?`, id, want))
	}
	alert("old, no state", "a1", old, false)
	alert("young", "a2", young, true)
	alert("old, its state firing", "s3", old, true)
	alert("old, its state pruned in the same run", "s1", old, false)
	issue := func(name, id, st string, at int64, want bool) {
		rows = append(rows, mk("issue/"+name, `INSERT INTO alertfan_backlog_issue (target, identity, state, closed_at, updated_at) VALUES ('t', ?, ?, ?, ?)`,
			[]any{id, st, at, at}, `SELECT COUNT(*) FROM alertfan_backlog_issue WHERE identity = ?`, id, want))
	}
	issue("closed old", "i1", "closed", old, false)
	issue("closed within closed_issues (reopen_within)", "i2", "closed", now.Add(-90*time.Minute).UnixNano(), true)
	issue("open old", "i3", "open", old, true)
	issue("creating old", "i4", "creating", old, true)
	issue("person_closed old, alert still firing", "s3", "person_closed", old, true)
	issue("person_closed old, alert resolved", "s2", "person_closed", old, false)
	issue("resolved (issue left open) old, alert resolved", "i5", "resolved", old, false)
	issue("resolved (issue left open) within closed_issues", "i6", "resolved", now.Add(-90*time.Minute).UnixNano(), true)
	hist := func(name, id string, at int64, want bool) {
		rows = append(rows, mk("history/"+name, `INSERT INTO alertfan_history (at, identity, event) VALUES (?, ?, 'accepted')`,
			[]any{at, id}, `SELECT COUNT(*) FROM alertfan_history WHERE identity = ?`, id, want))
	}
	hist("old", "h1", old, false)
	hist("young", "h2", young, true)

	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			s := openIdle(t, d.opts(t))
			ctx := context.Background()
			for _, r := range rows {
				_, err := s.db.ExecContext(ctx, s.rebind(r.sql), r.args...)
				require.NoError(t, err, r.name)
			}
			job := func(kind, state string, finalized any) {
				_, err := s.db.ExecContext(ctx, s.rebind(`INSERT INTO river_job (args, kind, max_attempts, priority, queue, state, finalized_at) VALUES ('{}', ?, 5, 1, 'pagerduty', ?, ?)`), kind, state, finalized)
				require.NoError(t, err)
			}
			oldJob, youngJob := s.dbTime(now.Add(-3*time.Hour)), s.dbTime(now.Add(-10*time.Minute))
			job("completed_old", "completed", oldJob)
			job("discarded_old", "discarded", oldJob)
			job("cancelled_old", "cancelled", oldJob)
			job("completed_young", "completed", youngJob)
			job("available", "available", nil)

			n, err := s.prune(ctx, now)
			require.NoError(t, err)
			for _, r := range rows {
				var c int
				require.NoError(t, s.db.QueryRowContext(ctx, s.rebind(r.kept), r.keptArgs...).Scan(&c), r.name)
				require.Equal(t, r.want, c == 1, "%s: kept", r.name)
			}
			var jobs []string
			rs, err := s.db.QueryContext(ctx, `SELECT kind FROM river_job ORDER BY kind`)
			require.NoError(t, err)
			for rs.Next() {
				var k string
				require.NoError(t, rs.Scan(&k))
				jobs = append(jobs, k)
			}
			require.NoError(t, rs.Close())
			require.Equal(t, []string{"available", "completed_young"}, jobs, "only finished jobs past completed_jobs go")

			pruned := map[string]float64{}
			for _, r := range pruneRules {
				pruned[r.table] = prunedCount(t, s, r.table)
			}
			require.Equal(t, map[string]float64{"river_job": 3, "alertfan_state": 2, "alertfan_alert": 2, "alertfan_identity": 0,
				"alertfan_backlog_issue": 3, "alertfan_dead": 1, "alertfan_history": 1}, pruned)
			require.EqualValues(t, 12, n)

			// A second run finds nothing more.
			n, err = s.prune(ctx, now)
			require.NoError(t, err)
			require.Zero(t, n)
		})
	}
}

// TestPruneWindowsPastKeptRows: the rules whose rows past the cutoff may
// have to stay walk their table in windows (pruneRule.window). Every row
// that may go goes, whether it lies behind more kept rows than a batch,
// in a run of rows sharing one time that straddles a window's end (an
// intake batch writes one time for all its alerts), or among kept ones;
// every kept row stays.
func TestPruneWindowsPastKeptRows(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			s := openIdle(t, d.opts(t))
			ctx := context.Background()
			now := time.Now()
			at := func(i int) int64 { return now.Add(-3*time.Hour).UnixNano() + int64(i) }
			tx, err := s.db.BeginTx(ctx, nil)
			require.NoError(t, err)
			exec := func(q string, args ...any) {
				_, err := tx.ExecContext(ctx, s.rebind(q), args...)
				require.NoError(t, err, q)
			}
			alert := func(id string, seen int64) {
				exec(`INSERT INTO alertfan_alert (identity, input, status, starts_at, ends_at, labels, seen_at) VALUES (?, 'am', 'firing', 0, 0, '{}', ?)`, id, seen)
			}
			state := func(key string, resolved, version, delivered int, updated int64) {
				exec(`INSERT INTO alertfan_state (target, key, version, delivered, pending, resolved, payload, updated_at) VALUES ('t', ?, ?, ?, 0, ?, '', ?)`, key, version, delivered, resolved, updated)
			}
			issue := func(id, st string, updated int64) {
				exec(`INSERT INTO alertfan_backlog_issue (target, identity, state, closed_at, updated_at) VALUES ('t', ?, ?, ?, ?)`, id, st, updated, updated)
			}
			kept, gone := map[string][]string{}, map[string][]string{}
			// Alert rows: 2,500 of alerts still firing first, then 1,500
			// that may go sharing one time (the window's end falls
			// inside them), 700 more, with 300 kept among them.
			for i := range 2500 {
				id := fmt.Sprintf("firing-%d", i)
				alert(id, at(i))
				state(id, 0, 1, 1, at(i))
				kept["alert"] = append(kept["alert"], id)
			}
			for i := range 1500 {
				id := fmt.Sprintf("tied-%d", i)
				alert(id, at(3000))
				gone["alert"] = append(gone["alert"], id)
			}
			for i := range 1000 {
				id := fmt.Sprintf("late-%d", i)
				alert(id, at(4000+i))
				if i%10 < 3 {
					state(id, 0, 1, 1, at(4000+i))
					kept["alert"] = append(kept["alert"], id)
				} else {
					gone["alert"] = append(gone["alert"], id)
				}
			}
			// Resolved states: 1,200 whose resolve is undelivered and
			// dead-lettered, then 1,100 delivered.
			for i := range 1200 {
				key := fmt.Sprintf("undelivered-%d", i)
				state(key, 1, 2, 1, at(i))
				exec(`INSERT INTO alertfan_dead (target, key, version, reason, error, attempts, created_at) VALUES ('t', ?, 2, 'x', 'x', 1, ?)`, key, now.UnixNano())
				kept["state"] = append(kept["state"], key)
			}
			for i := range 1100 {
				key := fmt.Sprintf("delivered-%d", i)
				state(key, 1, 2, 2, at(2000))
				gone["state"] = append(gone["state"], key)
			}
			// Backlog issue records: 1,100 person-closed of alerts
			// firing, then 1,000 closed.
			for i := range 1100 {
				id := fmt.Sprintf("firing-%d", i)
				issue(id, "person_closed", at(i))
				kept["issue"] = append(kept["issue"], id)
			}
			for i := range 1000 {
				id := fmt.Sprintf("closed-%d", i)
				issue(id, "closed", at(2000+i/300))
				gone["issue"] = append(gone["issue"], id)
			}
			require.NoError(t, tx.Commit())

			_, err = s.prune(ctx, now)
			require.NoError(t, err)
			left := func(q string) map[string]bool {
				out := map[string]bool{}
				rows, err := s.db.QueryContext(ctx, q)
				require.NoError(t, err)
				defer rows.Close()
				for rows.Next() {
					var id string
					require.NoError(t, rows.Scan(&id))
					out[id] = true
				}
				require.NoError(t, rows.Err())
				return out
			}
			for table, q := range map[string]string{
				"alert": `SELECT identity FROM alertfan_alert`,
				"state": `SELECT key FROM alertfan_state WHERE resolved = 1`,
				"issue": `SELECT identity FROM alertfan_backlog_issue`,
			} {
				have := left(q)
				for _, id := range kept[table] {
					require.True(t, have[id], "%s %s kept", table, id)
				}
				for _, id := range gone[table] {
					require.False(t, have[id], "%s %s pruned", table, id)
				}
				require.Len(t, have, len(kept[table]), table)
			}
			require.EqualValues(t, len(gone["alert"]), prunedCount(t, s, "alertfan_alert"))
			require.EqualValues(t, len(gone["state"]), prunedCount(t, s, "alertfan_state"))
			require.EqualValues(t, len(gone["issue"]), prunedCount(t, s, "alertfan_backlog_issue"))
		})
	}
}

// acceptOne returns a function that accepts an update of the alert id,
// which started a minute ago, to phase want with its item's status.
func acceptOne(t *testing.T, s *Store, id string) func(want Phase, status string) {
	t0 := time.Now().Add(-time.Minute)
	return func(want Phase, status string) {
		t.Helper()
		_, err := s.Accept(context.Background(), &Intake{Updates: []Update{{
			Identity: id, Input: "alertmanager", Want: want, StartsAt: t0, EndsAt: t0.Add(30 * time.Second), Ordered: true,
			Labels: []byte(`{"alertname":"` + id + `"}`), Items: []Item{item(id, status)},
		}}})
		require.NoError(t, err)
	}
}

// TestPruneKeepsADeadLetteredResolve: a resolve the target refused is
// dead-lettered, and its state acked as done. Past resolved_states, within
// dead_letters, the janitor keeps the state and the alert row, so that
// `queue retry` still sends the resolve (a fresh helper saw the state
// pruned after resolved_states, and the retry then drop the letter and
// leave the incident open).
func TestPruneKeepsADeadLetteredResolve(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			sink := &recordingSink{}
			s := openStore(t, d.opts(t), sink)
			ctx := context.Background()
			const id = "am:refused"
			accept := acceptOne(t, s, id)
			accept(PhaseTriggered, "firing")
			require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 10*time.Second, 10*time.Millisecond)
			sink.mu.Lock()
			sink.fail = func(*sinks.Notification) error { return sinks.Permanent(sinks.ReasonClientError, errors.New("400")) }
			sink.mu.Unlock()
			accept(PhaseResolved, "resolved")
			var dead []DeadLetter
			require.Eventually(t, func() bool {
				var err error
				dead, err = s.DeadLetters(ctx)
				return err == nil && len(dead) == 1
			}, 10*time.Second, 10*time.Millisecond)

			// Past resolved_states, within dead_letters.
			_, err := s.prune(ctx, time.Now().Add(DefaultRetention.ResolvedStates+time.Hour))
			require.NoError(t, err)
			var states, alerts int
			require.NoError(t, s.rdb.QueryRowContext(ctx, s.rebind(`SELECT COUNT(*) FROM alertfan_state WHERE key = ?`), id).Scan(&states))
			require.NoError(t, s.rdb.QueryRowContext(ctx, s.rebind(`SELECT COUNT(*) FROM alertfan_alert WHERE identity = ?`), id).Scan(&alerts))
			require.Equal(t, [2]int{1, 1}, [2]int{states, alerts}, "the dead-lettered resolve's state and alert row stay")
			dead, err = s.DeadLetters(ctx)
			require.NoError(t, err)
			require.Len(t, dead, 1, "listed")

			sink.mu.Lock()
			sink.fail = nil
			sink.mu.Unlock()
			n, err := s.RetryDead(ctx, 0, true)
			require.NoError(t, err)
			require.Equal(t, 1, n)
			require.Eventually(t, func() bool {
				got := sink.all()
				return len(got) == 2 && got[1].Status() == sinks.StatusResolved
			}, 10*time.Second, 10*time.Millisecond, "the retry sent the resolve")
		})
	}
}

// TestPruneBatches: more rows than one batch are all pruned, a batch at a
// time.
func TestPruneBatches(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			s := openIdle(t, d.opts(t))
			ctx := context.Background()
			old := time.Now().Add(-2 * time.Hour).UnixNano()
			tx, err := s.db.BeginTx(ctx, nil)
			require.NoError(t, err)
			for i := range 2*pruneBatch + 500 {
				_, err := tx.ExecContext(ctx, s.rebind(`INSERT INTO alertfan_history (at, identity, event) VALUES (?, ?, 'accepted')`), old, fmt.Sprint(i))
				require.NoError(t, err)
			}
			require.NoError(t, tx.Commit())
			n, err := s.prune(ctx, time.Now())
			require.NoError(t, err)
			require.EqualValues(t, 2*pruneBatch+500, n)
			require.EqualValues(t, 2*pruneBatch+500, prunedCount(t, s, "alertfan_history"))
		})
	}
}

// TestSQLiteGivesSpaceBack: a new file is auto_vacuum=INCREMENTAL, and the
// janitor's vacuum after a prune shrinks it; a small file made without it
// is converted at start.
func TestSQLiteGivesSpaceBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	s := openIdle(t, Options{Driver: DriverSQLite, Path: path})
	ctx := context.Background()
	var mode int
	require.NoError(t, s.db.QueryRowContext(ctx, `PRAGMA auto_vacuum`).Scan(&mode))
	require.Equal(t, 2, mode, "auto_vacuum=INCREMENTAL on a new file")

	old := time.Now().Add(-2 * time.Hour).UnixNano()
	tx, err := s.db.BeginTx(ctx, nil)
	require.NoError(t, err)
	for i := range 5000 {
		_, err := tx.ExecContext(ctx, `INSERT INTO alertfan_history (at, identity, event, labels) VALUES (?, ?, 'accepted', ?)`, old, fmt.Sprint(i), fmt.Sprintf("%01000d", i))
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit())
	pages := func() int64 {
		var n int64
		require.NoError(t, s.db.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&n))
		return n
	}
	before := pages()
	s.janitor()
	after := pages()
	require.Less(t, after*4, before, "the freed pages went back: %d → %d pages", before, after)

	// Pages freed by what is not a prune (migration 41 drops the old
	// state table) go back too, at the next run.
	for _, q := range []string{
		`CREATE TABLE scratch (v TEXT)`,
		`WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000) INSERT INTO scratch SELECT hex(randomblob(500)) FROM c`,
		`DROP TABLE scratch`,
	} {
		_, err := s.db.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	before = pages()
	s.janitor()
	require.Less(t, pages()*2, before, "pages a drop freed went back with nothing pruned")

	// A small file made without auto_vacuum is converted at the next start.
	plain := filepath.Join(t.TempDir(), "plain.db")
	p, err := Open(ctx, Options{Driver: DriverSQLite, Path: plain, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	_, err = p.db.ExecContext(ctx, `PRAGMA auto_vacuum = NONE`)
	require.NoError(t, err)
	_, err = p.db.ExecContext(ctx, `VACUUM`)
	require.NoError(t, err)
	require.NoError(t, p.db.QueryRowContext(ctx, `PRAGMA auto_vacuum`).Scan(&mode))
	require.Equal(t, 0, mode)
	require.NoError(t, p.Close(ctx))
	p = openIdle(t, Options{Driver: DriverSQLite, Path: plain})
	require.NoError(t, p.db.QueryRowContext(ctx, `PRAGMA auto_vacuum`).Scan(&mode))
	require.Equal(t, 2, mode, "converted at start")
}

// TestWALTruncatedWhenIdle: once everything is copied and nothing was
// written for a few seconds, the WAL file is emptied.
func TestWALTruncatedWhenIdle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	s := openIdle(t, Options{Driver: DriverSQLite, Path: path})
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	require.NoError(t, err)
	for i := range 3000 {
		_, err := tx.ExecContext(ctx, `INSERT INTO alertfan_history (at, identity, event, labels) VALUES (?, ?, 'accepted', ?)`, 1, fmt.Sprint(i), fmt.Sprintf("%02000d", i))
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit())
	wal := func() int64 {
		fi, err := os.Stat(path + "-wal")
		require.NoError(t, err)
		return fi.Size()
	}
	require.Greater(t, wal(), int64(walTruncateMin))
	for range walIdleTicks + 1 {
		s.checkpointer()
	}
	require.Zero(t, wal(), "an idle store's WAL is truncated")
}

// TestPruneFollowsTheLifecycle: through Accept and the workers, a firing
// alert's rows survive any prune; once resolved and delivered they go after
// resolved_states. A late copy of the resolve is then a resolve of an alert
// alertfan does not know: it is passed on once (PagerDuty ignores a resolve
// of a resolved incident; Backlog, with no record, makes no call), and
// nothing fires.
func TestPruneFollowsTheLifecycle(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			sink := &recordingSink{}
			s := openStore(t, d.opts(t), sink)
			ctx := context.Background()
			const id = "am:life"
			accept := acceptOne(t, s, id)
			settled := func() bool {
				var pending int
				err := s.rdb.QueryRowContext(ctx, s.rebind(`SELECT pending FROM alertfan_state WHERE key = ?`), id).Scan(&pending)
				return err == nil && pending == 0
			}
			rows := func() (states, alerts int) {
				require.NoError(t, s.rdb.QueryRowContext(ctx, s.rebind(`SELECT COUNT(*) FROM alertfan_state WHERE key = ?`), id).Scan(&states))
				require.NoError(t, s.rdb.QueryRowContext(ctx, s.rebind(`SELECT COUNT(*) FROM alertfan_alert WHERE identity = ?`), id).Scan(&alerts))
				return
			}
			later := time.Now().Add(DefaultRetention.ResolvedStates + time.Hour)

			accept(PhaseTriggered, "firing")
			require.Eventually(t, func() bool { return len(sink.all()) == 1 && settled() }, 10*time.Second, 10*time.Millisecond)
			_, err := s.prune(ctx, later)
			require.NoError(t, err)
			st, al := rows()
			require.Equal(t, [2]int{1, 1}, [2]int{st, al}, "a firing alert keeps its state and its alert row")

			accept(PhaseResolved, "resolved")
			require.Eventually(t, func() bool { return len(sink.all()) == 2 && settled() }, 10*time.Second, 10*time.Millisecond)
			_, err = s.prune(ctx, time.Now().Add(time.Hour))
			require.NoError(t, err)
			st, al = rows()
			require.Equal(t, [2]int{1, 1}, [2]int{st, al}, "kept within resolved_states")
			_, err = s.prune(ctx, later)
			require.NoError(t, err)
			st, al = rows()
			require.Equal(t, [2]int{0, 0}, [2]int{st, al}, "pruned after resolved_states")

			accept(PhaseResolved, "resolved")
			require.Eventually(t, settled, 10*time.Second, 10*time.Millisecond)
			time.Sleep(200 * time.Millisecond)
			got := sink.all()
			require.Len(t, got, 3)
			require.Equal(t, sinks.StatusResolved, got[2].Status(), "the late copy is passed on as a resolve; nothing fires")
		})
	}
}

// TestVacuumStepFollowsItsCost: the incremental vacuum's step halves when
// a step held the store's connection over twice its target (a file whose
// free pages lie under live ones), doubles when it took under half, and
// stays within its bounds.
func TestVacuumStepFollowsItsCost(t *testing.T) {
	for _, c := range []struct {
		step int
		took time.Duration
		want int
	}{
		{1024, 2 * time.Second, 512},
		{vacuumMinStep, 2 * time.Second, vacuumMinStep},
		{64, vacuumStepTarget / 4, 128},
		{vacuumMaxStep, time.Millisecond, vacuumMaxStep},
		{256, vacuumStepTarget, 256},
		{256, 2 * vacuumStepTarget, 256},
		{256, vacuumStepTarget / 2, 256},
	} {
		require.Equal(t, c.want, nextVacuumStep(c.step, c.took), "%d pages in %s", c.step, c.took)
	}
}
