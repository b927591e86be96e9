package queue

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
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
	// each key's attempts are its own failed calls, with its own error.
	require.Eventually(t, func() bool {
		pending, err := s.Pending(ctx)
		require.NoError(t, err)
		for _, e := range pending {
			n := len(sink.failures(e.Key))
			if e.Attempts != n || (e.State == StateRetrying) != (n > 0) || (e.LastError != "") != (n > 0) {
				return false
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond, "pending keys' attempts are their own failed calls")

	sink.up.Store(true)
	waitIdle(t, s)
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
	t.Parallel() // waits on timers and the store, not the CPU
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
	t.Parallel() // waits on timers and the store, not the CPU
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

// fnSink answers each call with answer(n); it records every call made.
type fnSink struct {
	mu     sync.Mutex
	answer func(n *sinks.Notification, call int) error
	calls  []*sinks.Notification
	at     []time.Time
}

func (f *fnSink) Deliver(ctx context.Context, n *sinks.Notification) error {
	c := sinks.CallFrom(ctx)
	c.Action = "trigger"
	if n.Status() == sinks.StatusResolved {
		c.Action = "resolve"
	}
	f.mu.Lock()
	f.calls = append(f.calls, n)
	f.at = append(f.at, time.Now())
	i := len(f.calls)
	ans := f.answer
	f.mu.Unlock()
	if err := ans(n, i); err != nil {
		var e *sinks.Error
		if errors.As(err, &e) && e.StatusCode != 0 {
			c.StatusCode = e.StatusCode
		}
		return err
	}
	c.StatusCode = 202
	return nil
}

func (f *fnSink) set(a func(n *sinks.Notification, call int) error) {
	f.mu.Lock()
	f.answer = a
	f.mu.Unlock()
}

func (f *fnSink) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fnSink) statuses() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, n := range f.calls {
		out = append(out, n.Status())
	}
	return out
}

// liveJobs counts delivery jobs not finished.
func liveJobs(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	require.NoError(t, s.rdb.QueryRowContext(context.Background(),
		`SELECT COUNT(*) FROM river_job WHERE kind = 'alertfan_deliver' AND state NOT IN ('completed', 'cancelled', 'discarded')`).Scan(&n))
	return n
}

// stateAttempts reads a key's attempts and failing_since as deliver sees
// them (those of an earlier seq are no longer the key's) and pending.
func stateAttempts(t *testing.T, s *Store, key string) (attempts int, since int64, pending int) {
	t.Helper()
	err := s.rdb.QueryRowContext(context.Background(), s.rebind(`SELECT CASE WHEN attempts_seq = seq THEN attempts ELSE 0 END,
		CASE WHEN attempts_seq = seq THEN failing_since ELSE 0 END, pending FROM alertfan_state WHERE target = ? AND key = ?`),
		"r/pagerduty/0", key).Scan(&attempts, &since, &pending)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, 0
	}
	require.NoError(t, err)
	return
}

