// Package queue owns durable work: the latest state of every (target, key)
// pair, the River jobs that bring each target in line with it, the workers
// that run them against sinks, and the dead letters. It runs on SQLite
// (modernc, pure Go) or PostgreSQL (pgx) through one database/sql code path.
package queue

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"modernc.org/sqlite" // also the database/sql driver "sqlite"

	"github.com/alertfan/alertfan/internal/logrun"
)

// Storage drivers.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// ErrClosed is returned by Enqueue once the store is shutting down.
var ErrClosed = errors.New("queue: store is closed")

// Options configure a Store.
type Options struct {
	Driver string
	// Path is the SQLite file; its directory is created if missing.
	Path string
	// DSN is the PostgreSQL connection string. It never appears in errors.
	DSN string
	// MaxConns is the PostgreSQL connection pool size of this replica;
	// 0 means workers/2 + 8.
	MaxConns int

	Workers      int
	MaxAttempts  int
	MinBackoff   time.Duration
	MaxBackoff   time.Duration
	JobTimeout   time.Duration
	RescueAfter  time.Duration
	PollInterval time.Duration
	// MaxAge bounds how long a delivery keeps failing before it is
	// dead-lettered, whatever max_attempts says; 0 means no bound.
	MaxAge time.Duration
	// Retention bounds what the janitor keeps (storage.retention).
	Retention Retention
	// JanitorInterval is how often the janitor runs; 0 derives it from
	// Retention (see janitorInterval).
	JanitorInterval time.Duration
	// NoHistory turns the delivery history (alertfan_history) off.
	NoHistory bool

	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Kinds are the sink kinds the queue runs workers for; each is a River
// queue of its own so that a slow or failing kind cannot hold up another.
var Kinds = []string{"pagerduty", "backlog"}

// Store is the durable queue.
type Store struct {
	opts    Options
	intake  *intakeFirst // intake goes before deliveries (yield.go)
	seen    *seenFilter  // which alerts have a row, roughly (seen.go)
	touched touched      // which states intake wrote lately (touched.go)
	catchUp atomic.Bool  // SQLite: the writer runs catchUpWAL between batches
	// catchUpWait is how long the catch-up waits for readers (restartWait;
	// tests lengthen it), and catchUpQuiet how many catch-ups to come do
	// not wait, after one that waited in vain (guarded by ckMu).
	catchUpWait  time.Duration
	catchUpQuiet int
	ckMu         sync.Mutex // SQLite: one checkpoint at a time (ckdb's, or the writer's catch-up)
	db           *sql.DB
	driver       riverdriver.Driver[*sql.Tx]
	client       *river.Client[*sql.Tx]
	dialect      dialect
	lock         *os.File
	canonLock    *os.File // SQLite: the lock beside the file SQLite opened, when the path names it otherwise
	dbFile       *os.File // SQLite: the database file, for the checkpointer's fsync (shrinkCatchUp)
	sqliteFile   string   // SQLite: the file SQLite opened (its URI decoding of the path)
	ckdb         *sql.DB  // SQLite only: the WAL checkpointer's connection
	// rdb serves reads. On SQLite it is a pool of read-only connections:
	// WAL readers never wait for the writer, so a worker loading states or a
	// scrape does not hold up intake's commits. On PostgreSQL it is db.
	rdb     *sql.DB
	logger  *slog.Logger
	metrics *metrics
	// retention counts the janitor's work; wal is the checkpointer's
	// idle tracking (retention.go).
	retention *retentionMetrics
	wal       walIdle

	targets atomic.Pointer[map[string]Target]
	// retired are targets a reload removed: they still take the resolves
	// of alerts they hold open (sticky destinations).
	retired atomic.Pointer[map[string]Target]
	// fetchLost: PostgreSQL, the runs of jobs that reached the worker
	// (fetchlost.go).
	fetchLost fetchLost
	// live: PostgreSQL, this replica's liveness lock and the other
	// replicas' (liveness.go).
	live liveness
	// swap keeps deliveries out while SetTargets moves stored work between
	// target ids and swaps the sets.
	swap sync.RWMutex

	unrecorded unrecorded
	retryHints sync.Map
	retry      *backoff // River's retry policy, also asked by notDiscarded's snoozes
	health     health

	// draining is set when shutdown begins: workers hand keys back
	// instead of starting calls.
	draining atomic.Bool
	// replanGen counts re-plans: a job that was running during one parks
	// its keys briefly, not for a turn estimated under the old limits.
	replanGen atomic.Int64
	// replanWanted is set when a resolve is accepted: replanDone looks
	// for jobs that need no call only then.
	replanWanted atomic.Bool
	stopWorkers  sync.Once

	// failAcks, when above 0, makes that many next ack submissions fail
	// as a store failure would (tests only: disk full, PostgreSQL away).
	failAcks atomic.Int32
	// commitRun collapses the log of a run of failed commits.
	commitRun logrun.Run
	// targetsGen counts the loads (SetTargets) that gave an id another
	// destination: a state read under an older count is not delivered.
	targetsGen atomic.Int64
	// differWarned holds the target ids whose destination this process
	// and the store's record disagree on, warned of since the last load.
	differWarned sync.Map
	// forgetUnrecorded, when set, keeps no outcome whose write failed in
	// memory (tests only: the job's retry runs on another replica).
	forgetUnrecorded atomic.Bool

	// prepared holds statements prepared once on the SQLite writer
	// (see prepareHot); nil on PostgreSQL.
	prepared map[string]*sql.Stmt

	ops      chan *op
	acks     chan *op // delivery outcomes (ackCommitter)
	closing  chan struct{}
	wg       sync.WaitGroup
	ready    atomic.Bool
	stopOnce sync.Once
}

// Open opens (creating and migrating as needed) the store. It does not start
// work; call Start.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.Workers <= 0 {
		opts.Workers = 50
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 50
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = 5 * time.Minute
	}
	if opts.JobTimeout <= 0 {
		opts.JobTimeout = time.Minute
	}
	if opts.RescueAfter <= opts.JobTimeout {
		opts.RescueAfter = opts.JobTimeout + 4*time.Minute
	}
	if opts.PollInterval <= 0 {
		// River wakes this process's workers when it inserts jobs; polling
		// only finds retries and work inserted elsewhere. On SQLite that
		// wake-up lands after the commit (one connection), and every poll
		// costs ~1 ms of CPU in the driver, so poll slowly; on PostgreSQL the
		// wake-up can run before the commit and other replicas insert too.
		opts.PollInterval = time.Second
		if opts.Driver == DriverPostgres {
			opts.PollInterval = 100 * time.Millisecond
		}
	}
	opts.Retention = opts.Retention.withDefaults()
	if opts.JanitorInterval <= 0 {
		opts.JanitorInterval = opts.Retention.janitorInterval()
	}
	s := &Store{opts: opts, logger: opts.Logger, ops: make(chan *op, 4096), acks: make(chan *op, 4096), closing: make(chan struct{}), catchUpWait: restartWait}
	empty, noneRetired := map[string]Target{}, map[string]Target{}
	s.targets.Store(&empty)
	s.retired.Store(&noneRetired)

	var err error
	switch opts.Driver {
	case DriverSQLite, "":
		err = s.openSQLite(ctx)
		if err == nil {
			err = s.autoVacuum(ctx)
		}
	case DriverPostgres:
		err = s.openPostgres(ctx)
	default:
		err = fmt.Errorf("queue: unknown driver %q", opts.Driver)
	}
	if err != nil {
		s.closeDB()
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		s.closeDB()
		return nil, err
	}
	if s.dialect == dialectSQLite {
		if err := s.recoverOrphans(ctx); err != nil {
			s.closeDB()
			return nil, err
		}
	}
	if err := s.prepareHot(ctx); err != nil {
		s.closeDB()
		return nil, err
	}
	if err := s.newClient(); err != nil {
		s.closeDB()
		return nil, err
	}
	m, err := newMetrics(s, opts.Registerer)
	if err != nil {
		s.closeDB()
		return nil, err
	}
	s.metrics = m
	s.intake = newIntakeFirst(m.intakeWait.Add)
	s.seen = newSeenFilter()
	if s.retention, err = newRetentionMetrics(s, opts.Registerer); err != nil {
		s.closeDB()
		return nil, err
	}
	return s, nil
}

