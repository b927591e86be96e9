package queue

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"
	"modernc.org/sqlite"
)

// Item is one (target, key) state to store, as intake produces it.
type Item struct {
	Target string
	// Kind is the target's sink kind, the River queue its job runs in; ""
	// for a destination no longer configured that no sink serves here
	// (RetiredPrefix): the state is written, owed, and gets no job.
	Kind string
	// Key is the state's key in its StoreKey form (an alert identity, or
	// a bounded form of a long group key); the payload keeps the whole key.
	Key string
	// Want is the phase the state asks for (PhaseTriggered,
	// PhaseAcknowledged, PhaseResolved or PhaseEvent).
	Want Phase
	// Digest identifies the state's content (not its arrival): an update
	// with the digest already sent is a repeat and costs no call.
	Digest string
	// Payload is the JSON of the sinks.Notification to deliver.
	Payload []byte
	// Priority is the item's class for its target's rate-limit budget
	// (sinks.PriorityClose … sinks.PriorityInfo).
	Priority int
}

// closed reports whether the item leaves the key with nothing open at its
// target (resolved, or a one-off event), so its state may be cleaned up.
func (it *Item) closed() bool { return it.Want == PhaseResolved || it.Want == PhaseEvent }

// op is one unit of work for the committer. Ops from many requests and
// workers share one transaction, so one fsync covers them all (group
// commit); an op's error is its batch's error, unless it is the op's own
// (OpError) or the database refused the op's data (refusedWrite).
type op struct {
	fn   func(ctx context.Context, b *batch) error
	done chan error
	// own is an error that is this op's alone (see OpError): the batch
	// commits without it and only this op's caller sees it.
	own error
	// refused is the error of a write of this op's that the database
	// refused for its data (refusedWrite): the batch was committed again
	// without the op, and only its caller sees the error.
	refused error
	// locks names what the op reads to decide its writes: alert
	// identities (their rows) and state keys (their states at every
	// target). On PostgreSQL the batch locks them all first (sqlLockKeys),
	// so concurrent batches serialize on them instead of deadlocking.
	locks []string
}

// opFailure is the error of the op whose function failed a batch.
type opFailure struct {
	op  *op
	err error
}

func (e *opFailure) Error() string { return e.err.Error() }
func (e *opFailure) Unwrap() error { return e.err }

// refusedWrite reports whether the database refused a statement for the
// data it was given — on PostgreSQL a data exception (class 22: NUL or
// invalid UTF-8 in text, a value out of range), an integrity constraint
// (23) or a program limit (54: an index entry over 2,704 bytes); on
// SQLite a value too big (SQLITE_TOOBIG), a constraint or a type
// mismatch — rather than failing as a store (down, busy, full, a lost
// connection). Such an error is the request's own: intake refuses what it
// knows a database would refuse, and this keeps whatever it did not know
// from failing every other request that shares its batch at each of its
// sender's retries.
func refusedWrite(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "22", "23", "54":
			return true
		}
		return false
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		switch liteErr.Code() & 0xff {
		case 18, 19, 20: // SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH
			return true
		}
	}
	return false
}

// OpError marks an op's error as its caller's alone — not found, conflict,
// bad input — rather than a store failure. An op returns one only before
// it has written anything, so the batch it shares with other requests
// commits without it, and no other request fails or counts a commit error.
type OpError struct{ Err error }

func (e *OpError) Error() string { return e.Err.Error() }
func (e *OpError) Unwrap() error { return e.Err }

// batch is the transaction ops run in.
type batch struct {
	s     *Store
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
	now   int64
	// pending collects, per (target, priority class), the keys this batch
	// made pending; one River job per pair carries them (see jobs).
	pending map[pendingGroup]*pendingKeys
	order   []pendingGroup
	// hist is the delivery history this batch's ops made (see record).
	hist []histRow
	// written are the (target, key) states the batch wrote (touched).
	written [][2]string
	// targetsChecked: checkTargets compared this process's destinations
	// with the store's record (PostgreSQL, once per batch); targetsDiffer
	// says how they differ ("" if they do not).
	targetsChecked bool
	targetsDiffer  string
}

