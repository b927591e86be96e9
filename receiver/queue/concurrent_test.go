package queue

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/sinks"
)

// TestConcurrentUpdatesOfOneAlertSerialize: two updates of one alert
// that arrive together (an acknowledge and a resolve from a PagerDuty
// Events client; an Alertmanager resolve and an HA peer's late firing)
// end as if they had come one after the other, in either order: resolved.
// On PostgreSQL, intake's committers (4 per process, and every replica's)
// run at once; a fresh helper (70) saw 4–13 of 50 alerts end acknowledged
// or firing, with a second trigger after the resolve, when each read the
// alert's row before the other wrote it.
func TestConcurrentUpdatesOfOneAlertSerialize(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			sink := &recordingSink{}
			opts := d.opts(t)
			s := openStore(t, opts, sink)
			ctx := context.Background()
			const n = 60
			t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
			update := func(id string, ordered bool, want Phase, starts, ends time.Time) Update {
				it := item(id, "firing")
				if want == PhaseResolved {
					it = item(id, sinks.StatusResolved)
				}
				it.Want, it.Digest = want, string(want)
				return Update{Identity: id, Input: "test", Want: want, Ordered: ordered, StartsAt: starts, EndsAt: ends,
					Labels: []byte(`{"alertname":"` + id + `"}`), Items: []Item{it}}
			}
			accept := func(u Update) {
				_, err := s.Accept(ctx, &Intake{Updates: []Update{u}})
				require.NoError(t, err)
			}
			var ids []string
			for i := range n {
				ids = append(ids, fmt.Sprintf("pd:%d", i), fmt.Sprintf("am:%d", i))
			}
			for i := range n {
				accept(update(ids[2*i], false, PhaseTriggered, t0, time.Time{}))
				accept(update(ids[2*i+1], true, PhaseTriggered, t0, time.Time{}))
			}
			// Everything at once: per PagerDuty alert an acknowledge and a
			// resolve, per Alertmanager alert its resolve and a copy of the
			// firing with the same startsAt.
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				for _, u := range []Update{
					update(ids[2*i], false, PhaseAcknowledged, t0, time.Time{}),
					update(ids[2*i], false, PhaseResolved, t0, time.Time{}),
					update(ids[2*i+1], true, PhaseResolved, t0, t0.Add(30*time.Second)),
					update(ids[2*i+1], true, PhaseTriggered, t0, time.Time{}),
				} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						accept(u)
					}()
				}
			}
			close(start)
			wg.Wait()
			for _, id := range ids {
				var status string
				require.NoError(t, s.db.QueryRowContext(ctx, s.rebind(`SELECT status FROM alertfan_alert WHERE identity = ?`), id).Scan(&status))
				require.Equal(t, string(PhaseResolved), status, "alert %s", id)
				var want string
				require.NoError(t, s.db.QueryRowContext(ctx, s.rebind(`SELECT want FROM alertfan_state WHERE key = ?`), id).Scan(&want))
				require.Equal(t, string(PhaseResolved), want, "state of %s", id)
			}
			// The target ends with every alert resolved, and nothing
			// after a key's resolve (a resolve that came before its
			// trigger went out folds both into no call).
			require.Eventually(t, func() bool {
				last := map[string]string{}
				for _, got := range sink.all() {
					last[got.Key] = got.Status()
				}
				for _, id := range ids {
					if l := last[id]; l != "" && l != sinks.StatusResolved {
						return false
					}
				}
				return true
			}, 20*time.Second, 20*time.Millisecond)
		})
	}
}