func (s *Store) openSQLite(ctx context.Context) error {
	s.dialect = dialectSQLite
	path := s.opts.Path
	if path == "" {
		path = "data/alertfan.db"
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("queue: create data directory: %w", err)
		}
	}
	// One process owns an SQLite store: the lock makes a second alertfan
	// on the same file fail loudly, and lets start-up treat every job left
	// running as orphaned by a crash.
	lf, err := lockStore(path+".lock", path)
	if err != nil {
		return err
	}
	s.lock = lf
	// Checkpoints run on a connection of their own (see checkpointer), not
	// inside a commit, where they would stall every request behind it.
	busy := "_pragma=busy_timeout(" + strconv.FormatInt(busyTimeout.Milliseconds(), 10) + ")"
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&" + busy + "&_pragma=foreign_keys(on)&_pragma=wal_autocheckpoint(0)&_pragma=journal_size_limit(" + strconv.Itoa(walTruncateBusy) + ")&_txlock=immediate"
	conn, err := sqlite.NewConnector(dsn)
	if err != nil {
		return fmt.Errorf("queue: open sqlite: %w", err)
	}
	db := sql.OpenDB(stmtCachingConnector{conn})
	// SQLite takes one writer; River's driver documentation asks for a
	// single connection to avoid SQLITE_BUSY between its own goroutines.
	db.SetMaxOpenConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	s.db = db
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("queue: open sqlite %s: %w", path, err)
	}
	s.driver = riversqlite.New(db)
	// The file SQLite opened: the path reaches it as a file: URI, whose
	// %XX escapes it decodes.
	var seq int
	var name string
	if err := db.QueryRowContext(ctx, `PRAGMA database_list`).Scan(&seq, &name, &s.sqliteFile); err != nil {
		return fmt.Errorf("queue: open sqlite %s: %w", path, err)
	}
	// Another spelling of the same file (a symlink, a %XX escape) locks
	// another name: the file SQLite opened is locked too.
	if canon := s.sqliteFile + ".lock"; canon != path+".lock" {
		fi, err := os.Stat(canon)
		if own, _ := s.lock.Stat(); err != nil || !os.SameFile(fi, own) {
			if s.canonLock, err = lockStore(canon, path); err != nil {
				return err
			}
		}
	}
	// Kept open until every SQLite connection is closed (closeDB): closing
	// a descriptor drops the process's POSIX locks on the file, SQLite's
	// included.
	if s.dbFile, err = os.Open(s.sqliteFile); err != nil {
		return fmt.Errorf("queue: open sqlite %s: %w", path, err)
	}
	rdb, err := sql.Open("sqlite", "file:"+path+"?"+busy+"&_pragma=query_only(1)")
	if err != nil {
		return fmt.Errorf("queue: open sqlite readers: %w", err)
	}
	rdb.SetMaxOpenConns(4)
	rdb.SetMaxIdleConns(4)
	s.rdb = rdb
	ck, err := sql.Open("sqlite", "file:"+path+"?"+busy+"&_pragma=synchronous(FULL)")
	if err != nil {
		return fmt.Errorf("queue: open sqlite checkpointer: %w", err)
	}
	ck.SetMaxOpenConns(1)
	s.ckdb = ck
	return nil
}