type pendingGroup struct {
	target string
	class  int
}

type pendingKeys struct {
	kind string
	keys []keySeq
}

// maxKeysPerJob bounds one job's work so a retry or a rescue redoes little.
const maxKeysPerJob = 64

const (
	maxBatchOps    = 512
	commitDeadline = 30 * time.Second
)

// submit runs fn inside a group-committed transaction and waits for the
// commit. A nil error means fn's writes are durable.
func (s *Store) submit(ctx context.Context, fn func(ctx context.Context, b *batch) error) error {
	return s.submitTo(ctx, s.ops, fn)
}

// submitLocking is submit for an op that reads or writes rows named by
// locks (see op.locks).
func (s *Store) submitLocking(ctx context.Context, locks []string, fn func(ctx context.Context, b *batch) error) error {
	return s.submitOp(ctx, s.ops, &op{fn: fn, done: make(chan error, 1), locks: locks})
}

// submitTo is submit through the committer that reads queue (s.ops, or
// s.acks for delivery outcomes: see ackCommitter).
func (s *Store) submitTo(ctx context.Context, queue chan *op, fn func(ctx context.Context, b *batch) error) error {
	return s.submitOp(ctx, queue, &op{fn: fn, done: make(chan error, 1)})
}

func (s *Store) submitOp(ctx context.Context, queue chan *op, o *op) error {
	select {
	case <-s.closing:
		return ErrClosed
	default:
	}
	select {
	case queue <- o:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closing:
		return ErrClosed
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		// The batch may still commit; the caller reports failure and the
		// sender retries, which the state upsert makes harmless.
		return ctx.Err()
	}
}

// committer commits intake's ops (s.ops). On SQLite it also takes the
// delivery outcomes (s.acks) into the same batches: see ackCommitter.
func (s *Store) committer() {
	if s.dialect == dialectSQLite {
		s.commitLoop(s.ops, s.acks)
		return
	}
	s.commitLoop(s.ops, nil)
}

// commitLoop group-commits the ops arriving on in (and on also, unless it
// is nil) until the store closes.
func (s *Store) commitLoop(in, also chan *op) {
	defer s.wg.Done()
	// next is an op taken from in that the last batch had no room for.
	var next *op
	for {
		first := next
		next = nil
		if first == nil {
			select {
			case first = <-in:
			case first = <-also: // never ready when nil
			case <-s.closing:
				// Fail whatever is still queued rather than leave callers waiting.
				for _, q := range []chan *op{in, also} {
					for q != nil {
						select {
						case o := <-q:
							o.done <- ErrClosed
						default:
							q = nil
						}
					}
				}
				return
			}
		}
		ops := []*op{first}
		locks := len(first.locks)
	gather:
		for len(ops) < maxBatchOps {
			select {
			case o := <-in:
				if locks += len(o.locks); s.dialect == dialectPostgres && locks > maxBatchLocks && len(o.locks) > 0 {
					next = o
					break gather
				}
				ops = append(ops, o)
			case o := <-also:
				ops = append(ops, o)
			default:
				break gather
			}
		}
		start := time.Now()
		err := s.commit(ops)
		s.metrics.commitDuration.Observe(time.Since(start).Seconds())
		s.metrics.commitBatchOps.Observe(float64(len(ops)))
		if err != nil {
			s.metrics.commitErrors.Inc()
			// A run of failures (the database away) is its start, a
			// reminder a minute and its end (logrun), not a line each.
			switch log, first, failing, n := s.commitRun.Failed(time.Now()); {
			case first:
				s.logger.Error("Store commit failed; the next failures are counted (alertfan_store_commit_errors_total), logged once a minute, until a commit succeeds", "ops", len(ops), "err", err)
			case log:
				s.logger.Error("Store commits still failing", "failing_for", failing.Round(time.Second), "failed_commits", n, "err", err)
			}
		} else if ended, failed, n := s.commitRun.Succeeded(time.Now()); ended {
			s.logger.Info("Store commits succeed again", "failing_for", failed.Round(time.Millisecond), "failed_commits", n)
		}
		for _, o := range ops {
			switch {
			case o.refused != nil:
				o.done <- o.refused
			case err == nil && o.own != nil:
				o.done <- o.own
			default:
				o.done <- err
			}
		}
		s.catchUpWAL()
	}
}

