package receiver

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// TestTargetFailuresLoggedPerStateChange: a target that is down for many
// deliveries is logged once when it starts failing and once when it
// delivers again (with the count), never once per attempt; each outcome
// is at debug; alerts dropped to a receiver without destinations too.
func TestTargetFailuresLoggedPerStateChange(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	pd.SetDown(true)
	ts := startServer(t, pdConfig(pd.EventsURL(), `  - name: nowhere
`)+"")
	for i := 0; i < 20; i++ {
		code, _ := ts.post(t, "/webhook", firing(fmt.Sprintf("A%d", i), "h1"))
		require.Equal(t, 200, code)
	}
	require.Eventually(t, func() bool { return pd.Attempts() >= 3 }, 20*time.Second, 20*time.Millisecond)
	time.Sleep(2 * time.Second) // a few probes while it is down
	pd.SetDown(false)
	require.Eventually(t, func() bool { return len(pd.Events()) >= 20 }, 20*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return strings.Contains(ts.logs.String(), "Target is back") }, 10*time.Second, 20*time.Millisecond)

	logs := ts.logs.String()
	warn := 0
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, "oncall/pagerduty/0") {
			warn++
		}
	}
	require.Equal(t, 1, warn, "one warn line for the whole outage:\n%s", logs)
	require.Contains(t, logs, `level=WARN msg="Target is down; holding its deliveries and probing it with one call at a time" target=oncall/pagerduty/0`)
	require.Regexp(t, `level=INFO msg="Target is back; releasing its waiting deliveries" target=oncall/pagerduty/0 down_for=\S+ failed_calls=\d+`, logs)
	require.Contains(t, logs, `level=DEBUG msg="Delivery failed; will retry"`, "per-attempt lines are debug")
	require.Contains(t, logs, `level=DEBUG msg=Delivered target=oncall/pagerduty/0`)

	code, _ := ts.post(t, "/webhook/nowhere", firing("Z", "h1"))
	require.Equal(t, 200, code)
	require.Contains(t, ts.logs.String(), `level=DEBUG msg="Alert dropped: its receiver has no destinations" input=alertmanager receiver=nowhere alertname=Z`)
}

// TestRiverErrorFloodCollapsed: identical River errors (PostgreSQL away)
// become one line per minute with the count of the ones left out.
func TestRiverErrorFloodCollapsed(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(newQuietHandler(slog.NewTextHandler(&buf, nil)))
	river := logger.With("component", "river")
	ctx := context.Background()
	start := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	emit := func(l *slog.Logger, at time.Time, msg string) {
		r := slog.NewRecord(at, slog.LevelError, msg, 0)
		require.NoError(t, l.Handler().Handle(ctx, r))
	}
	for i := 0; i < 100; i++ { // 20 per second for 5 s
		emit(river, start.Add(time.Duration(i)*50*time.Millisecond), "producer: error fetching jobs")
	}
	emit(river, start.Add(2*time.Second), "elector: error attempting election")
	emit(river, start.Add(61*time.Second), "producer: error fetching jobs")
	emit(logger, start, "Store commit failed") // not River's: untouched
	emit(logger, start, "Store commit failed")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 5, buf.String())
	require.Contains(t, lines[2], "repeated_in_last_minute=99")
}