// checkpointer copies the WAL into the database file in the background.
// PASSIVE mode never blocks the writer (RESTART and TRUNCATE do, for as long
// as they take); once a checkpoint is complete the writer starts the WAL
// over by itself, and journal_size_limit trims the file when it does.
func (s *Store) checkpointer() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.ckMu.Lock()
	defer s.ckMu.Unlock()
	logPages, done, err := s.passiveCheckpoint(ctx)
	if err != nil {
		s.logger.Debug("WAL checkpoint failed", "err", err)
		return
	}
	// Only when this one copied (nearly) everything: a reader pinning an
	// old snapshot leaves a backlog that the writer must not copy.
	if logPages >= catchUpFrames && logPages-done < catchUpFrames {
		logPages, done = s.shrinkCatchUp(ctx, logPages, done)
		if logPages >= catchUpFrames && logPages-done < catchUpFrames {
			s.catchUp.Store(true)
		}
	}
	s.truncateWhenIdle(logPages, done)
}

// shrinkCatchUp leaves the writer's catch-up (catchUpWAL) as little to do
// as it can, off the writer's path, and returns the WAL's length and the
// frames copied then.
//
// SQLite syncs the database file only in a checkpoint that reaches the
// WAL's end, and under steady intake the writer commits while the
// background pass runs: so the catch-up, on the writer's turn, synced a
// second's worth of pages the passes had copied — 20–35 ms of fsync of
// random pages that held every commit (the p99 of intake at 500/s). Here
// the pages copied are flushed on the checkpointer's own descriptor
// (fsync flushes the file, whoever wrote it), and what was committed
// meanwhile is copied and flushed again while that is large, so the
// catch-up copies and syncs the frames of one short pass.
func (s *Store) shrinkCatchUp(ctx context.Context, logPages, done int) (int, int) {
	syncFile := func() error {
		if s.dbFile == nil {
			return nil
		}
		// A plain fsync, as SQLite's own ((*os.File).Sync is a drive-cache
		// flush, F_FULLFSYNC, on macOS). A write-back error it reports is
		// not lost to SQLite's sync in the catch-up: Linux reports it to
		// every descriptor open when it happened, not only the first.
		if err := syscall.Fsync(int(s.dbFile.Fd())); err != nil {
			s.logger.Warn("Could not sync the database file; the writer's next checkpoint will try", "err", err)
			return err
		}
		return nil
	}
	pass := func() (int, int, error) { return s.passiveCheckpoint(ctx) }
	return shrinkResidual(logPages, done, syncFile, pass)
}