// maxRefusedOps bounds how many ops one commit takes out (see commit):
// each costs a run of the ops before it, so a batch full of refused writes
// fails whole after these, as every batch with one did before.
const maxRefusedOps = 4

// commit commits ops in one transaction, rerun after a deadlock or a
// serialization failure. An op whose write the database refused for its
// data is taken out and the rest are committed again without it (a
// failed statement ends a PostgreSQL transaction, so it cannot be skipped
// in place): only its caller gets the error.
func (s *Store) commit(ops []*op) error {
	var err error
	refused := 0
	for attempt := 0; attempt < 3; {
		err = s.commitOnce(ops)
		var bad *opFailure
		if len(ops) > 1 && refused < maxRefusedOps && errors.As(err, &bad) && refusedWrite(err) {
			refused++
			bad.op.refused = bad.err
			s.metrics.commitErrors.Inc()
			s.logger.Warn("The store refused one request's writes; committing the rest of its batch without it", "ops", len(ops)-1, "err", bad.err)
			ops = slices.DeleteFunc(slices.Clone(ops), func(o *op) bool { return o == bad.op })
			continue
		}
		if err == nil || !retriableTxError(err) {
			return err
		}
		s.metrics.commitReruns.Inc()
		attempt++
	}
	return err
}

// retriableTxError is a PostgreSQL deadlock or serialization failure
// between concurrent committers or replicas; the batch is simply rerun.
func retriableTxError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// batchTx is a commit batch's transaction; on SQLite it holds the writer
// connection it was begun on, given back when the transaction ends.
type batchTx struct {
	*sql.Tx
	conn *sql.Conn
}

// end gives the connection back (SQLite); the transaction is over.
func (t batchTx) end() {
	if t.conn != nil {
		t.conn.Close() //nolint:errcheck // returns it to the pool
	}
}

// beginBatch begins a commit batch's transaction: on PostgreSQL under ctx,
// on SQLite on a connection taken within ctx's deadline, under a context
// that cannot end (see commitOnce).
func (s *Store) beginBatch(ctx context.Context) (batchTx, error) {
	if s.dialect != dialectSQLite {
		tx, err := s.db.BeginTx(ctx, nil)
		return batchTx{Tx: tx}, err
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return batchTx{}, err
	}
	tx, err := conn.BeginTx(context.WithoutCancel(ctx), nil)
	if err != nil {
		conn.Close() //nolint:errcheck
		return batchTx{}, err
	}
	return batchTx{Tx: tx, conn: conn}, nil
}

func (s *Store) commitOnce(ops []*op) (err error) {
	// The deadline bounds the transaction: waiting for the connection,
	// and a batch stuck on the network (PostgreSQL); database/sql rolls it
	// back when it passes. On SQLite it bounds the wait for the one writer
	// connection only, and the transaction runs under a context that
	// cannot end: nothing in it can outwait busy_timeout but a stuck disk,
	// which no interrupt reaches, and a transaction begun under a context
	// that can end has database/sql and the driver start a watcher
	// goroutine for each of its queries, its BEGIN and its COMMIT (1.7 per
	// notification in the ingest benchmark's runtime trace).
	ctx, cancel := context.WithTimeout(context.Background(), commitDeadline)
	defer cancel()
	tx, err := s.beginBatch(ctx)
	if err != nil {
		return fmt.Errorf("queue: begin: %w", err)
	}
	if s.dialect == dialectSQLite {
		ctx = context.WithoutCancel(ctx)
	}
	b := &batch{s: s, tx: tx.Tx, stmts: map[string]*sql.Stmt{}, now: time.Now().UnixNano(), pending: map[pendingGroup]*pendingKeys{}}
	defer func() {
		for _, st := range b.stmts {
			st.Close()
		}
		if err != nil {
			tx.Rollback() //nolint:errcheck
		}
		tx.end()
	}()
	if s.dialect == dialectPostgres {
		if keys, alone := lockKeys(ops); len(keys) > 0 {
			if _, err = tx.ExecContext(ctx, sqlLockKeys, keys, alone); err != nil {
				return fmt.Errorf("queue: lock the batch's alerts: %w", err)
			}
		}
	}
	for _, o := range ops {
		o.own = nil
		mark := len(b.hist)
		if err = o.fn(ctx, b); err != nil {
			var own *OpError
			if errors.As(err, &own) {
				// The op wrote nothing; neither does its history.
				o.own, err, b.hist = own.Err, nil, b.hist[:mark]
				continue
			}
			return &opFailure{op: o, err: err}
		}
	}
	if err = b.flushHistory(ctx); err != nil {
		return err
	}
	jobs := b.jobs()
	if len(jobs) > 0 {
		if _, err = s.client.InsertManyFastTx(ctx, tx.Tx, jobs); err != nil {
			return fmt.Errorf("queue: insert jobs: %w", err)
		}
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("queue: commit: %w", err)
	}
	s.touched.mark(b.written, time.Now())
	s.metrics.jobsInserted.Add(float64(len(jobs)))
	return nil
}