// The README's upgrade path on PostgreSQL: "roll replicas one at a time".
// While the roll is under way an old replica (before migrations 32–34)
// shares the store with a new one. The new replica counts a key's failed
// calls; the old one then delivers the key with its own ack, which does
// not know the columns and leaves them as they are. The key's next change
// must start with a clean slate all the same: it was dead-lettered at its
// first failed call with max_attempts 3 (found by a fresh helper).
func TestAttemptsStartOverWhoeverAckedTheLastRun(t *testing.T) {
	t.Parallel() // waits on timers and the store, not the CPU
	ctx := context.Background()
	opts := Options{Driver: DriverPostgres, DSN: testenv.PostgresDSN(t), MaxAttempts: 3}
	sink := &fnSink{answer: func(n *sinks.Notification, call int) error {
		return sinks.StatusError(503, 0, errors.New("pagerduty answered 503"))
	}}
	s := openStore(t, opts, sink)
	require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
	// The new replica counts two failed calls of its own.
	require.Eventually(t, func() bool { n, _, _ := stateAttempts(t, s, "a"); return n >= 2 }, 20*time.Second, 5*time.Millisecond)
	// Stop the new replica's calls from counting more; then the old
	// replica delivers the key: its ack (before migration 32) sets no
	// attempts.
	sink.set(func(n *sinks.Notification, call int) error { return nil })
	const oldAck = `UPDATE alertfan_state SET delivered = version, phase = 'triggered', sent_digest = digest, sent_occ = occ, pending = 0
		WHERE target = 'r/pagerduty/0' AND key = 'a' AND pending = 1`
	_, err := s.db.ExecContext(ctx, oldAck)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return liveJobs(t, s) == 0 }, 10*time.Second, 5*time.Millisecond) // the new replica's job finds nothing left

	// The alert changes; the target fails once (a 502 blip) and then
	// answers: the change must be delivered, not dead-lettered.
	before := sink.count()
	sink.set(func(n *sinks.Notification, call int) error {
		if call == before+1 {
			return sinks.StatusError(502, 0, errors.New("pagerduty answered 502"))
		}
		return nil
	})
	require.NoError(t, s.Enqueue(ctx, []Item{item("a", "resolved")}))
	waitIdle(t, s)
	dead, err := s.DeadLetters(ctx)
	require.NoError(t, err)
	require.Empty(t, dead, "the next change was dead-lettered at its first failed call: its attempts did not start over (%v)", dead)
}

// A trigger whose calls timed out (their outcome never recorded: the
// incident may be open at PagerDuty) runs out of attempts and is
// dead-lettered; the alert then resolves, and the resolve is sent (found
// by fresh helpers). It comes in a new job, so the row, not only the old
// job, must say that a trigger may be open, or the plan skips it ("a
// trigger never sent needs no resolve"); after an earlier occurrence the
// state says phase=resolved (that occurrence's), and plan returned
// nothing for want=resolved at phase=resolved whatever the uncertainty.
func TestResolveAfterDeadLetteredTimedOutTriggers(t *testing.T) {
	t.Parallel() // waits on timers and the store, not the CPU
	for _, earlier := range []bool{false, true} {
		for _, d := range drivers() {
			t.Run(fmt.Sprintf("%s/earlier_occurrence=%v", d.name, earlier), func(t *testing.T) {
				ctx := context.Background()
				opts := d.opts(t)
				opts.MaxAttempts = 2
				sink := &fnSink{answer: func(n *sinks.Notification, call int) error { return nil }}
				s := openStore(t, opts, sink)
				if earlier {
					deliverOccurrence(t, s, "a")
				}
				sink.set(func(n *sinks.Notification, call int) error {
					if n.Status() == sinks.StatusFiring {
						return sinks.Retryable(sinks.ReasonTimeout, 0, context.DeadlineExceeded)
					}
					return nil
				})
				require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
				require.Eventually(t, func() bool {
					dead, err := s.DeadLetters(ctx)
					return err == nil && len(dead) == 1
				}, 20*time.Second, 10*time.Millisecond)
				before := sink.count()
				require.NoError(t, s.Enqueue(ctx, []Item{item("a", "resolved")}))
				waitIdle(t, s)
				st := sink.statuses()
				require.Greater(t, sink.count(), before, "the resolve after dead-lettered, timed-out triggers was skipped: %v", st)
				require.Equal(t, sinks.StatusResolved, st[len(st)-1])
			})
		}
	}
}

