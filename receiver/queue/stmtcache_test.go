package queue

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"modernc.org/sqlite"
)

// openCaching opens a one-connection SQLite database through the
// statement-caching connector, as the store's writer is.
func openCaching(t *testing.T) *sql.DB {
	t.Helper()
	conn, err := sqlite.NewConnector("file:" + filepath.Join(t.TempDir(), "c.db") + "?_pragma=journal_mode(WAL)")
	require.NoError(t, err)
	db := sql.OpenDB(stmtCachingConnector{conn})
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	return db
}

// openCachingWith is openCaching with a table t (x INTEGER PRIMARY KEY)
// holding xs.
func openCachingWith(t *testing.T, xs ...int) *sql.DB {
	db := openCaching(t)
	_, err := db.Exec(`CREATE TABLE t (x INTEGER PRIMARY KEY)`)
	require.NoError(t, err)
	for _, x := range xs {
		_, err := db.Exec(`INSERT INTO t (x) VALUES (?)`, x)
		require.NoError(t, err)
	}
	return db
}

// cached returns how many statements the connection keeps, and whether
// it keeps one for query.
func cached(t *testing.T, db *sql.DB, query string) (n int, ok bool) {
	t.Helper()
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Raw(func(dc any) error {
		cc := dc.(*cachingConn)
		_, ok = cc.stmts[query]
		n = len(cc.stmts)
		return nil
	}))
	return n, ok
}

func count(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(`SELECT COUNT(*) FROM t`).Scan(&n))
	return n
}

func TestStatementCacheKeepsOnePerText(t *testing.T) {
	db := openCaching(t)
	_, err := db.Exec(`CREATE TABLE t (x INTEGER PRIMARY KEY, y TEXT NOT NULL)`)
	require.NoError(t, err)
	const insert = `INSERT INTO t (x, y) VALUES (?, ?)`
	for i := range 5 {
		_, err := db.Exec(insert, i, fmt.Sprint("v", i))
		require.NoError(t, err)
	}
	n, ok := cached(t, db, insert)
	require.True(t, ok)
	require.Equal(t, 2, n, "CREATE TABLE and the insert, once each")
	require.Equal(t, 5, count(t, db))

	// Bindings do not leak from one run into the next, and a failed run
	// (a constraint) leaves the statement usable.
	_, err = db.Exec(insert, 1, "dup")
	require.ErrorContains(t, err, "UNIQUE")
	_, err = db.Exec(insert, 9, "nine")
	require.NoError(t, err)
	var y string
	require.NoError(t, db.QueryRow(`SELECT y FROM t WHERE x = ?`, 9).Scan(&y))
	require.Equal(t, "nine", y)
	require.NoError(t, db.QueryRow(`SELECT y FROM t WHERE x = ?`, 1).Scan(&y))
	require.Equal(t, "v1", y)

	// A script is run whole, statement by statement, at every call, kept
	// or not; so is a query text with a ';' in a comment (River's
	// completion has one).
	const script = `INSERT INTO t (y) VALUES ('a'); INSERT INTO t (y) VALUES ('b')`
	for range 2 {
		_, err = db.Exec(script)
		require.NoError(t, err)
	}
	require.Equal(t, 10, count(t, db))
	const commented = "-- one; two\nSELECT COUNT(*) FROM t WHERE y = ?"
	for range 2 {
		var n int
		require.NoError(t, db.QueryRow(commented, "a").Scan(&n))
		require.Equal(t, 2, n)
	}
	_, ok = cached(t, db, commented)
	require.True(t, ok)
}