// shrinkResidual is shrinkCatchUp's loop: sync what the last pass copied,
// then pass again while the last pass found residualFrames or more new
// frames, at most residualPasses times. It returns the WAL's length and
// the frames copied as the last pass left them (the first's if a later
// one failed; the new figures if the WAL started over or a reader held a
// snapshot, which the caller's catch-up test reads).
func shrinkResidual(logPages, done int, sync func() error, pass func() (int, int, error)) (int, int) {
	for i := 0; ; i++ {
		if sync() != nil || i == residualPasses {
			return logPages, done
		}
		prev := logPages
		l, d, err := pass()
		switch {
		case err != nil:
			return logPages, done
		case l < prev || d != l:
			return l, d
		}
		logPages, done = l, d
		if logPages-prev < residualFrames {
			return logPages, done
		}
	}
}

const (
	// residualPasses bounds the extra passes a checkpoint makes to shrink
	// what the writer's catch-up must copy; each copies what arrived during
	// the one before, so it is a fraction of its length.
	residualPasses = 3
	// residualFrames is a catch-up small enough to leave to the writer: its
	// fsync of that many random pages is well under a millisecond's worth
	// of commits.
	residualFrames = 64
)

// catchUpFrames is the WAL length (frames, 4 KiB each) from which the
// checkpointer asks the writer for a catch-up checkpoint (see catchUpWAL).
const catchUpFrames = 1024

