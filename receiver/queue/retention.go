package queue

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Retention is how long the store keeps rows that no longer drive any
// delivery (storage.retention). A zero field takes its default.
type Retention struct {
	// CompletedJobs: River's completed, cancelled and discarded jobs,
	// counted from when they finished (default 1h).
	CompletedJobs time.Duration
	// ResolvedStates: resolved and delivered (target, key) states, and an
	// alert's own state once no (target, key) state of it is left, counted
	// from the last update (default 7 days).
	ResolvedStates time.Duration
	// ClosedIssues: Backlog issue records in closed or person_closed
	// states, counted from the last write (default 30 days).
	ClosedIssues time.Duration
	// DeadLetters: dead letters, counted from when they were made
	// (default 30 days).
	DeadLetters time.Duration
	// History: delivery history rows (default 7 days).
	History time.Duration
}

// DefaultRetention is what a zero Retention field means.
var DefaultRetention = Retention{
	CompletedJobs:  time.Hour,
	ResolvedStates: 7 * 24 * time.Hour,
	ClosedIssues:   30 * 24 * time.Hour,
	DeadLetters:    30 * 24 * time.Hour,
	History:        7 * 24 * time.Hour,
}

func (r Retention) withDefaults() Retention {
	pick := func(v, d time.Duration) time.Duration {
		if v <= 0 {
			return d
		}
		return v
	}
	return Retention{
		CompletedJobs:  pick(r.CompletedJobs, DefaultRetention.CompletedJobs),
		ResolvedStates: pick(r.ResolvedStates, DefaultRetention.ResolvedStates),
		ClosedIssues:   pick(r.ClosedIssues, DefaultRetention.ClosedIssues),
		DeadLetters:    pick(r.DeadLetters, DefaultRetention.DeadLetters),
		History:        pick(r.History, DefaultRetention.History),
	}
}

// janitorInterval is how often the janitor runs: a quarter of the shortest
// retention, so nothing outlives its retention by much more, between 5 s
// and 5 min.
func (r Retention) janitorInterval() time.Duration {
	short := min(r.CompletedJobs, r.ResolvedStates, r.ClosedIssues, r.DeadLetters, r.History)
	return min(max(short/4, 5*time.Second), 5*time.Minute)
}

// pruneBatch is how many rows one DELETE removes. On SQLite each statement
// holds the one write connection; 1,000 rows take a few milliseconds, and
// intake's commits take the connection between two statements.
const pruneBatch = 1000

// pruneRule deletes what is older than a cutoff from one table. query has
// three placeholders: the cutoff, the batch size, the cutoff again (the
// outer statement re-checks the rows' own columns, so that on PostgreSQL a
// row updated after the inner SELECT saw it is not deleted); a windowed
// rule's, the window's bounds and the cutoff (see window).
type pruneRule struct {
	table     string
	retention func(Retention) time.Duration
	// jobTime: the cutoff is River's timestamp, not Unix nanoseconds.
	jobTime bool
	query   string
	// window, when set, makes the rule walk its table's time column in
	// windows instead of taking the first pruneBatch rows past the cutoff
	// each time: for tables where rows past the cutoff may have to stay
	// (an alert row whose alert still has a state, a resolve not yet
	// delivered, a closed issue of an alert firing again). Taken from the
	// start each time, a batch walked every row kept before it again: with
	// 500,000 alerts firing for longer than resolved_states, each batch of
	// the alert rows behind them took 430 ms on the one writer, and a
	// prune of 458,000 of them 3 min 18 s, with intake waiting up to 3.9 s
	// (BENCHMARKS.md, "The prune walks its tables once").
	//
	// window selects the time column's value at the batch's end: args
	// (lo, cutoff, pruneBatch-1), the time after which the window starts,
	// the cutoff, the offset. query then deletes what may go in
	// (lo, hi]: args (lo, hi, cutoff).
	window string
}

