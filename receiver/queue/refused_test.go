package queue

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// holdCommitter holds the SQLite intake committer until the returned
// function is called, so that what is submitted meanwhile is gathered in
// one batch. (PostgreSQL's two committers may split what is queued.)
func holdCommitter(t *testing.T, s *Store) func() {
	t.Helper()
	release, held := make(chan struct{}), make(chan struct{})
	go s.submit(context.Background(), func(ctx context.Context, b *batch) error { close(held); <-release; return nil }) //nolint:errcheck
	<-held
	var once sync.Once
	rel := func() { once.Do(func() { close(release) }) }
	t.Cleanup(rel)
	return rel
}

// refusedOp writes what the database refuses: a second row of a migration.
func refusedOp(ctx context.Context, b *batch) error {
	_, err := b.exec(ctx, `INSERT INTO alertfan_migration (version) VALUES (1)`)
	return err
}

// TestRefusedWriteFailsOnlyItsOwnRequest: a write the database refuses
// for its data (here a duplicate key) fails only the request it belongs
// to; the requests that shared its group commit are committed without it,
// and nothing the refused request wrote before its failing statement is.
// Before, the whole batch failed, at each of its sender's retries (on
// PostgreSQL a key over the B-tree limit or a NUL did this).
func TestRefusedWriteFailsOnlyItsOwnRequest(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			s := openStore(t, d.opts(t), &recordingSink{})
			ctx := context.Background()
			write := func(ref string) func(ctx context.Context, b *batch) error {
				return func(ctx context.Context, b *batch) error {
					_, err := b.exec(ctx, `INSERT INTO alertfan_history (aid, at, identity, event, ref) VALUES (0, 1, 'am:refused', 'call', ?)`, ref)
					return err
				}
			}
			refused := func(ctx context.Context, b *batch) error {
				if err := write("refused")(ctx, b); err != nil {
					return err
				}
				return refusedOp(ctx, b)
			}
			if d.name == "postgres" {
				// Its two committers may split what is queued: the batch
				// is made by hand.
				ops := []*op{{fn: write("before")}, {fn: refused}, {fn: write("after")}}
				require.NoError(t, s.commit(ops))
				require.NoError(t, ops[0].refused)
				require.Error(t, ops[1].refused)
				require.NoError(t, ops[2].refused)
				requireRefs(t, s, "before", "after")
				return
			}
			rel := holdCommitter(t, s)
			errs := map[string]chan error{"before": make(chan error, 1), "refused": make(chan error, 1), "after": make(chan error, 1)}
			for i, name := range []string{"before", "refused", "after"} {
				fn := write(name)
				if name == "refused" {
					fn = refused
				}
				go func() { errs[name] <- s.submit(ctx, fn) }()
				require.Eventually(t, func() bool { return len(s.ops) == i+1 }, 5*time.Second, time.Millisecond)
			}
			rel()
			require.NoError(t, <-errs["before"])
			require.NoError(t, <-errs["after"])
			require.Error(t, <-errs["refused"])
			requireRefs(t, s, "before", "after")
		})
	}
}

func requireRefs(t *testing.T, s *Store, want ...string) {
	t.Helper()
	rows, err := s.db.QueryContext(context.Background(), `SELECT ref FROM alertfan_history WHERE identity = 'am:refused' ORDER BY id`)
	require.NoError(t, err)
	defer rows.Close()
	var refs []string
	for rows.Next() {
		var ref string
		require.NoError(t, rows.Scan(&ref))
		refs = append(refs, ref)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, want, refs)
}

// TestAcceptRunAgainReportsTheSame: an Accept whose batch runs again
// (here another request's write was refused; on PostgreSQL also after a
// deadlock) reports what one run reports. The second run started from the
// updates the first had changed: the target holding the alert open was
// already among its items, and the sticky delivery was not counted.
func TestAcceptRunAgainReportsTheSame(t *testing.T) {
	sticky := func(status string) *Intake {
		it := item("am:sticky", status)
		return &Intake{Updates: []Update{{Identity: "am:sticky", Input: "alertmanager", Want: PhaseTriggered,
			StartsAt: time.Unix(1700000000, 0), Labels: []byte(`{"alertname":"sticky"}`),
			Sticky: func(target string) (Item, bool) { i := it; i.Target = target; return i, true }}}}
	}
	for _, withRefused := range []bool{false, true} {
		t.Run(map[bool]string{false: "alone", true: "beside a refused write"}[withRefused], func(t *testing.T) {
			s := openStore(t, drivers()[0].opts(t), &recordingSink{})
			ctx := context.Background()
			// The alert is open at r/pagerduty/0; its next update routes
			// nowhere, and goes there because that target holds it open.
			first := sticky("firing")
			first.Updates[0].Items = []Item{item("am:sticky", "firing")}
			_, err := s.Accept(ctx, first)
			require.NoError(t, err)
			rel := holdCommitter(t, s)
			type accepted struct {
				res Accepted
				err error
			}
			got := make(chan accepted, 1)
			go func() { r, err := s.Accept(ctx, sticky("firing again")); got <- accepted{r, err} }()
			require.Eventually(t, func() bool { return len(s.ops) == 1 }, 5*time.Second, time.Millisecond)
			refErr := make(chan error, 1)
			if withRefused {
				go func() { refErr <- s.submit(ctx, refusedOp) }()
				require.Eventually(t, func() bool { return len(s.ops) == 2 }, 5*time.Second, time.Millisecond)
			}
			rel()
			a := <-got
			require.NoError(t, a.err)
			if withRefused {
				require.Error(t, <-refErr)
			}
			require.Equal(t, 1, a.res.Sticky, "the sticky delivery, counted once")
		})
	}
}

// TestRefusedWritesAreTakenOutAFewAtATime: every op taken out costs a run
// of the ops before it; past maxRefusedOps a batch fails whole, as any
// batch with a refused write did before, instead of running its good ops
// once per refused one (256 good and 256 refused ops: 65,792 runs).
func TestRefusedWritesAreTakenOutAFewAtATime(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			s := openStore(t, d.opts(t), &recordingSink{})
			runs := 0
			good := func(ctx context.Context, b *batch) error { runs++; return nil }
			var ops []*op
			for range 8 {
				ops = append(ops, &op{fn: good})
			}
			for range maxRefusedOps + 2 {
				ops = append(ops, &op{fn: refusedOp})
			}
			require.Error(t, s.commit(ops), "the batch fails whole past the bound")
			require.Equal(t, 8*(maxRefusedOps+1), runs, "one run per op taken out, and the last")
			var taken int
			for _, o := range ops {
				if o.refused != nil {
					taken++
				}
			}
			require.Equal(t, maxRefusedOps, taken)
		})
	}
}