// catchUpWAL runs, between two of the writer's transactions, a RESTART
// checkpoint of what the background one could not copy: the frames
// committed while it ran, a few milliseconds' worth.
//
// Why: SQLite starts the WAL over only when a write transaction begins
// with every frame copied and no reader still on the WAL. Under steady
// intake the writer always commits while the background checkpoint runs,
// so that never happens: the WAL grew to journal_size_limit and the
// TRUNCATE that then empties it held every commit for ~70 ms, every other
// second at 500 requests/s (the p99 of intake). Copied here, with the
// writer between transactions, the WAL is complete. A PASSIVE copy was
// enough while deliveries were held; with a queue draining, the workers'
// reads kept a snapshot on the WAL, it was not started over, passed
// 128 MiB every 5 s, and each TRUNCATE held intake 148–218 ms
// (BENCHMARKS.md, "The WAL under deliveries"). RESTART waits, for at most
// restartWait, until the readers that began before the copy are done —
// readers that begin after it read the database file alone — and the next
// transaction starts the WAL over. A reused WAL needs no file-size change
// at each fsync either.
func (s *Store) catchUpWAL() {
	if s.ckdb == nil || !s.catchUp.Load() {
		return
	}
	// Never wait for the background checkpoint (it copies for as long as
	// it takes): the writer would stall for all of it. Try after a later
	// batch.
	if !s.ckMu.TryLock() {
		return
	}
	defer s.ckMu.Unlock()
	s.catchUp.Store(false)
	// A reader longer than the wait (a large listing, a backup) would
	// cost every catch-up the whole wait for nothing: after one that
	// waited in vain, the next few try without waiting.
	wait := s.catchUpWait
	if s.catchUpQuiet > 0 {
		s.catchUpQuiet, wait = s.catchUpQuiet-1, 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	busy, err := s.restartCheckpoint(ctx, wait)
	switch {
	case err != nil:
		s.logger.Debug("WAL catch-up checkpoint failed", "err", err)
	case busy && wait > 0:
		s.catchUpQuiet = catchUpQuietAfterBusy
		s.logger.Debug("WAL catch-up: a reader outlasted the wait; the WAL is started over later")
	}
}

// restartWait bounds how long the catch-up checkpoint waits for readers
// still using the WAL; a worker's is a millisecond transaction.
const restartWait = 10 * time.Millisecond

// catchUpQuietAfterBusy is how many catch-ups (about one a second under
// load) do not wait for readers after one that waited in vain.
const catchUpQuietAfterBusy = 4

// busyTimeout is how long the writer waits for a lock it cannot take at
// once (the checkpointer's TRUNCATE): as long as a commit may take.
const busyTimeout = 10 * time.Second

// restartCheckpoint runs PRAGMA wal_checkpoint(RESTART) on the writer's
// own connection, which it holds meanwhile (no commit can slip in between
// the copy and the restart; acks wait too), with the
// connection's busy timeout lowered to wait (0: no waiting). busy reports
// that a reader was still on the WAL. A connection whose timeout could not
// be put back is discarded: database/sql opens a new one with the DSN's.
func (s *Store) restartCheckpoint(ctx context.Context, wait time.Duration) (busy bool, err error) {
	c, err := s.db.Conn(ctx)
	if err != nil {
		return false, err
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`, wait.Milliseconds())); err != nil {
		return false, err
	}
	defer func() {
		if _, err := c.ExecContext(context.WithoutCancel(ctx), fmt.Sprintf(`PRAGMA busy_timeout = %d`, busyTimeout.Milliseconds())); err != nil {
			c.Raw(func(any) error { return driver.ErrBadConn }) //nolint:errcheck
		}
	}()
	var blocked, logPages, done int
	err = c.QueryRowContext(ctx, `PRAGMA wal_checkpoint(RESTART)`).Scan(&blocked, &logPages, &done)
	return blocked == 1, err
}

// passiveCheckpoint copies what it can of the WAL into the database file
// without blocking the writer; logPages is the WAL's length in frames and
// done how many of them are copied. The caller holds ckMu.
func (s *Store) passiveCheckpoint(ctx context.Context) (logPages, done int, err error) {
	var busy int
	err = s.ckdb.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logPages, &done)
	return logPages, done, err
}

// every runs fn every d until the store closes.
func (s *Store) every(d time.Duration, fn func()) {
	defer s.wg.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
			fn()
		}
	}
}

func (s *Store) openPostgres(ctx context.Context) error {
	s.dialect = dialectPostgres
	db, err := sql.Open("pgx", s.opts.DSN)
	if err != nil {
		return fmt.Errorf("queue: open postgres: %s", redact(err, s.opts.DSN))
	}
	conns := s.opts.MaxConns
	if conns <= 0 {
		conns = s.opts.Workers/2 + 8
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	s.db = db
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		return fmt.Errorf("queue: connect to postgres: %s", redact(err, s.opts.DSN))
	}
	s.driver = riverdatabasesql.New(db)
	s.rdb = db
	// The liveness lock's session (liveness.go): a pool of its own, so it
	// takes none of the pool's connections and is never recycled by it.
	live, err := sql.Open("pgx", s.opts.DSN)
	if err != nil {
		return fmt.Errorf("queue: open postgres: %s", redact(err, s.opts.DSN))
	}
	live.SetMaxOpenConns(1)
	live.SetMaxIdleConns(1)
	s.live.db = live
	return nil
}

// redact keeps a DSN (which may hold a password) out of an error text.
//
// A connection string pgx could not parse is left out whole: pgx quotes it
// with only a best-effort redaction of the password, which a
// backslash-escaped space or a missing quote defeats.
func redact(err error, dsn string) string {
	msg := err.Error()
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		bare := *pe
		bare.ConnString = "<dsn>"
		msg = bare.Error()
	}
	if dsn != "" {
		msg = strings.ReplaceAll(msg, dsn, "<dsn>")
	}
	return msg
}

func (s *Store) migrate(ctx context.Context) error {
	mctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if s.dialect == dialectPostgres {
		// Replicas starting together must not race the migrations.
		if _, err := s.db.ExecContext(mctx, `SELECT pg_advisory_lock(72616374)`); err != nil {
			return fmt.Errorf("queue: migration lock: %w", err)
		}
		defer s.db.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(72616374)`) //nolint:errcheck
	}
	m, err := rivermigrate.New(s.driver, &rivermigrate.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("queue: river migrator: %w", err)
	}
	if _, err := m.Migrate(mctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("queue: river migrations: %w", err)
	}
	// Jobs an older alertfan inserted carry delivery.max_attempts as
	// River's limit, at which River (and its rescuer) discards them even
	// with keys left to retry: give them riverMaxAttempts (see there).
	if _, err := s.db.ExecContext(mctx, s.rebind(`UPDATE river_job SET max_attempts = ? WHERE kind = 'alertfan_deliver' AND max_attempts < ?
		AND state IN ('available', 'scheduled', 'retryable', 'running', 'pending')`), riverMaxAttempts, riverMaxAttempts); err != nil {
		return fmt.Errorf("queue: raise old jobs' attempts: %w", err)
	}
	if s.dialect == dialectSQLite {
		// No other process can hold a SQLite store (the file lock), so
		// the deadline guards nothing there, and a migration that rewrites
		// rows of a large store must not fail at every start.
		return s.migrateOwn(ctx)
	}
	return s.migrateOwn(mctx)
}