// pruneRules, in order: states before the alert rows and issue records
// whose removal depends on them.
//
// What the lifecycle needs is never removed:
//   - a (target, key) state goes only when it is resolved, nothing is
//     pending and no dead letter of it is left: a dead-lettered delivery
//     is acked as done (delivered = version), and `queue retry` sends the
//     state again for as long as the dead letter is kept (dead_letters,
//     30 days), not only resolved_states (7 days); without the state the
//     retry found nothing to send and dropped the letter (a fresh helper:
//     a resolve dead-lettered, pruned, its incident left open). A firing
//     state stays however old: its resolve must still reach the target. Once gone, a late copy of the
//     resolve is harmless (passed on once: PagerDuty ignores a resolve of a
//     resolved incident, Backlog has no record and makes no call); a late
//     firing copy would fire again, which is why resolved_states must
//     outlast the sender's own memory (Alertmanager keeps resolved alerts
//     for --data.retention, 120h by default; the default here is 7 days).
//   - an alert's own row (what tells stale from fresh) goes only when no
//     (target, key) state of it is left, so it lives as long as any. In
//     group mode states are keyed by the group, so a member's row goes
//     once it was not refreshed for resolved_states (Alertmanager refreshes
//     a firing alert every repeat_interval).
//   - a Backlog record goes only in closed or person_closed, and only when
//     no state of its key is firing or pending: a person-closed issue of an
//     alert still firing needs its record, or the next change would open a
//     new issue. closed_issues >= every reopen_within (config checks it), so
//     a record a re-fire could reopen is never removed.
var pruneRules = []pruneRule{
	// The history first: with the default retentions an alert's rows are
	// as old as its alert row, and they go before it rather than being
	// unlinked from it (on SQLite, migration 37's trigger) and deleted
	// after.
	{
		table:     "alertfan_history",
		retention: func(r Retention) time.Duration { return r.History },
		query: `DELETE FROM alertfan_history WHERE id IN (
			SELECT id FROM alertfan_history WHERE at < ? ORDER BY id LIMIT ?)
			AND at < ?`,
	},
	{
		table:     "river_job",
		retention: func(r Retention) time.Duration { return r.CompletedJobs },
		jobTime:   true,
		query: `DELETE FROM river_job WHERE id IN (
			SELECT id FROM river_job WHERE state IN ('completed', 'cancelled', 'discarded') AND finalized_at < ? ORDER BY id LIMIT ?)
			AND finalized_at < ?`,
	},
	{
		table:     "alertfan_state",
		retention: func(r Retention) time.Duration { return r.ResolvedStates },
		window: `SELECT updated_at FROM alertfan_state WHERE pending = 0 AND resolved = 1 AND updated_at > ? AND updated_at < ?
			ORDER BY updated_at LIMIT 1 OFFSET ?`,
		query: `DELETE FROM alertfan_state WHERE pending = 0 AND resolved = 1 AND updated_at > ? AND updated_at <= ? AND updated_at < ?
			AND NOT EXISTS (SELECT 1 FROM alertfan_dead d WHERE d.target = alertfan_state.target AND d.key = alertfan_state.key)`,
	},
	{
		table:     "alertfan_alert",
		retention: func(r Retention) time.Duration { return r.ResolvedStates },
		window:    `SELECT seen_at FROM alertfan_alert WHERE seen_at > ? AND seen_at < ? ORDER BY seen_at LIMIT 1 OFFSET ?`,
		query: `DELETE FROM alertfan_alert WHERE seen_at > ? AND seen_at <= ? AND seen_at < ?
			AND NOT EXISTS (SELECT 1 FROM alertfan_state st WHERE st.key = alertfan_alert.identity)`,
	},
	{
		table:     "alertfan_identity",
		retention: func(r Retention) time.Duration { return r.ResolvedStates },
		query: `DELETE FROM alertfan_identity WHERE identity IN (
			SELECT identity FROM alertfan_identity WHERE updated_at < ? LIMIT ?)
			AND updated_at < ?`,
	},
	{
		table:     "alertfan_backlog_issue",
		retention: func(r Retention) time.Duration { return r.ClosedIssues },
		window: `SELECT updated_at FROM alertfan_backlog_issue WHERE state IN ('closed', 'person_closed', 'resolved') AND updated_at > ? AND updated_at < ?
			ORDER BY updated_at LIMIT 1 OFFSET ?`,
		query: `DELETE FROM alertfan_backlog_issue WHERE state IN ('closed', 'person_closed', 'resolved') AND updated_at > ? AND updated_at <= ? AND updated_at < ?
			AND NOT EXISTS (SELECT 1 FROM alertfan_state st WHERE st.target = alertfan_backlog_issue.target AND st.key = alertfan_backlog_issue.identity AND (st.resolved = 0 OR st.pending = 1))`,
	},
	{
		table:     "alertfan_dead",
		retention: func(r Retention) time.Duration { return r.DeadLetters },
		query: `DELETE FROM alertfan_dead WHERE id IN (
			SELECT id FROM alertfan_dead WHERE created_at < ? ORDER BY id LIMIT ?)
			AND created_at < ?`,
	},
}