// jobs turns the keys made pending into River jobs: one per target and up
// to maxKeysPerJob keys. River's cost is per job (its SQLite driver
// inserts and completes row by row), so a burst of thousands of alerts
// costs tens of jobs, not thousands.
//
// A job for a rate-limited target is scheduled for when the limit will
// admit it, so a storm is drained at the allowed rate without the job being
// fetched, parked and fetched again (each a write on the store).
func (b *batch) jobs() []river.InsertManyParams {
	var out []river.InsertManyParams
	now := time.Now()
	for _, g := range b.order {
		p := b.pending[g]
		t, _ := b.s.target(g.target)
		sch, _ := t.Sink.(scheduler)
		for start := 0; start < len(p.keys); start += maxKeysPerJob {
			end := min(start+maxKeysPerJob, len(p.keys))
			// River fetches available jobs by priority (1 first), so the
			// class also orders work that is not rate-limited.
			opts := &river.InsertOpts{Queue: p.kind, Priority: max(1, min(g.class, 4))}
			if sch != nil {
				if d := b.s.schedule(sch, g.target, end-start, g.class); d > 0 {
					opts.ScheduledAt = now.Add(d)
				}
			}
			out = append(out, river.InsertManyParams{
				Args:       deliverArgs{Target: g.target, Class: g.class, Keys: append([]keySeq(nil), p.keys[start:end]...)},
				InsertOpts: opts,
			})
		}
	}
	return out
}

func (b *batch) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := b.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (b *batch) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	st, err := b.stmt(ctx, q)
	if err != nil {
		// A failed prepare resurfaces as the row's error on Scan.
		return b.tx.QueryRowContext(ctx, b.s.rebind(q), args...)
	}
	return st.QueryRowContext(ctx, args...)
}

func (b *batch) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := b.stmts[q]; ok {
		return st, nil
	}
	st, err := b.txStmt(ctx, q)
	if err != nil {
		return nil, err
	}
	b.stmts[q] = st
	return st, nil
}