// A job past max_attempts of its own (its keys take turns probing a down
// target, each with attempts left) is snoozed by notDiscarded until the
// target's Retry-After. A snooze is River's 'scheduled' state, which every
// reload and restart (Replan) makes available at once — meant for work
// parked by the rate limit. A retryable job is left to its wait; so must
// this one be, or each SIGHUP makes a call the target asked not to get
// (found by a fresh helper).
func TestReplanLeavesABackoffSnoozeAlone(t *testing.T) {
	t.Parallel() // waits on timers and the store, not the CPU
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			sink := &fnSink{answer: func(n *sinks.Notification, call int) error {
				return sinks.StatusError(503, time.Hour, errors.New("pagerduty answered 503"))
			}}
			s := openStore(t, d.opts(t), sink) // max_attempts 50
			require.NoError(t, s.Enqueue(ctx, []Item{item("k0", "firing"), item("k1", "firing"), item("k2", "firing")}))
			jobState := func() (state string, attempt int) {
				require.NoError(t, s.rdb.QueryRowContext(ctx, `SELECT state, attempt FROM river_job WHERE kind = 'alertfan_deliver'`).Scan(&state, &attempt))
				return
			}
			require.Eventually(t, func() bool { st, _ := jobState(); return st == "retryable" }, 10*time.Second, 5*time.Millisecond)
			// Control: a retryable job waiting for Retry-After is not woken.
			n := sink.count()
			require.NoError(t, s.Replan(ctx))
			time.Sleep(time.Second) // a woken job calls within its poll interval (10 ms) and back-off (≤ 200 ms)
			require.Equal(t, n, sink.count(), "control: Replan woke a retryable job")

			// The same job after its keys took turns probing for a while:
			// its own attempts are past max_attempts (a 16-key job gets
			// there with each key far from its own). Let it fail once more.
			_, err := s.db.ExecContext(ctx, s.rebind(`UPDATE river_job SET attempt = 60, state = 'available', scheduled_at = ? WHERE kind = 'alertfan_deliver'`), s.dbTime(time.Now()))
			require.NoError(t, err)
			require.Eventually(t, func() bool { return sink.count() > n }, 15*time.Second, 5*time.Millisecond)
			require.Eventually(t, func() bool { st, _ := jobState(); return st == "scheduled" }, 10*time.Second, 5*time.Millisecond)
			for _, k := range []string{"k0", "k1", "k2"} {
				a, _, _ := stateAttempts(t, s, k)
				require.Less(t, a, 50)
			}
			var sched time.Time
			require.NoError(t, s.rdb.QueryRowContext(ctx, `SELECT scheduled_at FROM river_job WHERE kind = 'alertfan_deliver'`).Scan(&sched))
			t.Logf("snoozed for %v", time.Until(sched).Round(time.Second))
			require.Greater(t, time.Until(sched), 30*time.Minute, "snoozed for the Retry-After")
			n = sink.count()
			require.NoError(t, s.Replan(ctx)) // a SIGHUP
			time.Sleep(3 * time.Second)       // the down target's next probe is due within 1.6 s
			require.Equal(t, n, sink.count(), "a reload made a call before the target's Retry-After (1h)")
		})
	}
}

// limitedSink is a target with a real per-key rate limiter (as the
// PagerDuty and Backlog sinks have): every call answers 429 with a long
// Retry-After, which the worker turns into a Hold of the key's calls.
type limitedSink struct {
	fnSink
	l *sinks.Limiter
}

func (l *limitedSink) Hold(d time.Duration)          { l.l.Hold(d) }
func (l *limitedSink) HeldUntil() time.Time          { return l.l.HeldUntil() }
func (l *limitedSink) Admit(class int) time.Duration { return l.l.Admit(class, maxPaceWait) }
func (l *limitedSink) Pace(ctx context.Context, maxWait time.Duration) (time.Duration, error) {
	return l.l.Wait(ctx, maxWait)
}