// janitor prunes every table by its retention, in batches of pruneBatch
// rows, then (SQLite) gives the file's free pages back to the file system.
func (s *Store) janitor() {
	_, err := s.prune(context.Background(), time.Now())
	if err != nil && !errors.Is(err, sql.ErrConnDone) && !errors.Is(err, context.Canceled) {
		s.logger.Warn("Store clean-up failed; it is tried again at the next run", "err", err)
	}
	// Every run, not only one that pruned: pages are also freed by what
	// is not a prune (migration 41 makes the state table again and frees
	// the old one's). A file with no free page costs one PRAGMA.
	if s.dialect == dialectSQLite {
		s.vacuum()
	}
}

// prune deletes what is older than its retention at now from every table,
// and returns how many rows it deleted.
func (s *Store) prune(ctx context.Context, now time.Time) (int64, error) {
	ret := s.opts.Retention
	var total int64
	for _, r := range pruneRules {
		at := now.Add(-r.retention(ret))
		var cutoff any = at.UnixNano()
		if r.jobTime {
			cutoff = s.dbTime(at)
		}
		q := s.rebind(r.query)
		var n int64
		start := time.Now()
		lo := int64(math.MinInt64) // windowed rules: the window starts after lo
		for {
			if s.isClosing() {
				return total, context.Canceled
			}
			// Each batch is a statement of its own with its own deadline,
			// so one slow batch never holds the writer long.
			bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			args, last := []any{cutoff, pruneBatch, cutoff}, false
			if r.window != "" {
				// The window's end is read on the read pool: the writer
				// is held only by the DELETE.
				hi, ok, err := s.pruneWindow(bctx, r.window, lo, at.UnixNano())
				if err != nil {
					cancel()
					return total, fmt.Errorf("prune %s: %w", r.table, err)
				}
				args, last = []any{lo, hi, cutoff}, !ok
				lo = hi
			}
			held := time.Now()
			res, err := s.db.ExecContext(bctx, q, args...)
			cancel()
			took := time.Since(held)
			if err != nil {
				return total, fmt.Errorf("prune %s: %w", r.table, err)
			}
			k, _ := res.RowsAffected()
			n += k
			total += k
			if s.retention != nil {
				s.retention.pruned.WithLabelValues(r.table).Add(float64(k))
			}
			if last || r.window == "" && k < pruneBatch {
				break
			}
			// As long a pause as the batch held the writer: intake's
			// commits, which wait for it, get at least half of the
			// writer's time while a large backlog is pruned.
			select {
			case <-time.After(took):
			case <-s.closing:
			case <-ctx.Done():
				return total, ctx.Err()
			}
		}
		if n > 0 {
			s.logger.Debug("Pruned rows past their retention", "table", r.table, "rows", n, "older_than", r.retention(ret), "took", time.Since(start).Round(time.Millisecond))
		}
	}
	return total, nil
}

// pruneWindow reads where the window after lo ends: the time of the
// pruneBatch-th row of window's scope after lo and before cutoff, and
// true; or, when fewer are left, cutoff-1 and false (the last window).
// Rows sharing the end's time all fall in the window, so one may hold
// more than pruneBatch (an intake batch writes one time for all its
// alerts).
func (s *Store) pruneWindow(ctx context.Context, window string, lo, cutoff int64) (int64, bool, error) {
	var hi int64
	err := s.rdb.QueryRowContext(ctx, s.rebind(window), lo, cutoff, pruneBatch-1).Scan(&hi)
	if errors.Is(err, sql.ErrNoRows) {
		return cutoff - 1, false, nil
	}
	return hi, err == nil, err
}

func (s *Store) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// The incremental vacuum's steps: each incremental_vacuum statement gives
// back a step of free pages holding the store's one connection, which
// intake waits for. Moving a page costs little when the free pages sit at
// the file's end (a prune's, mostly), and much on a file whose free pages
// lie under live ones: after migration 41 freed the old state table's,
// steps of 1,024 pages held intake 2.1–2.5 s each for a minute (a fresh
// helper, 1M states). The step is sized by how long the last one took,
// and the vacuum pauses as long as a step took before the next, so intake
// has the connection at least half the time. Steps of about 10 ms, not
// 50: giving back 550 MiB under a 200/s probe, intake's p50 was 7–10 ms
// against 14–24 ms and its p99 34–56 ms against 64–124 ms, and the vacuum
// took as long (BENCHMARKS.md, "The prune walks its tables once").
const (
	vacuumMinStep = 16
	vacuumMaxStep = 1024
	// vacuumStepTarget is how long a step may hold the connection.
	vacuumStepTarget = 10 * time.Millisecond
)

