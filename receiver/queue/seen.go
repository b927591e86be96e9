package queue

import (
	"hash/maphash"
	"sync/atomic"
)

// seenFilter remembers, approximately, which alert identities have an
// alertfan_alert row, so intake can skip reading the row of an alert it has
// never seen. A storm is mostly such alerts: for them one INSERT that does
// nothing on a conflict replaces a SELECT that finds nothing and then an
// upsert (one statement less per alert on the single writer).
//
// It is a hint, never the truth: "maybe seen" (set bit, or a hash
// collision) takes the read-first path, which is always correct; "not
// seen" takes the insert-first path, which falls back to the read-first
// path when the row exists after all (a restart, another replica, a
// filter that was reset). A rolled-back transaction leaves bits set for
// rows that do not exist: again only the read-first path.
type seenFilter struct {
	seed  maphash.Seed
	bits  []atomic.Uint64
	count atomic.Int64 // bits set, roughly: the filter resets at half full
}

// seenFilterBits is the filter's size: 2^21 bits, 256 KiB. Half full is
// ~1M identities, after which it starts over.
const seenFilterBits = 1 << 21

func newSeenFilter() *seenFilter {
	return &seenFilter{seed: maphash.MakeSeed(), bits: make([]atomic.Uint64, seenFilterBits/64)}
}

func (f *seenFilter) pos(identity string) (int, uint64) {
	h := maphash.String(f.seed, identity) % seenFilterBits
	return int(h / 64), 1 << (h % 64)
}

// maybe reports whether identity may have an alert row.
func (f *seenFilter) maybe(identity string) bool {
	w, m := f.pos(identity)
	return f.bits[w].Load()&m != 0
}

// add records that identity has (or is about to have) an alert row.
func (f *seenFilter) add(identity string) {
	w, m := f.pos(identity)
	if f.bits[w].Or(m)&m != 0 {
		return
	}
	if f.count.Add(1) > seenFilterBits/2 {
		// Half the bits set: most lookups would say "maybe". Start over;
		// the identities seen since are learned again as they come.
		f.count.Store(0)
		for i := range f.bits {
			f.bits[i].Store(0)
		}
	}
}