// "A target's Retry-After never pushes the next attempt past max_age"
// (README): with max_age 2s a 429 with Retry-After 30s ends in a dead
// letter at the 2 s deadline. Work clips the job's retry to the deadline,
// but the 429 also holds the key's calls in the limiter for the full 30 s:
// the attempt at the deadline parked (no attempt, not too old) and the key
// was judged only after the Retry-After (found by a fresh helper).
func TestRetryAfterHoldEndsAtMaxAge(t *testing.T) {
	t.Parallel() // waits on timers and the store, not the CPU
	ctx := context.Background()
	opts := drivers()[0].opts(t)
	opts.MaxAge = 2 * time.Second
	sink := &limitedSink{l: sinks.NewLimiters().Get("pagerduty", "rk", 120)}
	sink.answer = func(n *sinks.Notification, call int) error {
		return sinks.StatusError(429, 30*time.Second, errors.New("pagerduty answered 429"))
	}
	s := openStore(t, opts, sink)
	start := time.Now()
	require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
	deadline := time.Now().Add(10 * time.Second)
	for {
		dead, err := s.DeadLetters(ctx)
		require.NoError(t, err)
		if len(dead) == 1 {
			break
		}
		if time.Now().After(deadline) {
			sink.mu.Lock()
			at := append([]time.Time(nil), sink.at...)
			sink.mu.Unlock()
			var offs []time.Duration
			for _, a := range at {
				offs = append(offs, a.Sub(start).Round(10*time.Millisecond))
			}
			t.Fatalf("not dead-lettered 10 s after the first call (max_age 2s); calls at %v", offs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	t.Logf("dead-lettered after %v, %d calls", took.Round(100*time.Millisecond), sink.count())
	require.Equal(t, 1, sink.count(), "no call while the key is held")
	dead, err := s.DeadLetters(ctx)
	require.NoError(t, err)
	require.Equal(t, sinks.ReasonExhausted, dead[0].Reason)
	require.Contains(t, dead[0].Error, "max_age")
}

// A reload that moves a failing destination to another id gives its
// pending keys jobs of their own: they start over (a new seq) and are
// marked uncertain, as the old jobs' attempts may have left calls
// unrecorded that the new jobs cannot know of.
func TestMovedKeysStartOverUncertain(t *testing.T) {
	ctx := context.Background()
	opts := drivers()[0].opts(t)
	sink := &fnSink{answer: func(n *sinks.Notification, call int) error {
		return sinks.StatusError(429, time.Hour, errors.New("pagerduty answered 429"))
	}}
	s := openStore(t, opts, sink)
	const oldID, newID = "r/pagerduty/0", "r/pagerduty/1"
	require.NoError(t, s.SetTargets(ctx, map[string]Target{oldID: {ID: oldID, Kind: "pagerduty", Receiver: "r", Sink: sink, Destination: "pd:one"}}))
	require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
	require.Eventually(t, func() bool { n, _, _ := stateAttempts(t, s, "a"); return n == 1 }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, s.SetTargets(ctx, map[string]Target{newID: {ID: newID, Kind: "pagerduty", Receiver: "r", Sink: sink, Destination: "pd:one"}}))
	var n, uncertain int
	require.NoError(t, s.rdb.QueryRowContext(ctx, s.rebind(`SELECT CASE WHEN attempts_seq = seq THEN attempts ELSE 0 END, uncertain FROM alertfan_state WHERE target = ? AND key = 'a'`), newID).Scan(&n, &uncertain))
	require.Equal(t, 0, n)
	require.Equal(t, 1, uncertain)
}

// deliverOccurrence delivers one occurrence of key: its trigger, then
// its resolve.
func deliverOccurrence(t *testing.T, s *Store, key string) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, s.Enqueue(ctx, []Item{item(key, "firing")}))
	waitIdle(t, s)
	require.NoError(t, s.Enqueue(ctx, []Item{item(key, "resolved")}))
	waitIdle(t, s)
}

// waitIdle waits until nothing is owed.
func waitIdle(t *testing.T, s *Store) {
	t.Helper()
	require.Eventually(t, func() bool {
		p, err := s.Pending(context.Background())
		return err == nil && len(p) == 0
	}, 30*time.Second, 10*time.Millisecond)
}

// The same without a dead letter: the re-trigger times out once and the
// resolve arrives before its retry (same job, callsUnrecorded true).
func TestResolveAfterTimedOutRetriggerSameJob(t *testing.T) {
	t.Parallel() // waits on timers and the store, not the CPU
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			opts := d.opts(t)
			entered := make(chan struct{})
			release := make(chan struct{})
			sink := &fnSink{answer: func(n *sinks.Notification, call int) error { return nil }}
			s := openStore(t, opts, sink)
			deliverOccurrence(t, s, "a")
			var once sync.Once
			sink.set(func(n *sinks.Notification, call int) (err error) {
				if n.Status() != sinks.StatusFiring {
					return nil
				}
				once.Do(func() { // the first re-trigger times out
					close(entered)
					<-release
					err = sinks.Retryable(sinks.ReasonTimeout, 0, context.DeadlineExceeded)
				})
				return err
			})
			require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")})) // occurrence 2
			<-entered
			before := sink.count()
			require.NoError(t, s.Enqueue(ctx, []Item{item("a", "resolved")}))
			close(release)
			waitIdle(t, s)
			time.Sleep(200 * time.Millisecond)
			st := sink.statuses()
			t.Logf("calls: %v", st)
			require.Greater(t, sink.count(), before, "the resolve after a timed-out re-trigger was skipped: %v", st)
		})
	}
}