// recoverOrphans makes jobs that a killed process left running available
// again. Only safe because the file lock proves no other process runs them.
func (s *Store) recoverOrphans(ctx context.Context) error {
	res, err := s.db.ExecContext(ctx, `UPDATE river_job SET state = 'available', scheduled_at = ? WHERE state = 'running'`,
		s.dbTime(time.Now()))
	if err != nil {
		return fmt.Errorf("queue: recover orphaned jobs: %w", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		s.logger.Warn("Recovered jobs left running by an earlier process; their targets may see the in-flight call again (same dedup key)", "jobs", n)
	}
	return nil
}

func (s *Store) newClient() error {
	s.retry = &backoff{min: s.opts.MinBackoff, max: s.opts.MaxBackoff, hints: &s.retryHints}
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely[deliverArgs](workers, &worker{s: s}); err != nil {
		return err
	}
	queues := map[string]river.QueueConfig{}
	for _, k := range Kinds {
		queues[k] = river.QueueConfig{MaxWorkers: s.opts.Workers}
	}
	cooldown := min(5*time.Millisecond, s.opts.PollInterval)
	// River's own job cleaner is off (-1): the janitor deletes finished
	// jobs (storage.retention.completed_jobs) in small counted batches.
	client, err := river.NewClient(s.driver, &river.Config{
		ID:                          liveClientID(time.Now()),
		FetchCooldown:               cooldown,
		FetchPollInterval:           s.opts.PollInterval,
		JobTimeout:                  s.opts.JobTimeout,
		RescueStuckJobsAfter:        s.opts.RescueAfter,
		MaxAttempts:                 riverMaxAttempts,
		RetryPolicy:                 s.retry,
		Queues:                      queues,
		Workers:                     workers,
		Logger:                      slog.New(warnOnly{s.logger.Handler()}).With("component", "river"),
		ErrorHandler:                &errorHandler{logger: s.logger},
		CancelledJobRetentionPeriod: -1,
		CompletedJobRetentionPeriod: -1,
		DiscardedJobRetentionPeriod: -1,
	})
	if err != nil {
		return fmt.Errorf("queue: river client: %w", err)
	}
	s.client = client
	return nil
}

// Start starts the committer and the workers.
func (s *Store) Start(ctx context.Context) error {
	n := 1
	if s.dialect == dialectPostgres {
		n = 4
	}
	for i := 0; i < n; i++ {
		s.wg.Add(1)
		go s.committer()
	}
	if s.dialect == dialectPostgres {
		s.wg.Add(1)
		go s.ackCommitter()
	}
	s.wg.Add(1)
	go s.every(s.opts.JanitorInterval, s.janitor)
	if s.ckdb != nil {
		s.wg.Add(1)
		go s.every(time.Second, s.checkpointer)
	}
	s.wg.Add(1)
	go s.every(replanEvery, s.replanDone)
	if s.dialect == dialectPostgres {
		events, cancel := s.subscribeOutcomes()
		s.wg.Add(2)
		go s.followOutcomes(events, cancel)
		go s.every(fetchLostEvery, s.sweepFetchLost)
		// Held before the workers start: another replica takes over the
		// jobs of an alertfan client id that holds none (liveness.go). A
		// first take that fails is tried again, and logged, by holdLive.
		s.live.suspects = map[string]suspect{}
		lctx, lcancel := context.WithCancel(context.Background())
		c, _ := s.takeLiveness(lctx)
		s.wg.Add(3)
		go func() { defer s.wg.Done(); <-s.closing; lcancel() }()
		go s.holdLive(lctx, c)
		go s.every(deadReplicaEvery, s.sweepDeadReplicas)
	}
	if err := s.client.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("queue: start workers: %w", err)
	}
	s.ready.Store(true)
	// Work planned by an earlier process (or before a restart changed a
	// rate limit) meets the limits as they are now.
	if err := s.Replan(ctx); err != nil {
		s.logger.Warn("Could not re-plan queued work at start; it runs at its planned times", "err", err)
	}
	return nil
}

