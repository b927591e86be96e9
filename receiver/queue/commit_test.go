package queue

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/logrun"
	"github.com/alertfan/alertfan/internal/testenv"
)

// A run of failed commits (a database outage) is logged as its start and
// its end, not a line per commit (logrun has the reminders); a success
// between failures (a flapping link) does not end it.
func TestFailedCommitsAreLoggedAsARun(t *testing.T) {
	logs := &testenv.LogBuffer{}
	s := openStoreWith(t, drivers()[0].opts(t), &recordingSink{}, func(s *Store) {
		s.logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	ctx := context.Background()
	fail := func(n int) {
		for range n {
			require.ErrorIs(t, s.submit(ctx, func(context.Context, *batch) error { return errInjected }), errInjected)
		}
	}
	succeed := func() { require.NoError(t, s.submit(ctx, func(context.Context, *batch) error { return nil })) }
	fail(30)
	succeed() // flapping: too soon after a failure to end the run
	fail(20)
	time.Sleep(logrun.Settle)
	succeed()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(l, "Store commit") {
			lines = append(lines, l)
		}
	}
	require.Len(t, lines, 2, logs.String())
	require.Contains(t, lines[0], "level=ERROR")
	require.Contains(t, lines[0], "injected store failure")
	require.Contains(t, lines[1], "level=INFO")
	require.Contains(t, lines[1], "failed_commits=50")
}

// Delivery outcomes (acks) never wait behind intake's queued batches. On
// SQLite's one writer they join the batch intake's committer gathers next
// (sharing its fsync: a lane of their own made intake wait for the
// connection instead); on PostgreSQL they commit on a lane of their own
// while every intake committer is busy.
func TestAcksDoNotWaitBehindIntake(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			s := openStore(t, d.opts(t), &recordingSink{})
			ctx := context.Background()
			release := make(chan struct{})
			var releaseOnce sync.Once
			unblock := func() { releaseOnce.Do(func() { close(release) }) }
			t.Cleanup(unblock) // a failed check must not leave the committers blocked
			var busy sync.WaitGroup
			started := make(chan struct{})
			committers := 1
			if s.dialect == dialectPostgres {
				committers = 4
			}
			for range committers {
				busy.Add(1)
				go func() {
					defer busy.Done()
					require.NoError(t, s.submit(ctx, func(context.Context, *batch) error {
						started <- struct{}{}
						<-release
						return nil
					}))
				}()
				<-started // the next one goes to another committer
			}

			var mu sync.Mutex
			seen := map[*batch]int{}
			record := func(_ context.Context, b *batch) error {
				mu.Lock()
				defer mu.Unlock()
				seen[b]++
				return nil
			}
			var done sync.WaitGroup
			for range 3 {
				done.Add(2)
				go func() { defer done.Done(); require.NoError(t, s.submitTo(ctx, s.acks, record)) }()
				go func() { defer done.Done(); require.NoError(t, s.submit(ctx, record)) }()
			}
			if s.dialect == dialectPostgres {
				require.Eventually(t, func() bool {
					mu.Lock()
					defer mu.Unlock()
					n := 0
					for _, k := range seen {
						n += k
					}
					return n == 3
				}, 10*time.Second, 5*time.Millisecond, "the acks commit while every intake committer is busy")
				unblock()
				done.Wait()
				busy.Wait()
				return
			}
			require.Eventually(t, func() bool { return len(s.ops) == 3 && len(s.acks) == 3 }, 5*time.Second, time.Millisecond, "intake's ops and the acks wait for the one writer")
			unblock()
			done.Wait()
			busy.Wait()
			require.Len(t, seen, 1, "intake's three ops and the three acks waiting commit in one batch")
			for _, n := range seen {
				require.Equal(t, 6, n)
			}
		})
	}
}