// TestHACopiesOnTwoReplicasDoNotDeadlock: an HA pair of Alertmanagers
// sends each notification to two replicas, whose batches then hold the
// same alerts, gathered in other orders. Each batch locks its alerts in
// one order first (sqlLockKeys), so neither waits for the other while
// holding what the other waits for: no deadlock, no batch run again. A
// fresh helper (70) saw PostgreSQL break 122 deadlocks in a few minutes,
// and on a slow link the reruns pushed batches past their deadline.
func TestHACopiesOnTwoReplicasDoNotDeadlock(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	// Deliveries wait until intake is done: their records take no locks
	// and may deadlock with an intake batch, rarely, and run again (see
	// sqlLockKeys); intake's batches among themselves never do.
	sink := &recordingSink{block: make(chan struct{})}
	defer close(sink.block)
	ts := func() map[string]Target { return map[string]Target{"r/pagerduty/0": target("0", destA, sink)} }
	a, b := openReplica(t, dsn, ts()), openReplica(t, dsn, ts())
	ctx := context.Background()
	const notifications, perNotification = 48, 5
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	intake := func(n int, status string) *Intake {
		in := &Intake{}
		for j := range perNotification {
			id := fmt.Sprintf("ha:%d:%d", n, j)
			want := PhaseTriggered
			if status == sinks.StatusResolved {
				want = PhaseResolved
			}
			in.Updates = append(in.Updates, Update{Identity: id, Input: "alertmanager", Want: want, Ordered: true, StartsAt: t0, EndsAt: t0.Add(time.Second),
				Labels: []byte(`{"alertname":"` + id + `"}`), Items: []Item{item(id, status)}})
		}
		return in
	}
	for _, status := range []string{"firing", sinks.StatusResolved} {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for n := range notifications {
			// a gets them in one order, b in the other.
			for _, to := range []struct {
				s *Store
				n int
			}{{a, n}, {b, notifications - 1 - n}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, err := to.s.Accept(ctx, intake(to.n, status))
					require.NoError(t, err)
				}()
			}
		}
		close(start)
		wg.Wait()
	}
	require.Zero(t, counterValue(t, a, "alertfan_store_commit_reruns_total")+counterValue(t, b, "alertfan_store_commit_reruns_total"), "batches run again after a deadlock")
	var open int
	require.NoError(t, a.db.QueryRowContext(ctx, `SELECT count(*) FROM alertfan_alert WHERE status <> 'resolved'`).Scan(&open))
	require.Zero(t, open)
}

func TestLockKeys(t *testing.T) {
	names := func(n int) []string {
		var s []string
		for i := range n {
			s = append(s, fmt.Sprintf("a:%d", i))
		}
		return s
	}
	for _, tc := range []struct {
		name  string
		ops   [][]string
		keys  int // after lockAll
		alone bool
	}{
		{"no names", [][]string{nil, nil}, -1, false},
		{"one name", [][]string{{"x"}}, 1, false},
		{"a name twice, an identity and its key", [][]string{{"x", "x"}, {"x"}, {"y"}}, 2, false},
		{"at the bound", [][]string{names(maxBatchLocks)}, maxBatchLocks, false},
		{"past the bound: the deployment-wide lock alone", [][]string{names(maxBatchLocks + 1)}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ops []*op
			for _, l := range tc.ops {
				ops = append(ops, &op{locks: l})
			}
			keys, alone := lockKeys(ops)
			require.Equal(t, tc.alone, alone)
			if tc.keys < 0 {
				require.Empty(t, keys)
				return
			}
			require.Len(t, keys, tc.keys+1)
			require.Equal(t, lockAll, keys[0], "the deployment-wide lock first")
			require.True(t, slices.IsSorted(keys[1:]), "ascending: every batch in one order")
		})
	}
}

// TestLargeNotificationTakesTheStoreAlone: a notification of more alerts
// than a batch may lock one by one (maxBatchLocks) is committed under the
// deployment-wide lock, beside small ones on another replica, without
// exhausting PostgreSQL's lock table, and every alert of both is stored.
func TestLargeNotificationTakesTheStoreAlone(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	sink := &recordingSink{}
	ts := func() map[string]Target { return map[string]Target{"r/pagerduty/0": target("0", destA, sink)} }
	a, b := openReplica(t, dsn, ts()), openReplica(t, dsn, ts())
	ctx := context.Background()
	t0 := time.Now().Add(-time.Minute)
	intake := func(prefix string, n int) *Intake {
		in := &Intake{}
		for j := range n {
			id := fmt.Sprintf("%s:%d", prefix, j)
			in.Updates = append(in.Updates, Update{Identity: id, Input: "alertmanager", Want: PhaseTriggered, Ordered: true, StartsAt: t0,
				Labels: []byte(`{"alertname":"` + id + `"}`), Items: []Item{item(id, "firing")}})
		}
		return in
	}
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := a.Accept(ctx, intake(fmt.Sprintf("large%d", i), 3*maxBatchLocks))
			require.NoError(t, err)
		}()
	}
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := b.Accept(ctx, intake(fmt.Sprintf("small%d", i), 5))
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	var n int
	require.NoError(t, a.db.QueryRowContext(ctx, `SELECT count(*) FROM alertfan_alert`).Scan(&n))
	require.Equal(t, 3*3*maxBatchLocks+40*5, n)
}
