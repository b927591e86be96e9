package queue

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// With readers always on the WAL (workers loading states while a queue
// drains), the writer's catch-up still starts the WAL over: a PASSIVE
// catch-up copied everything but left the WAL to grow to its limit, and
// the TRUNCATE there held intake for 150–220 ms (BENCHMARKS.md).
func TestCatchUpStartsTheWALOverUnderReaders(t *testing.T) {
	s := openStore(t, drivers()[0].opts(t), &recordingSink{})
	ctx := context.Background()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// A reader whose snapshot stays open a moment, as a
				// worker's does while it loads states.
				rows, err := s.rdb.QueryContext(ctx, `SELECT key FROM alertfan_state LIMIT 50`)
				if err != nil {
					continue
				}
				for rows.Next() {
				}
				time.Sleep(time.Millisecond)
				rows.Close()
			}
		}()
	}

	walFrames := func() int {
		s.ckMu.Lock()
		defer s.ckMu.Unlock()
		n, _, err := s.passiveCheckpoint(ctx)
		require.NoError(t, err)
		return n
	}
	write := func(round, part int) {
		items := make([]Item, 20)
		for i := range items {
			items[i] = item(fmt.Sprintf("wal-%d-%d-%d", round, part, i), "firing")
		}
		require.NoError(t, s.Enqueue(ctx, items))
	}
	restarts, rounds := 0, 20
	for round := range rounds {
		write(round, 0)
		before := walFrames() // the background checkpoint copied it all
		s.catchUp.Store(true)
		write(round, 1) // the catch-up runs after this batch …
		write(round, 2) // … and this one starts the WAL over
		if walFrames() < before {
			restarts++
		}
	}
	require.GreaterOrEqual(t, restarts, rounds/2, "the WAL was started over in %d of %d rounds", restarts, rounds)
}
