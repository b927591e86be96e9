package queue

import (
	"context"
	"log/slog"
	"strings"
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
