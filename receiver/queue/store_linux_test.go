package queue

import (
	"context"
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

// A read still in flight when the store closes (a handler that outlived
// the HTTP shutdown's deadline) keeps its SQLite connection open past
// closeDB, and SQLite keeps the process's locks on the file for it: the
// checkpointer's descriptor must not drop them by closing.
func TestCloseKeepsSQLiteLocksOfAConnectionInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	s, err := Open(context.Background(), Options{Driver: DriverSQLite, Path: path, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	require.True(t, processHoldsSQLiteLock(t, path), "expected SQLite's lock while the store is open")
	tx, err := s.rdb.BeginTx(context.Background(), nil)
	require.NoError(t, err)
	var n int
	require.NoError(t, tx.QueryRow(`SELECT COUNT(*) FROM alertfan_state`).Scan(&n))
	// closeDB's TRUNCATE checkpoint waits busy_timeout for that reader.
	_, err = s.ckdb.Exec(`PRAGMA busy_timeout = 100`)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.Close(ctx) //nolint:errcheck
	held := processHoldsSQLiteLock(t, path)
	require.NoError(t, tx.QueryRow(`SELECT COUNT(*) FROM alertfan_state`).Scan(&n))
	tx.Rollback() //nolint:errcheck
	require.True(t, held, "the process's SQLite lock was dropped while a connection was still open")
}