const (
	// fire_payload keeps the newest firing content once an acknowledge or
	// a resolve replaces the payload (SET expressions read the old row).
	// A repeat — same content, same wanted phase, already there and
	// nothing pending — changes nothing and returns no row.
	//
	// A trigger of an occurrence someone acknowledged after its trigger
	// (fire_payload holds that trigger; no resolve between) leaves it
	// acknowledged, as PagerDuty leaves an acknowledged incident
	// that gets a new trigger: the acknowledge stays what the target is
	// owed, and the trigger's content is kept as the occurrence's firing
	// content (fire_payload, sent first if the target never got a
	// trigger). Taking the trigger as the newest want dropped an
	// acknowledge not yet sent (a fresh helper: trigger, acknowledge,
	// trigger reached PagerDuty as trigger, trigger; the incident kept
	// escalating after a person acknowledged it). An acknowledge that
	// came before any trigger acknowledged nothing (PagerDuty ignores it),
	// and the trigger after it is the newest want, as before.
	//
	// The same statement marks the key pending (see sqlMarkPending): only
	// the write that flips pending from 0 to 1 bumps seq, and enqueued
	// says whether this one did, so the caller enqueues a job exactly
	// when markPending would have. Doing it here instead of in a second
	// UPDATE saves a statement per alert on intake's single writer.
	// sqlKeepsAck: the upsert's row holds an acknowledge that came after
	// its occurrence's trigger, and the update is a trigger (see above).
	sqlKeepsAck    = `alertfan_state.want = 'acknowledged' AND excluded.want = 'triggered' AND alertfan_state.fire_payload <> ''`
	sqlUpsertState = sqlStateValues + `
		ON CONFLICT (target, key) DO UPDATE SET
			version = alertfan_state.version + 1,
			resolved = excluded.resolved,
			fire_payload = CASE WHEN ` + sqlKeepsAck + ` THEN excluded.payload
				WHEN excluded.want = 'triggered' THEN ''
				WHEN alertfan_state.want = 'triggered' THEN alertfan_state.payload
				ELSE alertfan_state.fire_payload END,
			occ = CASE WHEN alertfan_state.want = 'resolved' AND excluded.want IN ('triggered', 'acknowledged')
				THEN alertfan_state.occ + 1 ELSE alertfan_state.occ END,
			close_payload = CASE WHEN alertfan_state.want = 'resolved' AND excluded.want IN ('triggered', 'acknowledged')
				THEN alertfan_state.payload ELSE alertfan_state.close_payload END,
			payload = CASE WHEN ` + sqlKeepsAck + ` THEN alertfan_state.payload ELSE excluded.payload END,
			want = CASE WHEN ` + sqlKeepsAck + ` THEN 'acknowledged' ELSE excluded.want END,
			digest = CASE WHEN ` + sqlKeepsAck + ` THEN alertfan_state.digest ELSE excluded.digest END,
			updated_at = excluded.updated_at,
			seq = CASE WHEN alertfan_state.pending = 0 THEN alertfan_state.seq + 1 ELSE alertfan_state.seq END,
			enqueued = CASE WHEN alertfan_state.pending = 0 THEN 1 WHEN excluded.class < alertfan_state.class THEN 2 ELSE 0 END,
			class = CASE WHEN alertfan_state.pending = 0 OR excluded.class < alertfan_state.class THEN excluded.class ELSE alertfan_state.class END,
			pending = 1
		WHERE NOT (alertfan_state.pending = 0 AND alertfan_state.want = excluded.want AND alertfan_state.phase = excluded.want
			AND alertfan_state.digest = excluded.digest AND alertfan_state.delivered = alertfan_state.version AND excluded.want <> 'event')
		RETURNING seq, enqueued`
	// sqlStateValues is a new state: version 1, seq 1, pending, enqueued.
	sqlStateValues = `INSERT INTO alertfan_state (target, key, version, delivered, seq, pending, resolved, payload, updated_at, want, digest, enqueued, class)
		VALUES (?, ?, 1, 0, 1, 1, ?, ?, ?, ?, ?, 1, ?)`
	// sqlInsertState is sqlUpsertState's insert alone, an Exec (see
	// putNewItem).
	sqlInsertState = sqlStateValues + ` ON CONFLICT (target, key) DO NOTHING`
	// Only the transaction that flips pending from 0 to 1 enqueues a job,
	// so a (target, key) never has two live jobs; seq tells a live job
	// from a stale one that a rescue or a retry command brought back.
	sqlMarkPending = `UPDATE alertfan_state SET pending = 1, seq = seq + 1, class = ?
		WHERE target = ? AND key = ? AND pending = 0 RETURNING seq`
)

