package queue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// walTest is a SQLite store with helpers to write, copy the WAL in the
// background checkpoint's place, hold a reader on the WAL and tell
// whether the WAL was started over.
type walTest struct {
	t *testing.T
	s *Store
}

func newWALTest(t *testing.T) *walTest {
	opts := drivers()[0].opts(t)
	return &walTest{t: t, s: openStore(t, opts, &recordingSink{})}
}

func (w *walTest) write(name string) {
	items := make([]Item, 20)
	for i := range items {
		items[i] = item(fmt.Sprintf("%s-%d", name, i), "firing")
	}
	require.NoError(w.t, w.s.Enqueue(context.Background(), items))
}

// copyAll is the background checkpoint copying every frame.
func (w *walTest) copyAll() {
	w.s.ckMu.Lock()
	defer w.s.ckMu.Unlock()
	_, _, err := w.s.passiveCheckpoint(context.Background())
	require.NoError(w.t, err)
}

// restarts is the WAL header's checkpoint sequence number, which SQLite
// bumps each time it starts the WAL over (https://sqlite.org/fileformat.html#wal_file_format).
func (w *walTest) restarts() uint32 {
	b, err := os.ReadFile(w.s.opts.Path + "-wal")
	require.NoError(w.t, err)
	require.GreaterOrEqual(w.t, len(b), 32)
	return binary.BigEndian.Uint32(b[12:16])
}

// reader opens a read transaction whose snapshot is on the WAL, as a
// worker's is while it loads states; the returned func ends it.
func (w *walTest) reader() (end func()) {
	tx, err := w.s.rdb.BeginTx(context.Background(), nil)
	require.NoError(w.t, err)
	var n int
	require.NoError(w.t, tx.QueryRow(`SELECT COUNT(*) FROM alertfan_state`).Scan(&n))
	return func() { tx.Rollback() } //nolint:errcheck
}

// catchUp runs the writer's catch-up (again if the background checkpoint
// held it off) and returns once it is over. The store's committers run it
// too, after each batch: the one that clears the flag may be one of them,
// still in its checkpoint. It holds ckMu from before it clears the flag
// until it is done, so taking ckMu once the flag is clear waits for it.
// (Returning at the cleared flag let the test's next write commit before
// that checkpoint under -race; the WAL was not started over.)
func (w *walTest) catchUp() {
	w.s.catchUp.Store(true)
	require.Eventually(w.t, func() bool { w.s.catchUpWAL(); return !w.s.catchUp.Load() }, 10*time.Second, time.Millisecond)
	w.s.ckMu.Lock()
	//lint:ignore SA2001 an empty critical section: it only waits for the catch-up in progress
	w.s.ckMu.Unlock()
}

// quiet is catchUpQuiet, read under the lock that guards it.
func (w *walTest) quiet() int {
	w.s.ckMu.Lock()
	defer w.s.ckMu.Unlock()
	return w.s.catchUpQuiet
}

// With a reader on the WAL (workers load states while a queue drains),
// the writer's catch-up still starts the WAL over: it waits for readers
// that began before its copy. A PASSIVE catch-up did not; the WAL grew to
// its limit and the TRUNCATE there held intake for 148–218 ms
// (BENCHMARKS.md, "The WAL under deliveries").
func TestCatchUpStartsTheWALOverUnderReaders(t *testing.T) {
	w := newWALTest(t)
	w.s.ckMu.Lock()
	w.s.catchUpWait = 10 * time.Second // the reader below ends well within it, even under -race
	w.s.ckMu.Unlock()
	for round := range 5 {
		w.write(fmt.Sprintf("r%d-a", round))
		w.copyAll()
		w.write(fmt.Sprintf("r%d-b", round)) // frames not copied: a reader now reads them from the WAL
		end := w.reader()
		before := w.restarts()
		go func() { time.Sleep(50 * time.Millisecond); end() }()
		w.catchUp()
		w.write(fmt.Sprintf("r%d-c", round))
		require.NotEqual(t, before, w.restarts(), "round %d: the WAL was not started over", round)
	}
}

// A reader that outlasts the wait (a large listing, a backup) costs one
// catch-up the wait; the next few do not wait.
func TestCatchUpStopsWaitingForALongReader(t *testing.T) {
	w := newWALTest(t)
	w.s.ckMu.Lock()
	w.s.catchUpWait = 20 * time.Millisecond
	w.s.ckMu.Unlock()
	w.write("a")
	w.copyAll()
	w.write("b")
	end := w.reader()
	defer end()

	start := time.Now()
	w.catchUp()
	require.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond, "it waited for the reader")
	require.Equal(t, catchUpQuietAfterBusy, w.quiet())
	for i := range catchUpQuietAfterBusy {
		w.write(fmt.Sprintf("c%d", i))
		w.catchUp()
		require.Equal(t, catchUpQuietAfterBusy-1-i, w.quiet(), "catch-up %d did not wait", i)
	}
	end()
	// The reader gone, the next catch-up waits again and starts the WAL over.
	// It waits longer now: the store's own workers read the WAL too (they
	// deliver what was written), and under -race on a loaded machine one
	// such read outlasted 20 ms.
	w.s.ckMu.Lock()
	w.s.catchUpWait = time.Second
	w.s.ckMu.Unlock()
	before := w.restarts()
	w.write("d")
	w.catchUp()
	w.write("e")
	require.NotEqual(t, before, w.restarts())
	require.Zero(t, w.quiet())
}