// Rows still open keep their statement: the same text run meanwhile (in
// the same transaction, on the same connection) gets a statement of its
// own, and neither result is disturbed.
func TestStatementCacheInUse(t *testing.T) {
	db := openCachingWith(t, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
	ctx := context.Background()
	const q = `SELECT x FROM t WHERE x >= ? ORDER BY x`
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	outer, err := tx.QueryContext(ctx, q, 5)
	require.NoError(t, err)
	var got []int
	for outer.Next() {
		var x int
		require.NoError(t, outer.Scan(&x))
		inner, err := tx.QueryContext(ctx, q, 8)
		require.NoError(t, err)
		var in []int
		for inner.Next() {
			var y int
			require.NoError(t, inner.Scan(&y))
			in = append(in, y)
		}
		require.NoError(t, inner.Err())
		require.NoError(t, inner.Close())
		require.Equal(t, []int{8, 9}, in)
		got = append(got, x)
	}
	require.NoError(t, outer.Err())
	require.NoError(t, outer.Close())
	require.Equal(t, []int{5, 6, 7, 8, 9}, got)
	require.NoError(t, tx.Commit())

	// Given back: the next run uses the kept statement again.
	var first int
	require.NoError(t, db.QueryRow(q, 3).Scan(&first))
	require.Equal(t, 3, first)
	_, ok := cached(t, db, q)
	require.True(t, ok)
}

// Past maxCachedStatements the least recently used statement goes; one in
// use goes when its rows close.
func TestStatementCacheEvicts(t *testing.T) {
	db := openCachingWith(t, 1, 2)
	ctx := context.Background()

	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	const held = `SELECT x FROM t ORDER BY x`
	rows, err := tx.QueryContext(ctx, held)
	require.NoError(t, err)
	require.True(t, rows.Next())
	for i := range 2 * maxCachedStatements {
		var n int
		require.NoError(t, tx.QueryRowContext(ctx, fmt.Sprintf(`SELECT %d + COUNT(*) FROM t`, i)).Scan(&n))
		require.Equal(t, i+2, n)
	}
	// The evicted statement still serves its rows.
	var x int
	require.NoError(t, rows.Scan(&x))
	require.Equal(t, 1, x)
	require.True(t, rows.Next())
	require.NoError(t, rows.Scan(&x))
	require.Equal(t, 2, x)
	require.NoError(t, rows.Close())
	require.NoError(t, tx.Commit())

	n, ok := cached(t, db, held)
	require.False(t, ok)
	require.LessOrEqual(t, n, maxCachedStatements)
}

// A kept statement follows the schema: SQLite prepares it again when the
// table it reads changes.
func TestStatementCacheFollowsSchema(t *testing.T) {
	db := openCachingWith(t, 1)
	const q = `SELECT * FROM t`
	cols := func() []string {
		rows, err := db.Query(q)
		require.NoError(t, err)
		defer rows.Close()
		c, err := rows.Columns()
		require.NoError(t, err)
		return c
	}
	require.Equal(t, []string{"x"}, cols())
	_, err := db.Exec(`ALTER TABLE t ADD COLUMN y TEXT NOT NULL DEFAULT 'd'`)
	require.NoError(t, err)
	require.Equal(t, []string{"x", "y"}, cols())
}

// The store's writer keeps River's hot statements: its job insert, fetch
// and completion (whose text has a ';' in a comment).
func TestStatementCacheHoldsRiversQueries(t *testing.T) {
	sink := &recordingSink{}
	s := openStore(t, drivers()[0].opts(t), sink)
	for i := range 5 {
		require.NoError(t, s.Enqueue(context.Background(), []Item{item(fmt.Sprint("c", i), "firing")}))
	}
	require.Eventually(t, func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return len(sink.got) == 5 }, 10*time.Second, 10*time.Millisecond)
	want := []string{"-- name: JobInsertFastManyNoReturning ", "-- name: JobGetAvailable ", "-- name: JobSetStateIfRunning "}
	require.Eventually(t, func() bool { // completions are batched
		c, err := s.db.Conn(context.Background())
		require.NoError(t, err)
		defer c.Close()
		found := 0
		require.NoError(t, c.Raw(func(dc any) error {
			for _, w := range want {
				for q := range dc.(*cachingConn).stmts {
					if strings.Contains(q, w) {
						found++
						break
					}
				}
			}
			return nil
		}))
		return found == len(want)
	}, 10*time.Second, 50*time.Millisecond)
}