// A key fails once (a 503 blip, no Retry-After) and the target is fine
// after it. Its retry is due at once, but alertfan's own limiter (a low
// rate: its next turn is 3 s away, past max_age; no 429, no hold) parks
// it. Waiting for alertfan's own rate limit never counts: the key is
// tried again at its turn, not dead-lettered at max_age without a second
// call (found by a fresh helper).
func TestOwnPacingTurnPastMaxAgeIsWaitedFor(t *testing.T) {
	t.Parallel() // waits on timers and the store, not the CPU
	ctx := context.Background()
	s, sink := pacedPastMaxAge(t, 1)
	require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
	waitIdle(t, s)
	dead, err := s.DeadLetters(ctx)
	require.NoError(t, err)
	t.Logf("calls: %d, dead: %+v", sink.count(), dead)
	require.Empty(t, dead, "dead-lettered while waiting for alertfan's own rate-limit turn after one failed call")
	require.Equal(t, 2, sink.count())
}

// README, Shutdown: "lets calls in flight finish for --shutdown-timeout,
// cancels what is left — it stays in the queue and goes out after the
// next start". A key at its last attempt (max_attempts 2, one 503 before)
// whose call the shutdown cancels stays queued, not dead-lettered: the
// cancel is no answer of the target, and the job is marked uncertain
// (found by a fresh helper).
func TestShutdownCancelAtLastAttemptStaysQueued(t *testing.T) {
	t.Parallel() // waits on timers and the store, not the CPU
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			opts := d.opts(t)
			opts.MaxAttempts = 2
			entered := make(chan struct{})
			sink := &fnSinkCtx{}
			sink.answer = func(ctx context.Context, call int) error {
				if call == 1 {
					return sinks.StatusError(503, 0, errors.New("pagerduty answered 503"))
				}
				close(entered)
				<-ctx.Done()
				// as sinks/pagerduty classify does for a cancelled request
				return sinks.Retryable(sinks.ReasonTimeout, 0, ctx.Err())
			}
			s := openStore(t, opts, sink)
			require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				t.Fatal("no second call")
			}
			sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			t.Logf("StopWorkers: %v", s.StopWorkers(sctx))
			time.Sleep(300 * time.Millisecond)
			dead, err := s.DeadLetters(ctx)
			require.NoError(t, err)
			p, err := s.Pending(ctx)
			require.NoError(t, err)
			t.Logf("dead %+v pending %d", dead, len(p))
			require.Empty(t, dead, "a call cancelled by the shutdown dead-lettered the key")
			require.Len(t, p, 1)
			var meta string
			require.NoError(t, s.rdb.QueryRowContext(ctx, s.dialect.pick(`SELECT metadata::text FROM river_job`, `SELECT json(metadata) FROM river_job`)).Scan(&meta))
			require.Contains(t, meta, metaUncertain, "the cut call may have reached the target")
		})
	}
}

