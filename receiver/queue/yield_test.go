package queue

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestIntakeFirst(t *testing.T) {
	// calls starts n calls at once and returns how long they took to start.
	calls := func(t *testing.T, g *intakeFirst, n int) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := g.call(context.Background())
				require.NoError(t, err)
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	busy := func(g *intakeFirst) (exit func()) {
		var exits []func()
		for range busyAt {
			exits = append(exits, g.enter())
		}
		return func() {
			for _, e := range exits {
				e()
			}
		}
	}

	// unbounded says that calls neither waited nor took a turn (a time
	// bound on starting 200 goroutines failed on a starved -race run).
	unbounded := func(t *testing.T, g *intakeFirst, waits *atomic.Int64) {
		before := g.calls.TokensAt(time.Now())
		calls(t, g, 200)
		require.Zero(t, waits.Load(), "a call waited")
		require.GreaterOrEqual(t, g.calls.TokensAt(time.Now()), before, "a call took a turn")
	}

	t.Run("idle intake leaves deliveries unbounded", func(t *testing.T) {
		var waits atomic.Int64
		g := newIntakeFirst(func(float64) { waits.Add(1) })
		unbounded(t, g, &waits)
	})

	t.Run("a few requests at a time are not busy", func(t *testing.T) {
		var waits atomic.Int64
		g := newIntakeFirst(func(float64) { waits.Add(1) })
		for range busyAt - 1 {
			defer g.enter()()
		}
		unbounded(t, g, &waits)
	})

	t.Run("busy intake paces the calls' starts and counts the waits", func(t *testing.T) {
		var waited atomic.Int64
		g := newIntakeFirst(func(s float64) { waited.Add(int64(s * 1e9)) })
		defer busy(g)()
		// 200 calls at busyCallRate take about 200 ms to start.
		took := calls(t, g, 200)
		require.Greater(t, took, 150*time.Millisecond)
		require.Positive(t, waited.Load())
	})

	t.Run("a call holds nothing: a hung one costs the others nothing", func(t *testing.T) {
		g := newIntakeFirst(nil)
		defer busy(g)()
		_, err := g.call(context.Background()) // and it never ends
		require.NoError(t, err)
		// Paced, 10 calls start in ~10 ms; a call that held its turn
		// until it ended would keep them waiting for ever.
		require.Less(t, calls(t, g, 10), 5*time.Second)
	})

	t.Run("intake stays busy for busyHold after the crowd leaves", func(t *testing.T) {
		g := newIntakeFirst(nil)
		exit := busy(g)
		before := time.Now()
		exit()
		after := time.Now()
		// The hold runs from the exit, which is between before and after
		// (times read after it would depend on not being descheduled).
		require.True(t, g.busy(before.Add(busyHold-time.Millisecond)), "a group commit answers many at once; they come back")
		require.False(t, g.busy(after.Add(busyHold+time.Millisecond)))
	})

	// heavyAt makes deliveries start calls at rate a second from t0 on,
	// for a window and a bit, and returns when that ends.
	heavyAt := func(g *intakeFirst, t0 time.Time, rate int) time.Time {
		n := rate * int(heavyWindow/time.Millisecond) * 12 / 10000 // a window and a fifth
		step := heavyWindow * 12 / 10 / time.Duration(n)
		now := t0
		for range n {
			g.started(now)
			now = now.Add(step)
		}
		return now
	}

	t.Run("a slow accept while deliveries are heavy makes intake busy for slowHold", func(t *testing.T) {
		g := newIntakeFirst(nil)
		now := heavyAt(g, time.Now(), 3*heavyCallRate)
		require.False(t, g.busy(now), "one or two requests at a time are not busy")
		g.accepted(now, now.Add(-time.Millisecond)) // the store's own cost
		g.accepted(now, now.Add(-slowAt-2*time.Millisecond))
		require.True(t, g.busy(now))
		require.True(t, g.busy(now.Add(slowHold-time.Millisecond)))
		require.False(t, g.busy(now.Add(slowHold+time.Millisecond)))
	})

	t.Run("a quick accept paces nothing, however heavy the deliveries", func(t *testing.T) {
		g := newIntakeFirst(nil)
		now := heavyAt(g, time.Now(), 3*heavyCallRate)
		g.accepted(now, now.Add(-slowAt))
		require.False(t, g.busy(now))
	})

	t.Run("a slow accept while deliveries are light paces nothing", func(t *testing.T) {
		// The flow busyCallRate is sized for: pacing its own deliveries at
		// the rate it needs would queue them (accept → delivered).
		g := newIntakeFirst(nil)
		now := heavyAt(g, time.Now(), busyCallRate)
		g.accepted(now, now.Add(-time.Millisecond))
		g.accepted(now, now.Add(-time.Second))
		require.False(t, g.busy(now))
	})

	t.Run("the delivery rate counts the time a window really lasted", func(t *testing.T) {
		// 2,500 calls over 10 s (nothing rolled the window meanwhile) are
		// 250 a second, not 2,500 in a window.
		g := newIntakeFirst(nil)
		t0 := time.Now()
		g.started(t0)
		for i := range 2499 {
			g.started(t0.Add(10 * time.Millisecond).Add(time.Duration(i) * time.Microsecond))
		}
		later := t0.Add(10 * time.Second)
		require.False(t, g.heavy(later))
		g.accepted(later, later.Add(-time.Millisecond))
		g.accepted(later, later.Add(-time.Second))
		require.False(t, g.busy(later))
	})

	t.Run("a cancelled wait returns the context's error and gives its turn back", func(t *testing.T) {
		g := newIntakeFirst(nil)
		defer busy(g)()
		for range 100 {
			g.calls.Reserve() // turns taken up to 100 ms ahead
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := g.call(ctx)
		require.ErrorIs(t, err, context.Canceled)
	})
}

// A delivery that waited for intake's turn while shutdown began hands its
// key back uncalled: the turn comes before the shutdown check.
func TestNoCallAfterShutdownBeganWhileWaitingForIntake(t *testing.T) {
	sink := &recordingSink{}
	s := openStore(t, drivers()[0].opts(t), sink)
	ctx := context.Background()
	exit := busyIntake(s)
	// Turns 3 s ahead: a delivery started now waits for its turn. (Half a
	// second was not always enough for the job to be fetched and reach
	// its turn on a starved -race run; its turn then came at once.)
	now := time.Now()
	const ahead = 3000
	queued := takeTurns(t, s, ahead)
	require.NoError(t, s.Enqueue(ctx, []Item{item("shutdown-wait", "firing")}))
	queued(3 * time.Second)
	s.draining.Store(true)
	exit()
	// Its turn comes within the 3 s; then it hands the key back.
	require.Eventually(t, func() bool {
		var running int
		require.NoError(t, s.rdb.QueryRow(`SELECT COUNT(*) FROM river_job WHERE state = 'running'`).Scan(&running))
		return running == 0 && time.Since(now) > ahead*time.Second/busyCallRate
	}, 15*time.Second, 10*time.Millisecond)
	require.Empty(t, sink.all(), "no call may start once shutdown began")
}

// takeTurns takes the next n of intake's turns, as n deliveries waiting
// for them would, and returns a wait (at most within) for one more
// delivery to queue for its turn.
func takeTurns(t *testing.T, s *Store, n int) (queued func(within time.Duration)) {
	now := time.Now()
	tokens := s.intake.calls.TokensAt(now)
	for range n {
		s.intake.calls.ReserveN(now, 1)
	}
	return func(within time.Duration) {
		require.Eventually(t, func() bool {
			at := time.Now()
			taken := tokens + at.Sub(now).Seconds()*busyCallRate - s.intake.calls.TokensAt(at)
			return taken > float64(n)+0.5
		}, within, time.Millisecond, "a delivery queued for its turn")
	}
}

func busyIntake(s *Store) (exit func()) {
	var exits []func()
	for range busyAt {
		exits = append(exits, s.intake.enter())
	}
	// Keep it busy past busyHold while the test runs.
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(busyHold / 2)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s.intake.enter()()
			}
		}
	}()
	return func() {
		close(stop)
		for _, e := range exits {
			e()
		}
	}
}
