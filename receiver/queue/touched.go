package queue

import (
	"math"
	"sync"
	"time"
)

// touched remembers when this process's intake last wrote each (target,
// key) state, for the last second or two, so that a delivery reads its
// state again before its call only when an update may have landed since
// it was read. Re-reading after every wait cost ingest while a queue
// drains a fifth of its throughput, and re-reading every state read 10 ms
// before its call a drain 30% of its events/s (BENCHMARKS.md).
//
// Only SQLite's single process sees every write; on PostgreSQL another
// replica may have written (Store.mayHaveChanged). Times are kept on the
// monotonic clock, so a step of the wall clock cannot hide a write.
type touched struct {
	mu    sync.RWMutex // deliveries read it on every call; commits write it
	epoch time.Time    // the monotonic origin of the marks
	// cur holds marks since rotated, prev those from since to rotated:
	// together every mark since since (offsets from epoch).
	cur, prev      map[[2]string]time.Duration // by (target, key)
	since, rotated time.Duration
}

// touchedPeriod is how long marks are kept at least: past it a state is
// read again anyway (readStaleAfter).
const touchedPeriod = readStaleAfter

// mark records that a transaction which wrote the states of written,
// (target, key) pairs, committed by now. It is called after the commit: a
// state read before it may be older than the mark, never newer.
func (t *touched) mark(written [][2]string, now time.Time) {
	if len(written) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.epoch.IsZero() {
		t.epoch = now
	}
	at := now.Sub(t.epoch)
	switch {
	case t.cur == nil:
		// Nothing was written before: the first marks cover all time.
		t.cur, t.since, t.rotated = map[[2]string]time.Duration{}, math.MinInt64, at
	case at-t.rotated >= touchedPeriod:
		t.prev, t.cur = t.cur, make(map[[2]string]time.Duration, len(t.cur))
		t.since, t.rotated = t.rotated, at
	}
	for _, w := range written {
		t.cur[w] = at
	}
}

// changedSince reports whether (target, key)'s state may have been written
// at or after at: a mark says so, and so does a time older than the marks
// kept.
func (t *touched) changedSince(target, key string, at time.Time) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.cur == nil {
		return false // nothing written since the process started
	}
	since := at.Sub(t.epoch)
	if since < t.since {
		return true
	}
	k := [2]string{target, key}
	if w, ok := t.cur[k]; ok && w >= since {
		return true
	}
	w, ok := t.prev[k]
	return ok && w >= since
}
