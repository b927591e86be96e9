package queue

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A run of failed commits (a database outage) is logged as its start, a
// reminder a minute, and its end — not a line per commit.
func TestFailedCommitsAreLoggedAsARun(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var r failureRun
	r.succeeded(l) // no run: nothing to say
	for range 100 {
		r.failed(l, 3, errors.New("queue: begin: failed to connect: connection refused"))
	}
	r.mu.Lock()
	r.reminded = r.reminded.Add(-failureReminder) // a minute later
	r.mu.Unlock()
	r.failed(l, 1, errors.New("queue: begin: failed to connect: connection refused"))
	r.failed(l, 1, errors.New("queue: begin: failed to connect: connection refused"))
	r.succeeded(l)
	r.succeeded(l)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 3, buf.String())
	require.Contains(t, lines[0], "level=ERROR")
	require.Contains(t, lines[0], "connection refused")
	require.Contains(t, lines[1], "Store commits still failing")
	require.Contains(t, lines[1], "failed_commits=101")
	require.Contains(t, lines[2], "level=INFO")
	require.Contains(t, lines[2], "Store commits succeed again")
	require.Contains(t, lines[2], "failed_commits=102")

	buf.Reset()
	r.failed(l, 1, errors.New("disk full"))
	require.Contains(t, buf.String(), "disk full", "a new run is logged again")
}