// nextVacuumStep sizes the step after one of step pages that took took:
// halved above twice vacuumStepTarget, doubled below half of it, within
// [vacuumMinStep, vacuumMaxStep].
func nextVacuumStep(step int, took time.Duration) int {
	switch {
	case took > 2*vacuumStepTarget:
		return max(step/2, vacuumMinStep)
	case took < vacuumStepTarget/2:
		return min(step*2, vacuumMaxStep)
	}
	return step
}

// vacuum gives the SQLite file's free pages back to the file system, a
// step at a time (nextVacuumStep), for at most a minute per janitor run.
// Without it the file keeps its largest size (free pages are reused,
// never returned). It needs auto_vacuum=INCREMENTAL (see autoVacuum);
// otherwise it does nothing.
func (s *Store) vacuum() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	step := vacuumMinStep
	for {
		if s.isClosing() || ctx.Err() != nil {
			return
		}
		var free int64
		if err := s.db.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&free); err != nil || free == 0 {
			return
		}
		start := time.Now()
		if _, err := s.db.ExecContext(ctx, fmt.Sprintf(`PRAGMA incremental_vacuum(%d)`, step)); err != nil {
			s.logger.Debug("Incremental vacuum failed", "err", err)
			return
		}
		took := time.Since(start)
		if free <= int64(step) {
			return
		}
		step = nextVacuumStep(step, took)
		select {
		case <-time.After(took):
		case <-s.closing:
			return
		case <-ctx.Done():
			return
		}
	}
}

// autoVacuumMaxBytes is the largest existing file converted to
// auto_vacuum=INCREMENTAL at start (a VACUUM rewrites the whole file;
// 64 MiB takes about a second).
const autoVacuumMaxBytes = 64 << 20

// autoVacuum makes the SQLite file release freed pages on incremental
// vacuum. The mode can only be set before the first table is created, or
// by a VACUUM that rewrites the file: a new or small file is converted
// here; a larger one is left as it is, with a warning saying how to
// convert it once (its free pages are still reused, so it grows no more).
func (s *Store) autoVacuum(ctx context.Context) error {
	var mode int
	if err := s.db.QueryRowContext(ctx, `PRAGMA auto_vacuum`).Scan(&mode); err != nil {
		return fmt.Errorf("queue: read auto_vacuum: %w", err)
	}
	if mode == 2 {
		return nil
	}
	var pages, pageSize int64
	if err := s.db.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		return fmt.Errorf("queue: read page_count: %w", err)
	}
	if err := s.db.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&pageSize); err != nil {
		return fmt.Errorf("queue: read page_size: %w", err)
	}
	if size := pages * pageSize; size > autoVacuumMaxBytes {
		s.logger.Warn("The SQLite file does not give freed space back (auto_vacuum is off); it stops growing but does not shrink. To convert it once, stop alertfan and run: sqlite3 <file> 'PRAGMA auto_vacuum=INCREMENTAL; VACUUM;'",
			"path", s.opts.Path, "size_bytes", size)
		return nil
	}
	if _, err := s.db.ExecContext(ctx, `PRAGMA auto_vacuum = INCREMENTAL`); err != nil {
		return fmt.Errorf("queue: set auto_vacuum: %w", err)
	}
	// A file with no table yet takes the mode as it is; one with tables
	// only through a rewrite.
	if err := s.db.QueryRowContext(ctx, `PRAGMA auto_vacuum`).Scan(&mode); err != nil {
		return fmt.Errorf("queue: read auto_vacuum: %w", err)
	}
	if mode != 2 {
		if _, err := s.db.ExecContext(ctx, `VACUUM`); err != nil {
			return fmt.Errorf("queue: convert the SQLite file to auto_vacuum=INCREMENTAL (VACUUM): %w", err)
		}
		if pages > 1 {
			s.logger.Info("Converted the SQLite file to auto_vacuum=INCREMENTAL", "path", s.opts.Path, "size_bytes", pages*pageSize)
		}
	}
	return nil
}