// putItem upserts one (target, key) state and makes sure a job will
// deliver it. A pure repeat of what the target already has is a no-op,
// and putItem reports false.
func (b *batch) putItem(ctx context.Context, it Item) (bool, error) {
	closed := 0
	if it.closed() {
		closed = 1
	}
	var seq, enqueued int64
	err := b.queryRow(ctx, sqlUpsertState, it.Target, it.Key, closed, string(it.Payload), b.now, it.Want, it.Digest, it.Priority).Scan(&seq, &enqueued)
	if errors.Is(err, sql.ErrNoRows) {
		b.s.metrics.repeats.Inc()
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("queue: upsert state: %w", err)
	}
	b.stored(it, seq, enqueued)
	return true, nil
}

// putNewItem is putItem for a key that most likely has no state yet (its
// alert's row was just created: a storm's every alert). The state is
// inserted by an Exec, whose result says whether it was (a new state is
// seq 1 and enqueued), without the rows a RETURNING query opens and
// closes and SQLite's buffer of RETURNING rows, as the alert row's own
// insert (insertAlert); a state that was there after all (DO NOTHING)
// goes through putItem.
func (b *batch) putNewItem(ctx context.Context, it Item) (bool, error) {
	closed := 0
	if it.closed() {
		closed = 1
	}
	_, wrote, err := b.insertNew(ctx, sqlInsertState, it.Target, it.Key, closed, string(it.Payload), b.now, it.Want, it.Digest, it.Priority)
	if err != nil {
		return false, fmt.Errorf("queue: insert state: %w", err)
	}
	if !wrote {
		return b.putItem(ctx, it)
	}
	b.stored(it, 1, 1)
	return true, nil
}

// insertNew runs q, an INSERT … ON CONFLICT DO NOTHING, as an Exec (no
// RETURNING: see insertAlert) and reports whether it wrote the row (false:
// one was there), with the result for the new row's id.
func (b *batch) insertNew(ctx context.Context, q string, args ...any) (sql.Result, bool, error) {
	res, err := b.exec(ctx, q, args...)
	if err != nil {
		return nil, false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return nil, false, err
	}
	return res, n > 0, nil
}

// What sqlUpsertState returns as enqueued.
const (
	// enqueuedNew: the upsert flipped pending from 0 to 1; the key needs
	// a job.
	enqueuedNew = 1
	// enqueuedBetterClass: the key was pending, and the update asks a
	// better priority class than its job's (the row's class, now the
	// update's): the key is moved to a job of that class (escalate.go).
	enqueuedBetterClass = 2
)

// stored follows up a state written with seq, enqueued as sqlUpsertState
// returns them.
func (b *batch) stored(it Item, seq, enqueued int64) {
	if it.Want == PhaseResolved || enqueued == enqueuedBetterClass {
		// A queued trigger may now need no call, or the key's queued work
		// a better class than its job's: let the re-planner look.
		b.s.replanWanted.Store(true)
	}
	if b.s.dialect == dialectSQLite {
		// Only SQLite's writes are all this process's to know (touched).
		b.written = append(b.written, [2]string{it.Target, it.Key})
	}
	// An item with no kind is for a destination no longer configured
	// (Item.Kind): its row is owed the update, with no job, until the
	// destination is put back and moveTarget gives it one.
	if enqueued == enqueuedNew && it.Kind != "" {
		b.enqueue(it.Target, it.Key, it.Kind, it.Priority, seq)
	}
}

// markPending enqueues a delivery job for (target, key) unless one is live.
func (b *batch) markPending(ctx context.Context, target, key, kind string, class int) error {
	var seq int64
	err := b.queryRow(ctx, sqlMarkPending, class, target, key).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("queue: mark pending: %w", err)
	}
	b.enqueue(target, key, kind, class, seq)
	return nil
}

// enqueue adds (key, seq) to the job the batch inserts for the target and
// class; the caller has just flipped the key's pending from 0 to 1.
func (b *batch) enqueue(target, key, kind string, class int, seq int64) {
	g := pendingGroup{target: target, class: class}
	p, ok := b.pending[g]
	if !ok {
		p = &pendingKeys{kind: kind}
		b.pending[g] = p
		b.order = append(b.order, g)
	}
	p.keys = append(p.keys, keySeq{Key: key, Seq: seq})
}