// pacedPastMaxAge opens a store with max_age 1s whose target alertfan
// paces at 20 calls a minute (a turn every ~3 s, past max_age) and which
// answers its failCall-th call with a 503, every other with success.
func pacedPastMaxAge(t *testing.T, failCall int) (*Store, *limitedSink) {
	t.Helper()
	opts := drivers()[0].opts(t)
	opts.MaxAge = time.Second
	sink := &limitedSink{l: sinks.NewLimiters().Get("pagerduty", "rk", 20)}
	sink.answer = func(n *sinks.Notification, call int) error {
		if call == failCall {
			return sinks.StatusError(503, 0, errors.New("pagerduty answered 503"))
		}
		return nil
	}
	return openStore(t, opts, sink), sink
}

// fnSinkCtx answers the nth call with answer(ctx, n).
type fnSinkCtx struct {
	n      atomic.Int64
	answer func(ctx context.Context, call int) error
}

func (f *fnSinkCtx) Deliver(ctx context.Context, n *sinks.Notification) error {
	c := sinks.CallFrom(ctx)
	c.Action = "trigger"
	err := f.answer(ctx, int(f.n.Add(1)))
	var e *sinks.Error
	if errors.As(err, &e) && e.StatusCode != 0 {
		c.StatusCode = e.StatusCode
	}
	return err
}

// The incident is open (trigger delivered). An update of it fails once
// (503); the alert then resolves. The resolve waits for its turn under
// alertfan's own rate limit (no 429), a turn that comes after max_age
// from the update's failure: it is sent then, not dead-lettered unsent
// with the incident left open (found by a fresh helper).
func TestResolveWaitsForItsOwnTurnPastMaxAge(t *testing.T) {
	t.Parallel() // waits on timers and the store, not the CPU
	ctx := context.Background()
	s, sink := pacedPastMaxAge(t, 2)
	require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
	waitIdle(t, s)
	upd := item("a", "firing")
	upd.Digest = "firing, new annotation"
	require.NoError(t, s.Enqueue(ctx, []Item{upd}))
	require.Eventually(t, func() bool { return sink.count() == 2 }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, s.Enqueue(ctx, []Item{item("a", "resolved")}))
	waitIdle(t, s)
	dead, _ := s.DeadLetters(ctx)
	t.Logf("calls %v dead %+v", sink.statuses(), dead)
	require.Contains(t, sink.statuses(), sinks.StatusResolved, "the resolve of an open incident was dead-lettered unsent")
}

// replanDone wakes waiting jobs none of whose keys needs a call any more,
// judged with plan() as the job's next attempt will: after a timed-out
// trigger a resolve is owed. A job waiting out a 503's Retry-After (1h)
// after a timed-out trigger was woken when the alert resolved, and the
// resolve went out at once (found by a fresh helper).
func TestReplanDoneLeavesAnUncertainJobToItsRetryAfter(t *testing.T) {
	t.Parallel() // waits on timers and the store, not the CPU
	ctx := context.Background()
	opts := drivers()[0].opts(t)
	sink := &fnSink{answer: func(n *sinks.Notification, call int) error {
		switch call {
		case 1:
			return sinks.Retryable(sinks.ReasonTimeout, 0, context.DeadlineExceeded)
		case 2:
			return sinks.StatusError(503, time.Hour, errors.New("pagerduty answered 503"))
		}
		return nil
	}}
	s := openStore(t, opts, sink)
	require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
	require.Eventually(t, func() bool { return sink.count() == 2 }, 10*time.Second, 5*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, s.Enqueue(ctx, []Item{item("a", "resolved")}))
	time.Sleep(4 * time.Second) // replanEvery 2s
	t.Logf("calls %v", sink.statuses())
	require.Equal(t, 2, sink.count(), "a call was made before the target's Retry-After (1h)")
}