// walIdleTicks is how many checkpointer ticks (seconds) without a new WAL
// frame make the store idle enough for a TRUNCATE checkpoint.
const walIdleTicks = 3

// walTruncateMin is the WAL file size above which an idle store truncates
// it; below it the file is left for the next writes to reuse.
const walTruncateMin = 4 << 20

// walTruncateBusy is the WAL file size (journal_size_limit) above which
// the WAL is truncated even under load, once every frame in it is copied.
const walTruncateBusy = 128 << 20

// walIdle tracks the checkpointer's view of the WAL between ticks.
type walIdle struct {
	lastLog int
	ticks   int
}

// truncateWhenIdle runs after each PASSIVE checkpoint (logPages frames in
// the WAL, done of them copied) and empties the WAL file with a TRUNCATE
// checkpoint when
//   - the store is idle: everything is copied and no frame was added for
//     walIdleTicks; otherwise the file stays at its largest size (up to
//     journal_size_limit, 128 MiB) however idle the store is;
//   - or the file passed journal_size_limit and everything is copied:
//     under steady reads the writer can seldom start the WAL over by
//     itself (a reader is always using it), so the file would grow
//     without bound. Everything being copied, the TRUNCATE only waits for
//     the reads in flight; a checkpoint that still has to copy would hold
//     up every commit while it copies.
func (s *Store) truncateWhenIdle(logPages, done int) {
	w := &s.wal
	copied := logPages == done && logPages > 0
	if logPages != w.lastLog || !copied {
		w.lastLog, w.ticks = logPages, 0
	} else {
		w.ticks++
	}
	fi, err := os.Stat(s.sqliteFile + "-wal")
	if err != nil || !copied {
		return
	}
	idle := w.ticks >= walIdleTicks && fi.Size() >= walTruncateMin
	if !idle && fi.Size() < walTruncateBusy {
		return
	}
	w.ticks = 0
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var busy, l, d int
	if err := s.ckdb.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &l, &d); err != nil {
		s.logger.Debug("WAL truncate failed", "err", err)
		return
	}
	s.logger.Debug("WAL truncated", "was_bytes", fi.Size(), "idle", idle, "busy", busy)
	w.lastLog = l
}

// retentionMetrics are the janitor's counters and the store's size.
type retentionMetrics struct {
	pruned *prometheus.CounterVec
}

var (
	sizeDesc = prometheus.NewDesc("alertfan_store_size_bytes",
		"Size of the store on disk, by file: SQLite database and wal; PostgreSQL database (pg_database_size).",
		[]string{"file"}, nil)
	freeDesc = prometheus.NewDesc("alertfan_store_free_bytes",
		"SQLite: bytes of free pages inside the database file, reused by new rows before the file grows.",
		nil, nil)
)

func newRetentionMetrics(s *Store, reg prometheus.Registerer) (*retentionMetrics, error) {
	m := &retentionMetrics{
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alertfan_store_pruned_rows_total",
			Help: "Rows the janitor deleted past their storage.retention, by table.",
		}, []string{"table"}),
	}
	for _, r := range pruneRules {
		m.pruned.WithLabelValues(r.table)
	}
	for _, c := range []prometheus.Collector{m.pruned, &sizeCollector{s: s}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// sizeCollector reads the store's size at scrape time.
type sizeCollector struct{ s *Store }

func (c *sizeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sizeDesc
	ch <- freeDesc
}

func (c *sizeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	if s.dialect == dialectPostgres {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var n float64
		if err := s.rdb.QueryRowContext(ctx, `SELECT pg_database_size(current_database())`).Scan(&n); err == nil {
			ch <- prometheus.MustNewConstMetric(sizeDesc, prometheus.GaugeValue, n, "database")
		}
		return
	}
	path := s.sqliteFile
	for file, p := range map[string]string{"database": path, "wal": path + "-wal"} {
		var n float64
		if fi, err := os.Stat(p); err == nil {
			n = float64(fi.Size())
		}
		ch <- prometheus.MustNewConstMetric(sizeDesc, prometheus.GaugeValue, n, file)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var free, pageSize float64
	if s.rdb.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&free) == nil &&
		s.rdb.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&pageSize) == nil {
		ch <- prometheus.MustNewConstMetric(freeDesc, prometheus.GaugeValue, free*pageSize, nil...)
	}
}