// schedule is sch.Schedule on the committer, where a panic (a bug in a
// sink's limiter) would end the process: the job is then inserted
// unscheduled, and the limiter paces its calls when it runs.
func (s *Store) schedule(sch scheduler, target string, n, class int) (d time.Duration) {
	defer func() {
		if r := recover(); r != nil {
			s.logPanic("A sink's rate-limit schedule panicked; its job is not scheduled ahead", r, "target", target)
			d = 0
		}
	}()
	return sch.Schedule(n, class)
}

// unschedule is sch.Unschedule, with schedule's guard against a panic.
func (s *Store) unschedule(sch scheduler, target string, n, class int) {
	defer func() {
		if r := recover(); r != nil {
			s.logPanic("A sink's rate-limit release panicked", r, "target", target)
		}
	}()
	sch.Unschedule(n, class)
}

// On PostgreSQL several transactions write at once: intake's committers
// (4 per process) and every replica's. An op that reads what it decides
// by (an alert's row: is this update stale, which targets hold it) must
// not read it while another transaction is about to change it, or both
// decide from the same old row and the later commit wins: an acknowledge
// and a resolve of one alert arriving together left it acknowledged,
// with a trigger sent after the resolve (a fresh helper, 4–13 of 50
// alerts). So a batch first takes a transaction-scoped advisory lock
// (https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS)
// per alert identity and state key its ops named (op.locks), all in one
// statement and in ascending order: every batch takes its locks in the
// same order, so two batches holding the same alerts (the copies an HA
// pair of Alertmanagers sends to two replicas) wait for each other
// instead of deadlocking. The ops that record deliveries' outcomes take
// none: each is one conditional UPDATE of a state (its version and
// delivered checked in the statement), which needs no read before it,
// and a lock taken at a batch's start would hold a delivery's record
// behind every intake batch holding its key — on a slow database link,
// past job_timeout, and another replica would then repeat the call (on
// a slow link a fresh helper saw 70–97 of 100 PagerDuty resolves
// repeated with them, none without: BENCHMARKS.md). Their rare deadlock
// with an intake batch is run again (alertfan_store_commit_reruns_total).
// Names hash to 64-bit keys (an identity and the key of its states,
// usually the same string, share one); two names sharing a key only
// serialize more than needed. SQLite's one writer needs none.
//
// Advisory locks take slots of PostgreSQL's shared lock table, sized by
// max_locks_per_transaction × max_connections (a default server took
// 12,000 at once and refused 16,000: "out of shared memory"), which a
// notification of thousands of alerts would exhaust. So a
// batch's locks are bounded: the committer gathers ops up to
// maxBatchLocks names (commitLoop), and a batch of one op naming more (a
// notification of hundreds of alerts) takes the deployment-wide lock
// exclusively instead, which every other locking batch holds shared
// (the first key of sqlLockKeys): it runs alone, and takes nothing else.
const sqlLockKeys = `SELECT count(CASE WHEN i = 1 AND NOT $2 THEN pg_advisory_xact_lock_shared(k) ELSE pg_advisory_xact_lock(k) END)
	FROM unnest($1::bigint[]) WITH ORDINALITY AS u(k, i)`

// maxBatchLocks bounds the advisory locks one batch takes: with 4
// intake committers per replica, 3 replicas hold at most 3,084 (see
// sqlLockKeys).
const maxBatchLocks = 256

// lockAll is the key of the deployment-wide lock (sqlLockKeys).
var lockAll = lockKey("\x00all")

func lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("alertfan\x00")) //nolint:errcheck
	h.Write([]byte(name))           //nolint:errcheck
	return int64(h.Sum64())
}

// lockKeys is the advisory lock keys a batch of ops takes, in order, and
// whether it takes the deployment-wide lock exclusively: that lock first,
// then the sorted, distinct keys of the ops' names (none when exclusive).
func lockKeys(ops []*op) ([]int64, bool) {
	var keys []int64
	for _, o := range ops {
		for _, name := range o.locks {
			keys = append(keys, lockKey(name))
		}
	}
	if len(keys) == 0 {
		return nil, false
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	if len(keys) > maxBatchLocks {
		return []int64{lockAll}, true
	}
	return append([]int64{lockAll}, keys...), false
}
