package queue

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"reflect"
)

// hotStatements are the group commit's per-item statements. On SQLite
// they are prepared once on the writer connection and reused by every
// batch: modernc parses a statement on each prepare, and preparing them
// per transaction was ~7% of intake's CPU. (pgx keeps its own statement
// cache per connection, so PostgreSQL prepares per batch as before.)
var hotStatements = []string{sqlUpsertState, sqlInsertState, sqlMarkPending, sqlGetAlertSQLite, sqlUpsertAlert, sqlInsertAlert, sqlKeyTargets, sqlAckDone, sqlAckNewer, sqliteHistInserts[0], sqliteHistInserts[1], sqliteHistInserts[2]}

// prepareHot prepares hotStatements on the SQLite writer. It must run
// before the committer starts: the writer is the pool's only connection,
// and a prepare on the pool would wait for a transaction holding it.
func (s *Store) prepareHot(ctx context.Context) error {
	if s.dialect != dialectSQLite {
		return nil
	}
	s.prepared = make(map[string]*sql.Stmt, len(hotStatements))
	for _, q := range hotStatements {
		st, err := s.db.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("queue: prepare: %w", err)
		}
		s.prepared[q] = st
	}
	return nil
}

// txStmt returns q prepared for tx: the statement prepared once on the
// writer when q is one of them (database/sql reuses it on the same
// connection, and prepares it again on a new one), else prepared in tx.
func (b *batch) txStmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := b.s.prepared[q]; ok {
		return b.tx.StmtContext(ctx, st), nil
	}
	return b.tx.PrepareContext(ctx, b.s.rebind(q))
}

// maxCachedStatements bounds the statements each writer connection keeps
// prepared for the queries it is handed as text; the least recently used
// one is finalized to make room.
const maxCachedStatements = 32

// stmtCachingConnector opens SQLite connections that keep the statements
// they are handed as text (database/sql's ExecContext and QueryContext on
// a DB or a Tx) prepared for the next call with the same text.
//
// Why: River's SQLite driver runs its queries as text, and modernc parses
// and plans a statement every time it is prepared. River's job insert
// alone — one statement per intake commit — spent half its time being
// parsed: 0.52 s of the writer's 7.1 s in a 10 s ingest profile, and
// River's fetch and completion as much of a drain (BENCHMARKS.md, "River's
// statements, prepared once"). Our own per-item statements are prepared
// once already (prepareHot); this does the same for queries we do not
// write.
//
// Statements are per connection, as SQLite's are. database/sql uses a
// connection from one goroutine at a time, rows included, so the cache
// needs no lock of its own. A statement still in use (rows not yet closed)
// is not shared: a second call with its text prepares one of its own, as
// an uncached call does. SQLite re-prepares a cached statement by itself
// when the schema changes (sqlite3_prepare_v2).
type stmtCachingConnector struct {
	driver.Connector
}

// Connect wraps the SQLite connection in a cachingConn.
func (c stmtCachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return newCachingConn(conn)
}

// sqliteConn is what database/sql uses of a modernc connection.
// newCachingConn checks at open that the driver's connection has all of
// it, so a later modernc that dropped a method fails the store's open, not
// a call. modernc's own extras (backup, hooks, serialize) are hidden from
// Conn.Raw on the writer; nothing uses them there.
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// cachingConn is a SQLite connection with a statement cache; every other
// call is the connection's own.
type cachingConn struct {
	sqliteConn
	stmts map[string]*cachedStmt
	clock uint64
}

// cacheableStmt is what a kept statement must do (modernc's does).
type cacheableStmt interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

type cachedStmt struct {
	st     cacheableStmt
	used   uint64 // the conn's clock at the last use, for eviction
	inUse  bool   // rows from it are open
	closed bool   // evicted or the conn closed while in use: close with the rows
}

var _ driver.Connector = stmtCachingConnector{}

func newCachingConn(conn driver.Conn) (driver.Conn, error) {
	c, ok := conn.(sqliteConn)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("queue: SQLite connection %T lacks a method database/sql uses", conn)
	}
	return &cachingConn{sqliteConn: c, stmts: map[string]*cachedStmt{}}, nil
}

// take returns the cached statement for query, preparing and caching it
// if need be; nil (and no error) means the call must go uncached: the
// statement is in use, or the driver's statement lacks a method used here.
// A script (several statements) may be kept too: modernc keeps no
// prepared handle for one and runs it statement by statement at every
// call, as it does uncached.
func (c *cachingConn) take(ctx context.Context, query string) (*cachedStmt, error) {
	c.clock++
	if cs, ok := c.stmts[query]; ok {
		if cs.inUse {
			return nil, nil
		}
		cs.used = c.clock
		return cs, nil
	}
	ds, err := c.sqliteConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	st, ok := ds.(cacheableStmt)
	if !ok {
		ds.Close()
		return nil, nil
	}
	if len(c.stmts) >= maxCachedStatements {
		c.evict()
	}
	cs := &cachedStmt{st: st, used: c.clock}
	c.stmts[query] = cs
	return cs, nil
}

// evict finalizes the least recently used statement; one in use is
// finalized when its rows close.
func (c *cachingConn) evict() {
	var oldest string
	var at uint64
	found := false
	for q, cs := range c.stmts {
		if !found || cs.used < at {
			oldest, at, found = q, cs.used, true
		}
	}
	cs := c.stmts[oldest]
	delete(c.stmts, oldest)
	cs.release()
}

// release finalizes the statement, or marks it to be finalized once its
// rows close.
func (cs *cachedStmt) release() {
	if cs.inUse {
		cs.closed = true
		return
	}
	cs.st.Close() //nolint:errcheck // finalize reports the last step's error, already returned
}

// ExecContext runs query on its cached statement (modernc resets it after
// the run).
func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	cs, err := c.take(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.sqliteConn.ExecContext(ctx, query, args)
	}
	return cs.st.ExecContext(ctx, args)
}

// QueryContext runs query on its cached statement, which stays in use
// until the rows close (modernc resets it then).
func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	cs, err := c.take(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.sqliteConn.QueryContext(ctx, query, args)
	}
	rows, err := cs.st.QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	cs.inUse = true
	return &cachedRows{Rows: rows, cs: cs}, nil
}

// Close finalizes the cached statements, then closes the connection.
func (c *cachingConn) Close() error {
	for q, cs := range c.stmts {
		delete(c.stmts, q)
		cs.release()
	}
	return c.sqliteConn.Close()
}

// cachedRows gives its statement back to the cache when closed, and passes
// on the column type methods database/sql looks for.
type cachedRows struct {
	driver.Rows
	cs *cachedStmt
}

func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	if r.cs != nil {
		cs := r.cs
		r.cs, cs.inUse = nil, false
		if cs.closed {
			cs.st.Close() //nolint:errcheck
		}
	}
	return err
}

func (r *cachedRows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

func (r *cachedRows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *cachedRows) ColumnTypeLength(i int) (int64, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeLength); ok {
		return t.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *cachedRows) ColumnTypeNullable(i int) (nullable, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *cachedRows) ColumnTypePrecisionScale(i int) (precision, scale int64, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypePrecisionScale); ok {
		return t.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}
