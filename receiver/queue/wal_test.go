package queue

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
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
// held it off).
func (w *walTest) catchUp() {
	w.s.catchUp.Store(true)
	require.Eventually(w.t, func() bool { w.s.catchUpWAL(); return !w.s.catchUp.Load() }, 10*time.Second, time.Millisecond)
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
	require.Equal(t, catchUpQuietAfterBusy, w.s.catchUpQuiet)
	for i := range catchUpQuietAfterBusy {
		w.write(fmt.Sprintf("c%d", i))
		w.catchUp()
		require.Equal(t, catchUpQuietAfterBusy-1-i, w.s.catchUpQuiet, "catch-up %d did not wait", i)
	}
	end()
	// The reader gone, the next catch-up waits again and starts the WAL over.
	before := w.restarts()
	w.write("d")
	w.catchUp()
	w.write("e")
	require.NotEqual(t, before, w.restarts())
	require.Zero(t, w.s.catchUpQuiet)
}