// Probe writes one row through the group committer: it fails when the
// database cannot write (full disk, read-only PostgreSQL) or commit, or the
// committer is stuck, within ctx's deadline. Readiness uses it when intake
// has not committed lately.
func (s *Store) Probe(ctx context.Context) error {
	// A real write: an empty transaction commits on a full disk and on a
	// read-only PostgreSQL (a standby after a failover) alike.
	return s.submit(ctx, func(ctx context.Context, b *batch) error {
		_, err := b.exec(ctx, `INSERT INTO alertfan_probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at`, b.now)
		return err
	})
}

// Ready reports whether the store is open, migrated and running.
func (s *Store) Ready() bool { return s.ready.Load() }

// target finds a configured target, or a retired one.
func (s *Store) target(id string) (Target, bool) {
	if t, ok := (*s.targets.Load())[id]; ok {
		return t, true
	}
	t, ok := (*s.retired.Load())[id]
	return t, ok
}

// targetOf finds a configured target that sends to destination dest.
func (s *Store) targetOf(dest string) (Target, bool) {
	for _, t := range *s.targets.Load() {
		if t.Destination == dest && dest != "" {
			return t, true
		}
	}
	return Target{}, false
}

// Target returns the target with the id, configured or retired.
func (s *Store) Target(id string) (Target, bool) { return s.target(id) }

// errDraining hands a key back to the queue during shutdown.
var errDraining = errors.New("queue: shutting down; handed back to the queue")

// handedBack is the outcome of a delivery that shutdown stopped before its
// call: the key goes back to the queue, uncalled.
var handedBack = outcome{retry: true, park: true, retryAfter: time.Second, err: errDraining}

// movedBack is the outcome of a delivery whose state was read before a
// reload gave target ids other destinations: handed back, uncalled, to be
// read again (see deliver).
var movedBack = outcome{retry: true, park: true, retryAfter: 50 * time.Millisecond, err: errTargetsMoved}

var errTargetsMoved = errors.New("queue: a reload gave target ids other destinations since the state was read; read again")

