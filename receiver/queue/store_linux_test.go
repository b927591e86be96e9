package queue

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// SQLite's SHARED lock range on the database file (os_unix.c).
const (
	sqlitePendingByte = 0x40000000
	sqliteSharedFirst = sqlitePendingByte + 2
	sqliteSharedSize  = 510
	fOFDGetLk         = 36 // F_OFD_GETLK, linux/fcntl.h
)

// processHoldsSQLiteLock reports whether this process holds a POSIX
// (fcntl) lock in SQLite's SHARED range of path: an open file description
// lock probe on a new descriptor conflicts with the process's own classic
// locks.
func processHoldsSQLiteLock(t *testing.T, path string) bool {
	f, err := os.Open(path)
	require.NoError(t, err)
	// Closing the probe would itself drop the process's locks: it stays
	// open for the test's life.
	t.Cleanup(func() { f.Close() })
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Start: sqliteSharedFirst, Len: sqliteSharedSize}
	_, _, e := syscall.Syscall(syscall.SYS_FCNTL, f.Fd(), fOFDGetLk, uintptr(unsafe.Pointer(&lk)))
	require.Zero(t, e)
	return lk.Type != syscall.F_UNLCK
}

// closeWithAReadInFlight opens a store on path, starts a read on it and
// closes the store while the read is still in flight, as a handler that
// outlived the HTTP shutdown's deadline does. The returned tx is that read.
func closeWithAReadInFlight(t *testing.T, path string) *sql.Tx {
	s, err := Open(context.Background(), Options{Driver: DriverSQLite, Path: path, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	require.True(t, processHoldsSQLiteLock(t, path), "expected SQLite's lock while the store is open")
	tx, err := s.rdb.BeginTx(context.Background(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { tx.Rollback() }) //nolint:errcheck
	var n int
	require.NoError(t, tx.QueryRow(`SELECT COUNT(*) FROM alertfan_state`).Scan(&n))
	closeQuickly(t, s)
	return tx
}

// closeQuickly closes s without closeDB's TRUNCATE checkpoint waiting its
// busy_timeout for a read still in flight.
func closeQuickly(t *testing.T, s *Store) {
	_, err := s.ckdb.Exec(`PRAGMA busy_timeout = 100`)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.Close(ctx) //nolint:errcheck
}

// A read still in flight when the store closes keeps its SQLite
// connection open past closeDB, and SQLite keeps the process's locks on
// the file for it: the checkpointer's descriptor must not drop them by
// closing.
func TestCloseKeepsSQLiteLocksOfAConnectionInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	tx := closeWithAReadInFlight(t, path)
	held := processHoldsSQLiteLock(t, path)
	var n int
	require.NoError(t, tx.QueryRow(`SELECT COUNT(*) FROM alertfan_state`).Scan(&n))
	require.True(t, held, "the process's SQLite lock was dropped while a connection was still open")
}

// The locks are the process's: a store reopened on the file after a close
// that kept its descriptor (a connection still in use) must not drop them
// when it closes in turn.
func TestReopenedStoreKeepsAStrayConnectionsLocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	closeWithAReadInFlight(t, path)
	require.True(t, processHoldsSQLiteLock(t, path))
	b, err := Open(context.Background(), Options{Driver: DriverSQLite, Path: path, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	closeQuickly(t, b)
	require.True(t, processHoldsSQLiteLock(t, path), "the second store's close dropped the locks of the first's connection still in use")
}

// One process owns an SQLite file, whatever the path that names it: a
// symlink, or a %XX escape (SQLite takes the path as a file: URI).
func TestStoreLockedUnderAnotherName(t *testing.T) {
	dir := t.TempDir()
	a, err := Open(context.Background(), Options{Driver: DriverSQLite, Path: filepath.Join(dir, "qA.db"), Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	t.Cleanup(func() { a.Close(context.Background()) }) //nolint:errcheck
	require.NoError(t, os.Symlink(filepath.Join(dir, "qA.db"), filepath.Join(dir, "link.db")))
	for _, alias := range []string{"q%41.db", "link.db"} {
		b, err := Open(context.Background(), Options{Driver: DriverSQLite, Path: filepath.Join(dir, alias), Registerer: prometheus.NewRegistry()})
		if err == nil {
			b.Close(context.Background()) //nolint:errcheck
		}
		require.ErrorContains(t, err, "in use by another alertfan process", "%s opened the store a first one owns", alias)
	}
	// Closed, the owner lets the other spelling in: both locks are
	// released.
	require.NoError(t, a.Close(context.Background()))
	c, err := Open(context.Background(), Options{Driver: DriverSQLite, Path: filepath.Join(dir, "q%41.db"), Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	require.NoError(t, c.Close(context.Background()))
}
