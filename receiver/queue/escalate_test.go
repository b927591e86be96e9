package queue

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
)

// aheadSink plans warnings an hour ahead and better classes at once, as a
// target's limiter does behind a storm of warnings, and records what it
// was given back.
type aheadSink struct {
	recordingSink
	mu       sync.Mutex
	released map[int]int // class: calls given back
}

func (a *aheadSink) Schedule(n, class int) time.Duration {
	if class >= sinks.PriorityWarning {
		return time.Hour
	}
	return 0
}

func (a *aheadSink) Unschedule(n, class int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.released[class] += n
}

var _ scheduler = (*aheadSink)(nil)

// A key queued behind the storm as a warning whose next update asks a
// better class (critical) leaves its job for one of that class, keeping
// its seq, and is delivered at once with the newest content; the other
// keys of its job keep their place, and the moved key's booking is given
// back.
func TestEscalatedKeyMovesToABetterJob(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			sink := &aheadSink{released: map[int]int{}}
			s := openStore(t, d.opts(t), sink)
			ctx := context.Background()
			warn := func(key, severity string, class int) Item {
				it := item(key, sinks.StatusFiring)
				it.Digest, it.Priority = severity, class
				var n sinks.Notification
				require.NoError(t, json.Unmarshal(it.Payload, &n))
				n.Alerts[0].Labels["severity"] = severity
				it.Payload, _ = json.Marshal(n)
				return it
			}
			require.NoError(t, s.Enqueue(ctx, []Item{warn("a", "warning", sinks.PriorityWarning), warn("b", "warning", sinks.PriorityWarning)}))
			var id int64
			require.NoError(t, s.db.QueryRowContext(ctx, `SELECT id FROM river_job WHERE state = 'scheduled'`).Scan(&id))

			require.NoError(t, s.Enqueue(ctx, []Item{warn("a", "critical", sinks.PriorityCritical)}))
			require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 10*time.Second, 20*time.Millisecond, "the escalated key is delivered")
			got := sink.all()[0]
			require.Equal(t, "a", got.Key)
			require.Equal(t, "critical", got.Alerts[0].Labels["severity"], "the newest content")

			var raw []byte
			args := `args`
			if s.dialect == dialectSQLite {
				args = `json(args)`
			}
			require.NoError(t, s.db.QueryRowContext(ctx, s.rebind(`SELECT `+args+` FROM river_job WHERE id = ?`), id).Scan(&raw))
			var old deliverArgs
			require.NoError(t, json.Unmarshal(raw, &old))
			require.Equal(t, []keySeq{{Key: "b", Seq: 1}}, old.Keys, "b keeps its place; a left the job")
			var class int
			require.NoError(t, s.db.QueryRowContext(ctx, `SELECT class FROM alertfan_state WHERE key = 'a'`).Scan(&class))
			require.Equal(t, sinks.PriorityCritical, class)
			sink.mu.Lock()
			require.Equal(t, 1, sink.released[sinks.PriorityWarning], "a's booking as a warning is given back")
			sink.mu.Unlock()
			require.Equal(t, 1.0, counterValue(t, s, "alertfan_queue_escalated_keys_total"))

			// A worse class asks nothing: b stays where it is.
			require.NoError(t, s.Enqueue(ctx, []Item{warn("b", "info", sinks.PriorityInfo)}))
			time.Sleep(2*replanEvery + 500*time.Millisecond)
			require.Len(t, sink.all(), 1)
			require.Equal(t, 1.0, counterValue(t, s, "alertfan_queue_escalated_keys_total"))
		})
	}
}

// parkingSink's limiter parks the first call for 3 s: its job snoozes
// as available for later, where the re-planner does not look.
type parkingSink struct {
	recordingSink
	parked atomic.Bool
}

func (p *parkingSink) Admit(class int) time.Duration {
	if p.parked.CompareAndSwap(false, true) {
		return 3 * time.Second
	}
	return 0
}

var _ admitter = (*parkingSink)(nil)

// A job that comes back from a short park moves its escalated keys itself
// before it calls.
func TestEscalatedKeyOfAParkedJob(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			sink := &parkingSink{}
			s := openStore(t, d.opts(t), sink)
			ctx := context.Background()
			it := item("a", sinks.StatusFiring)
			it.Priority = sinks.PriorityWarning
			require.NoError(t, s.Enqueue(ctx, []Item{it}))
			require.Eventually(t, sink.parked.Load, 10*time.Second, 10*time.Millisecond)
			it.Priority, it.Digest = sinks.PriorityCritical, "critical"
			require.NoError(t, s.Enqueue(ctx, []Item{it}))
			require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 10*time.Second, 20*time.Millisecond)
			require.Equal(t, 1.0, counterValue(t, s, "alertfan_queue_escalated_keys_total"))
			require.Eventually(t, func() bool {
				var n int
				require.NoError(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM river_job WHERE state <> 'completed'`).Scan(&n))
				return n == 0
			}, 10*time.Second, 20*time.Millisecond, "the parked job completes without its key")
		})
	}
}
