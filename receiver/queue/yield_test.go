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
	t.Run("idle intake leaves deliveries unbounded", func(t *testing.T) {
		g := newIntakeFirst(nil)
		var releases []func()
		for range 10 {
			r, err := g.call(context.Background())
			require.NoError(t, err)
			releases = append(releases, r)
		}
		for _, r := range releases {
			r()
		}
	})

	t.Run("one request at a time is not busy", func(t *testing.T) {
		g := newIntakeFirst(nil)
		for range busyAt - 1 {
			defer g.enter()()
		}
		for range 10 {
			r, err := g.call(context.Background())
			require.NoError(t, err)
			defer r()
		}
	})

	t.Run("busy intake lets one call through at a time and waits are counted", func(t *testing.T) {
		var waited atomic.Int64
		g := newIntakeFirst(func(s float64) { waited.Add(int64(s * 1e9)) })
		var exits []func()
		for range busyAt {
			exits = append(exits, g.enter())
		}
		first, err := g.call(context.Background())
		require.NoError(t, err)
		got := make(chan func(), 1)
		go func() {
			r, err := g.call(context.Background())
			if err == nil {
				got <- r
			}
		}()
		select {
		case <-got:
			t.Fatal("a second call ran while intake was busy and the slot was held")
		case <-time.After(5 * time.Millisecond):
		}
		first()
		select {
		case r := <-got:
			r()
		case <-time.After(time.Second):
			t.Fatal("the waiting call never got the slot")
		}
		require.Positive(t, waited.Load())
		for _, e := range exits {
			e()
		}
	})

	t.Run("intake going idle releases every waiting call", func(t *testing.T) {
		g := newIntakeFirst(nil)
		var exits []func()
		for range busyAt {
			exits = append(exits, g.enter())
		}
		hold, err := g.call(context.Background())
		require.NoError(t, err)
		defer hold()
		var wg sync.WaitGroup
		var ran atomic.Int32
		for range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := g.call(context.Background())
				if err == nil {
					ran.Add(1)
					r()
				}
			}()
		}
		time.Sleep(5 * time.Millisecond)
		for _, e := range exits {
			e()
		}
		wg.Wait()
		require.EqualValues(t, 5, ran.Load())
	})

	t.Run("intake stays busy for busyHold after the crowd leaves", func(t *testing.T) {
		g := newIntakeFirst(nil)
		var exits []func()
		for range busyAt {
			exits = append(exits, g.enter())
		}
		for _, e := range exits {
			e()
		}
		left := time.Now()
		require.True(t, g.busy(left), "a group commit answers many at once; they come back")
		require.False(t, g.busy(left.Add(busyHold+time.Millisecond)))
	})

	t.Run("a slow call gives its slot back after slotHold", func(t *testing.T) {
		g := newIntakeFirst(nil)
		for range busyAt {
			defer g.enter()()
		}
		slow, err := g.call(context.Background())
		require.NoError(t, err)
		defer slow() // still running: a hung target
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := g.call(ctx)
		require.NoError(t, err, "the next call must not wait for a hung one")
		r()
	})

	t.Run("a cancelled wait returns the context's error", func(t *testing.T) {
		g := newIntakeFirst(nil)
		for range busyAt {
			defer g.enter()()
		}
		hold, err := g.call(context.Background())
		require.NoError(t, err)
		defer hold()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err = g.call(ctx)
		require.ErrorIs(t, err, context.Canceled)
	})
}