// shrinkResidual flushes what a pass copied and passes again while the
// last pass still found residualFrames or more, at most residualPasses
// times; a failure, a WAL started over or a pinned snapshot ends it.
func TestShrinkResidual(t *testing.T) {
	type passResult struct{ log, done int }
	for _, tc := range []struct {
		name       string
		passes     []passResult
		passErr    int // pass number (1-based) that fails; 0: none
		syncErr    int // sync number (1-based) that fails; 0: none
		wantPasses int
		wantSyncs  int
		wantLog    int
		wantDone   int
	}{
		{name: "a short pass ends it", passes: []passResult{{2030, 2030}}, wantPasses: 1, wantSyncs: 1, wantLog: 2030, wantDone: 2030},
		{name: "passes shrink until one is short", passes: []passResult{{2600, 2600}, {2700, 2700}, {2720, 2720}}, wantPasses: 3, wantSyncs: 3, wantLog: 2720, wantDone: 2720},
		{name: "at most residualPasses", passes: []passResult{{3000, 3000}, {4000, 4000}, {5000, 5000}, {6000, 6000}}, wantPasses: residualPasses, wantSyncs: residualPasses + 1, wantLog: 5000, wantDone: 5000},
		{name: "the WAL started over", passes: []passResult{{40, 40}}, wantPasses: 1, wantSyncs: 1, wantLog: 40, wantDone: 40},
		{name: "a reader pins a snapshot", passes: []passResult{{2500, 2300}}, wantPasses: 1, wantSyncs: 1, wantLog: 2500, wantDone: 2300},
		{name: "a failed pass keeps the figures before it", passes: []passResult{{2600, 2600}, {0, 0}}, passErr: 2, wantPasses: 2, wantSyncs: 2, wantLog: 2600, wantDone: 2600},
		{name: "a failed sync stops at once", passes: []passResult{{2600, 2600}}, syncErr: 1, wantPasses: 0, wantSyncs: 1, wantLog: 2000, wantDone: 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var passes, syncs int
			syncFile := func() error {
				syncs++
				if syncs == tc.syncErr {
					return errors.New("EIO")
				}
				return nil
			}
			pass := func() (int, int, error) {
				passes++
				if passes == tc.passErr {
					return 0, 0, errors.New("busy")
				}
				r := tc.passes[passes-1]
				return r.log, r.done, nil
			}
			l, d := shrinkResidual(2000, 2000, syncFile, pass)
			require.Equal(t, tc.wantPasses, passes, "passes")
			require.Equal(t, tc.wantSyncs, syncs, "syncs")
			require.Equal(t, tc.wantLog, l)
			require.Equal(t, tc.wantDone, d)
		})
	}
}

// Under steady writes the checkpointer's flush and extra passes leave
// every write in place, and the writer's catch-up still starts the WAL
// over.
func TestCheckpointerUnderSteadyWrites(t *testing.T) {
	w := newWALTest(t)
	// The store's own committers run catch-ups here too (the writes pass
	// catchUpFrames), with deliveries reading the WAL: with the default
	// 10 ms wait, one worker's read outlasting it under -race made the
	// catch-ups after it skip the wait (catchUpQuiet), and the final one
	// found a reader. The wait is not what this test is about.
	w.s.ckMu.Lock()
	w.s.catchUpWait = 10 * time.Second
	w.s.ckMu.Unlock()
	for i := range 80 { // past catchUpFrames
		w.write(fmt.Sprintf("pre%d", i))
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	var n int
	var written atomic.Int64
	go func() {
		for ; ; n++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := w.s.Enqueue(context.Background(), []Item{item(fmt.Sprintf("live%d", n), "firing")}); err != nil {
				done <- err
				return
			}
			written.Add(1)
		}
	}()
	var once sync.Once
	var writeErr error
	stopWriting := func() error {
		once.Do(func() { close(stop); writeErr = <-done })
		return writeErr
	}
	t.Cleanup(func() { stopWriting() }) //nolint:errcheck
	// Each pass sees new frames: back to back, passes faster than the
	// writer's commits count as idle ticks and TRUNCATE the WAL.
	for range 5 {
		at := written.Load()
		require.Eventually(t, func() bool { return written.Load() >= at+3 }, 10*time.Second, time.Millisecond)
		w.s.checkpointer()
	}
	require.NoError(t, stopWriting())
	before := w.restarts()
	w.catchUp()
	w.write("after")
	require.NotEqual(t, before, w.restarts(), "the catch-up did not start the WAL over")
	var count int
	require.NoError(t, w.s.rdb.QueryRow(`SELECT COUNT(*) FROM alertfan_state`).Scan(&count))
	require.Equal(t, 80*20+n+20, count)
}

// A path whose %XX SQLite decodes (it takes the path as a file: URI): the
// checkpointer's descriptor and the WAL's size are the file SQLite uses.
func TestStoreFindsTheFileSQLiteOpened(t *testing.T) {
	for _, decoyExists := range []bool{false, true} {
		t.Run(fmt.Sprintf("decoy=%v", decoyExists), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "q%41.db")
			if decoyExists {
				require.NoError(t, os.WriteFile(path, nil, 0o640))
			}
			s := openStore(t, Options{Driver: DriverSQLite, Path: path}, &recordingSink{})
			a, err := s.dbFile.Stat()
			require.NoError(t, err)
			b, err := os.Stat(filepath.Join(dir, "qA.db"))
			require.NoError(t, err)
			require.True(t, os.SameFile(a, b), "the checkpointer syncs another file than SQLite's")
			require.True(t, os.SameFile(b, mustStat(t, s.sqliteFile)))
		})
	}
}

func mustStat(t *testing.T, path string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi
}