// StopWorkers stops deliveries for a shutdown: the store is no longer
// ready, workers start no new call and hand their remaining keys back to
// the queue, and calls in flight get until ctx's deadline; then they are
// cancelled (and retried after restart). Intake keeps committing until
// Close, so requests in flight still get their answer.
func (s *Store) StopWorkers(ctx context.Context) error {
	var err error
	s.stopWorkers.Do(func() {
		s.ready.Store(false)
		s.draining.Store(true)
		s.intake.stop()
		if s.client == nil {
			return
		}
		// Calls in flight get until the deadline; then they are cancelled,
		// and River gets one more second to record that (the caller allows
		// for it: see receiver's shutdown).
		if e := s.client.Stop(ctx); e != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			err = s.client.StopAndCancel(cctx)
			if err == nil {
				err = fmt.Errorf("queue: deliveries still running at the shutdown deadline were cancelled: %w", e)
			}
		}
	})
	return err
}

// Close stops the workers (see StopWorkers, within ctx's deadline), then
// the committer, and closes the database.
func (s *Store) Close(ctx context.Context) error {
	var err error
	s.stopOnce.Do(func() {
		err = s.StopWorkers(ctx)
		close(s.closing)
		s.wg.Wait()
		s.closeDB()
	})
	return err
}

func (s *Store) closeDB() {
	if s.rdb != nil && s.rdb != s.db {
		s.rdb.Close()
	}
	// After the workers stopped (holdLive has ended): the lock says this
	// replica runs jobs.
	if s.live.db != nil {
		s.live.db.Close()
	}
	if s.ckdb != nil {
		s.ckdb.ExecContext(context.Background(), `PRAGMA wal_checkpoint(TRUNCATE)`) //nolint:errcheck
		s.ckdb.Close()
	}
	if s.db != nil {
		s.db.Close()
	}
	if s.dbFile != nil {
		// database/sql leaves a connection in use open past Close (a read
		// that outlived the shutdown's deadline), and closing our
		// descriptor would drop the locks SQLite holds for it; so would
		// closing a later store's, since the locks are the process's. The
		// descriptor is then kept referenced, or its finalizer would close
		// it.
		strayDBFiles.Lock()
		if openConns(s.db, s.rdb, s.ckdb) == 0 && !strayDBFiles.has(s.dbFile) {
			s.dbFile.Close()
		} else {
			strayDBFiles.files = append(strayDBFiles.files, s.dbFile)
		}
		strayDBFiles.Unlock()
	}
	for _, lf := range []*os.File{s.canonLock, s.lock} {
		if lf != nil {
			syscall.Flock(int(lf.Fd()), syscall.LOCK_UN) //nolint:errcheck
			lf.Close()
		}
	}
}

// lockStore takes the lock file name that makes one process own an SQLite
// store; path names the store in the error.
func lockStore(name, path string) (*os.File, error) {
	lf, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("queue: open lock file: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		return nil, fmt.Errorf("queue: %s is in use by another alertfan process: %w", path, err)
	}
	return lf, nil
}

// strayDBFiles keeps the database descriptors of stores closed while a
// connection was still in use (closeDB); one per such shutdown.
var strayDBFiles strayFiles

type strayFiles struct {
	sync.Mutex
	files []*os.File
}

// has reports whether a kept descriptor is of f's file; the caller holds
// the lock.
func (s *strayFiles) has(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return true // unknown: keeping a descriptor costs nothing
	}
	for _, k := range s.files {
		if ki, err := k.Stat(); err == nil && os.SameFile(fi, ki) {
			return true
		}
	}
	return false
}

// openConns is how many connections the pools still have open.
func openConns(dbs ...*sql.DB) int {
	n := 0
	for _, db := range dbs {
		if db != nil {
			n += db.Stats().OpenConnections
		}
	}
	return n
}

// rebind adapts a query written with ? placeholders to the store's dialect.
func (s *Store) rebind(q string) string { return s.dialect.rebind(q) }

// warnOnly keeps River's per-job info lines (every retry is one) out of
// the log; alertfan logs each failure itself with its reason.
type warnOnly struct{ slog.Handler }

func (h warnOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.Handler.Enabled(ctx, l)
}

func (h warnOnly) WithAttrs(as []slog.Attr) slog.Handler { return warnOnly{h.Handler.WithAttrs(as)} }
func (h warnOnly) WithGroup(n string) slog.Handler       { return warnOnly{h.Handler.WithGroup(n)} }
