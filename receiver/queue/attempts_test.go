package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
)

// switchSink is a target that is down (connection refused) until up is
// set, recording each key's failed calls and their times, and the keys it
// delivered once up.
type switchSink struct {
	up        atomic.Bool
	mu        sync.Mutex
	failed    map[string][]time.Time
	delivered map[string]bool
}

func newSwitchSink() *switchSink {
	return &switchSink{failed: map[string][]time.Time{}, delivered: map[string]bool{}}
}

func (p *switchSink) Deliver(ctx context.Context, n *sinks.Notification) error {
	call := sinks.CallFrom(ctx)
	call.Action = "trigger"
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.up.Load() {
		call.StatusCode = 202
		p.delivered[n.Key] = true
		return nil
	}
	p.failed[n.Key] = append(p.failed[n.Key], time.Now())
	return sinks.Retryable(sinks.ReasonNetwork, 0, errors.New("connection refused"))
}

func (p *switchSink) failures(key string) []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.failed[key]...)
}

// heldKeysCase enqueues keys in one job (one Enqueue: up to 16 keys a job)
// on a target that is down, waits for two dead letters, checks them with
// check, brings the target back, and requires every other key delivered:
// what waited while another key of its job probed was never charged.
func heldKeysCase(t *testing.T, opts Options, keys int, check func(t *testing.T, sink *switchSink, dl DeadLetter)) {
	t.Helper()
	sink := newSwitchSink()
	s := openStore(t, opts, sink)
	ctx := context.Background()
	var items []Item
	for i := range keys {
		items = append(items, item(fmt.Sprintf("k%d", i), "firing"))
	}
	require.NoError(t, s.Enqueue(ctx, items))
	require.Eventually(t, func() bool {
		dead, err := s.DeadLetters(ctx)
		return err == nil && len(dead) >= 2
	}, 90*time.Second, 20*time.Millisecond)

	// The listing tells the key that failed from the keys held beside it:
	// each key's attempts are its own failed calls.
	require.Eventually(t, func() bool {
		pending, err := s.Pending(ctx)
		require.NoError(t, err)
		for _, e := range pending {
			n := len(sink.failures(e.Key))
			if e.Attempts != n || (e.State == StateRetrying) != (n > 0) {
				return false
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond, "pending keys' attempts are their own failed calls")

	sink.up.Store(true)
	require.Eventually(t, func() bool {
		pending, err := s.Pending(ctx)
		return err == nil && len(pending) == 0
	}, 30*time.Second, 20*time.Millisecond)
	dead, err := s.DeadLetters(ctx)
	require.NoError(t, err)
	isDead := map[string]bool{}
	for _, dl := range dead {
		isDead[dl.Key] = true
		check(t, sink, dl)
	}
	for _, it := range items {
		sink.mu.Lock()
		delivered := sink.delivered[it.Key]
		sink.mu.Unlock()
		require.True(t, delivered != isDead[it.Key], "key %s: delivered %v, dead-lettered %v", it.Key, delivered, isDead[it.Key])
	}
}

// Waiting while the target is down never counts as an attempt (README): a
// key is dead-lettered as exhausted only after max_attempts calls of its
// own. Keys of one job shared the job's attempts, so each failed probe of
// one key spent an attempt of every key held beside it, and a key was
// dead-lettered after a single call (found by a fresh helper).
func TestHeldKeysSpendNoAttemptOfTheirJobMates(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			opts := d.opts(t)
			opts.MaxAttempts = 2
			heldKeysCase(t, opts, 4, func(t *testing.T, sink *switchSink, dl DeadLetter) {
				require.Equal(t, sinks.ReasonExhausted, dl.Reason)
				require.Equal(t, opts.MaxAttempts, dl.Attempts, "key %s", dl.Key)
				require.Len(t, sink.failures(dl.Key), opts.MaxAttempts, "key %s dead-lettered after its own calls only", dl.Key)
			})
		})
	}
}

// max_age runs from a key's own first failed call: a key held while its
// job mate probed the down target for longer than max_age was
// dead-lettered at its first call.
func TestMaxAgeRunsFromTheKeysOwnFirstFailure(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			opts := d.opts(t)
			opts.MaxAge = time.Second
			heldKeysCase(t, opts, 4, func(t *testing.T, sink *switchSink, dl DeadLetter) {
				require.Equal(t, sinks.ReasonExhausted, dl.Reason)
				calls := sink.failures(dl.Key)
				require.GreaterOrEqual(t, len(calls), 2, "key %s", dl.Key)
				require.GreaterOrEqual(t, calls[len(calls)-1].Sub(calls[0]), opts.MaxAge, "key %s dead-lettered before failing for max_age", dl.Key)
				require.Equal(t, len(calls), dl.Attempts)
			})
		})
	}
}
