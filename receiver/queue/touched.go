package queue

import "sync"

// touched remembers when this process's intake last wrote each (target,
// key) state, for the last second or two, so that a delivery that waited
// for its turn reads its state again only when an update may have landed
// meanwhile. Re-reading after every wait cost ingest while a queue drains
// a fifth of its throughput (BENCHMARKS.md).
//
// Only SQLite's single process sees every write; on PostgreSQL another
// replica may have written, and Store.mayHaveChanged says so always.
type touched struct {
	mu sync.Mutex
	// cur holds marks since rotated, prev those from since to rotated:
	// together every mark since since.
	cur, prev      map[string]int64
	since, rotated int64
}

// touchedPeriod is how long marks are kept at least: past it a state is
// read again anyway (readStaleAfter).
const touchedPeriod = readStaleAfter

func touchedKey(target, key string) string { return target + "\x00" + key }

// mark records that a transaction which wrote the states of written,
// (target, key) pairs, committed by now (Unix nanoseconds). It is called
// after the commit: a state read before it may be older than the mark,
// never newer.
func (t *touched) mark(written [][2]string, now int64) {
	if len(written) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur == nil || now-t.rotated >= int64(touchedPeriod) {
		t.prev, t.cur = t.cur, make(map[string]int64, len(t.cur))
		t.since, t.rotated = t.rotated, now
	}
	for _, w := range written {
		t.cur[touchedKey(w[0], w[1])] = now
	}
}

// changedSince reports whether (target, key)'s state may have been written
// at or after at (Unix nanoseconds): a mark says so, and so does a time
// older than the marks kept.
func (t *touched) changedSince(target, key string, at int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur == nil {
		return false // nothing written since the process started
	}
	if at < t.since {
		return true
	}
	k := touchedKey(target, key)
	if w, ok := t.cur[k]; ok && w >= at {
		return true
	}
	w, ok := t.prev[k]
	return ok && w >= at
}
