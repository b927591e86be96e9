package queue

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/sinks"
)

// recordingSink keeps what it was given and fails on demand.
type recordingSink struct {
	mu      sync.Mutex
	got     []*sinks.Notification
	fail    func(n *sinks.Notification) error
	block   chan struct{}
	entered chan struct{} // closed when the first call starts, if set
	once    sync.Once
}

func (r *recordingSink) Deliver(ctx context.Context, n *sinks.Notification) error {
	if r.entered != nil {
		r.once.Do(func() { close(r.entered) })
	}
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(n); err != nil {
			return err
		}
	}
	r.got = append(r.got, n)
	// It answered, as a real target's 2xx (the queue takes only a call
	// answered as a sign that a down target is back).
	sinks.CallFrom(ctx).StatusCode = 200
	return nil
}

func (r *recordingSink) all() []*sinks.Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*sinks.Notification(nil), r.got...)
}

var _ Sink = (*recordingSink)(nil)

type driverCase struct {
	name string
	opts func(t *testing.T) Options
}

func drivers() []driverCase {
	return []driverCase{
		{"sqlite", func(t *testing.T) Options {
			return Options{Driver: DriverSQLite, Path: filepath.Join(t.TempDir(), "q.db")}
		}},
		{"postgres", func(t *testing.T) Options {
			return Options{Driver: DriverPostgres, DSN: testenv.PostgresDSN(t)}
		}},
	}
}

func openStore(t *testing.T, opts Options, sink Sink) *Store {
	t.Helper()
	return openStoreWith(t, opts, sink, nil)
}

// openStoreWith is openStore with hook, when not nil, run after Open and
// before the targets are set and the store starts.
func openStoreWith(t *testing.T, opts Options, sink Sink, hook func(*Store)) *Store {
	t.Helper()
	return openStoreTargets(t, opts, map[string]Target{"r/pagerduty/0": {ID: "r/pagerduty/0", Kind: "pagerduty", Receiver: "r", Sink: sink}}, hook)
}

// openStoreTargets is openStoreWith with targets ts.
func openStoreTargets(t *testing.T, opts Options, ts map[string]Target, hook func(*Store)) *Store {
	t.Helper()
	opts.PollInterval = 10 * time.Millisecond
	opts.MinBackoff = 50 * time.Millisecond
	opts.MaxBackoff = 200 * time.Millisecond
	opts.Registerer = prometheus.NewRegistry()
	s, err := Open(context.Background(), opts)
	require.NoError(t, err)
	if hook != nil {
		hook(s)
	}
	require.NoError(t, s.SetTargets(context.Background(), ts))
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Close(ctx) //nolint:errcheck
	})
	return s
}

func item(key, status string) Item {
	n := sinks.Notification{Key: key, Alerts: []sinks.Alert{{Identity: key, Status: status, Labels: map[string]string{"alertname": key}}}, AcceptedAt: time.Now()}
	b, _ := json.Marshal(n)
	want := PhaseTriggered
	if status == sinks.StatusResolved {
		want = PhaseResolved
	}
	return Item{Target: "r/pagerduty/0", Kind: "pagerduty", Key: key, Want: want, Digest: status, Payload: b}
}

func TestDeliverAndCoalesce(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			sink := &recordingSink{block: make(chan struct{}), entered: make(chan struct{})}
			s := openStore(t, d.opts(t), sink)
			ctx := context.Background()
			require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
			<-sink.entered
			// While the first delivery is held, ten updates arrive: they must
			// coalesce into one more call carrying the newest state.
			for i := 0; i < 9; i++ {
				require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
			}
			require.NoError(t, s.Enqueue(ctx, []Item{item("a", "resolved")}))
			close(sink.block)
			require.Eventually(t, func() bool {
				got := sink.all()
				return len(got) >= 1 && got[len(got)-1].Status() == sinks.StatusResolved
			}, 10*time.Second, 10*time.Millisecond)
			time.Sleep(200 * time.Millisecond)
			require.LessOrEqual(t, len(sink.all()), 2, "updates should coalesce")
		})
	}
}

func TestPermanentFailureIsDeadLetteredAndRetried(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			var calls int
			var mu sync.Mutex
			failing := true
			sink := &recordingSink{fail: func(n *sinks.Notification) error {
				mu.Lock()
				defer mu.Unlock()
				calls++
				if failing {
					return sinks.Permanent(sinks.ReasonClientError, fmt.Errorf("bad request"))
				}
				return nil
			}}
			s := openStore(t, d.opts(t), sink)
			ctx := context.Background()
			require.NoError(t, s.Enqueue(ctx, []Item{item("x", "firing")}))
			dead := waitDeadLetters(t, s, 1)
			require.Equal(t, sinks.ReasonClientError, dead[0].Reason)
			time.Sleep(300 * time.Millisecond)
			mu.Lock()
			require.Equal(t, 1, calls, "a permanent failure must not be retried")
			failing = false
			mu.Unlock()

			n, err := s.RetryDead(ctx, dead[0].ID, false)
			require.NoError(t, err)
			require.Equal(t, 1, n)
			require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 10*time.Second, 20*time.Millisecond)
			dead, err = s.DeadLetters(ctx)
			require.NoError(t, err)
			require.Empty(t, dead)
			_, err = s.RetryDead(ctx, 999, false)
			require.ErrorIs(t, err, ErrNotFound)
		})
	}
}

func TestRetryableFailureIsRetried(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			var mu sync.Mutex
			calls := 0
			sink := &recordingSink{fail: func(n *sinks.Notification) error {
				mu.Lock()
				defer mu.Unlock()
				calls++
				if calls < 3 {
					return sinks.Retryable(sinks.ReasonServerError, 0, fmt.Errorf("503"))
				}
				return nil
			}}
			s := openStore(t, d.opts(t), sink)
			require.NoError(t, s.Enqueue(context.Background(), []Item{item("y", "firing")}))
			// River's scheduler moves retryable jobs back every few seconds.
			require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 30*time.Second, 20*time.Millisecond)
		})
	}
}

// One request's failure is that request's alone: a retry of a dead letter
// that does not exist, run in the same group commits as thousands of
// intake requests, answers ErrNotFound to its caller and fails nobody else
// (issue 10, item 1).
func TestMissingDeadLetterRetryFailsOnlyItself(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			s := openStore(t, d.opts(t), &recordingSink{})
			ctx := context.Background()
			const requests, retries = 2000, 400
			var (
				wg                     sync.WaitGroup
				mu                     sync.Mutex
				enqueueErrs, retryErrs []error
				notFound               int
			)
			start := make(chan struct{})
			for i := 0; i < requests; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					key := fmt.Sprintf("iso-%05d", i)
					var err error
					if i%2 == 0 {
						err = s.Enqueue(ctx, []Item{item(key, "firing")})
					} else {
						// Half go through Accept, as intake does.
						_, err = s.Accept(ctx, &Intake{Updates: []Update{{
							Identity: "am:" + key, Input: "alertmanager", Want: PhaseTriggered,
							StartsAt: time.Now(), Ordered: true, Labels: []byte(`{"alertname":"` + key + `"}`),
							Items: []Item{item(key, "firing")},
						}}})
					}
					if err != nil {
						mu.Lock()
						enqueueErrs = append(enqueueErrs, err)
						mu.Unlock()
					}
				}()
			}
			for i := 0; i < retries; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, err := s.RetryDead(ctx, 999999, false)
					mu.Lock()
					defer mu.Unlock()
					if errors.Is(err, ErrNotFound) {
						notFound++
					} else {
						retryErrs = append(retryErrs, err)
					}
				}()
			}
			close(start)
			wg.Wait()
			require.Zero(t, len(enqueueErrs), "every intake request commits; first error: %v", firstErr(enqueueErrs))
			require.Zero(t, len(retryErrs), "every retry of a missing id is ErrNotFound; first other answer: %v", firstErr(retryErrs))
			require.Equal(t, retries, notFound)
			require.Zero(t, counterValue(t, s, "alertfan_store_commit_errors_total"), "alertfan_store_commit_errors_total counts only store failures")
			t.Logf("%d intake requests and %d retries of a missing id: 0 intake errors, %d × ErrNotFound, 0 commit errors",
				requests, retries, notFound)
		})
	}
}

// A failed bookkeeping write never repeats a call: the delivery's outcome
// is kept and its write retried, and the target sees one call (issue 10,
// item 6).
func TestFailedAckNeverRepeatsTheCall(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			var calls atomic.Int32
			sink := &recordingSink{fail: func(n *sinks.Notification) error {
				calls.Add(1)
				return nil
			}}
			s := openStore(t, d.opts(t), sink)
			// Seven failed writes in a row: the job keeps its outcome and
			// writes it again (within job_timeout) instead of calling again.
			const failures = 7
			s.failAcks.Store(failures)
			ctx := context.Background()
			require.NoError(t, s.Enqueue(ctx, []Item{item("acked", "firing")}))
			require.Eventually(t, func() bool {
				states, err := s.loadStates(ctx, "r/pagerduty/0", []keySeq{{Key: "acked"}})
				require.NoError(t, err)
				st := states["acked"]
				return st != nil && !st.pending && st.delivered == st.version && st.phase == PhaseTriggered
			}, 30*time.Second, 20*time.Millisecond, "the delivery is recorded once the store takes writes again")
			require.LessOrEqual(t, s.failAcks.Load(), int32(0), "every injected failure was hit")
			time.Sleep(300 * time.Millisecond)
			require.Equal(t, int32(1), calls.Load(), "one call; the failed writes were retried, not the call")
			t.Logf("%d failed bookkeeping writes, %d call", failures, calls.Load())
		})
	}
}

// uncertainSink records, per call, whether the queue told it an earlier
// call may have reached the target unrecorded (sinks.Call.Uncertain). It
// answers each call; while unrecorded is set, it then fails as a sink
// whose own record of the call could not be written.
type uncertainSink struct {
	mu         sync.Mutex
	uncertain  []bool
	unrecorded atomic.Bool
}

func (u *uncertainSink) Deliver(ctx context.Context, n *sinks.Notification) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	c := sinks.CallFrom(ctx)
	u.uncertain = append(u.uncertain, c.Uncertain)
	c.Action, c.StatusCode = "trigger", 200 // a call was made, and answered
	if u.unrecorded.Load() {
		return sinks.Retryable(sinks.ReasonUnrecorded, 0, errors.New("record issue: the store is away"))
	}
	return nil
}

func (u *uncertainSink) calls() []bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]bool(nil), u.uncertain...)
}

// A call whose outcome the store did not take — the queue's ack failed
// past job_timeout, or the sink's own record of it (a Backlog issue
// record) failed — is retried as a call that may have been made, also
// where no memory of it is kept (another replica, after a restart), so
// a sink looks before repeating what is not idempotent: a Backlog comment
// or issue. Such a failure spends none of the key's attempts. (A breaker
// saw 37 of 100 Backlog acknowledge comments posted twice with three
// replicas and PostgreSQL stopped for 15 s.)
func TestUnrecordedCallIsUncertainOnAnotherReplica(t *testing.T) {
	for _, way := range []string{"ack", "sink record"} {
		for _, d := range drivers() {
			t.Run(way+"/"+d.name, func(t *testing.T) {
				sink := &uncertainSink{}
				opts := d.opts(t)
				opts.JobTimeout = 400 * time.Millisecond
				opts.MaxAttempts = 2
				s := openStoreWith(t, opts, sink, func(s *Store) {
					s.forgetUnrecorded.Store(true) // the retry runs where no memory of the call is
					if way == "ack" {
						s.failAcks.Store(1 << 20) // the store takes no outcome until told
					} else {
						sink.unrecorded.Store(true)
					}
				})
				ctx := context.Background()
				require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
				require.Eventually(t, func() bool { return len(sink.calls()) >= 3 }, 20*time.Second, 10*time.Millisecond)
				s.failAcks.Store(0)
				sink.unrecorded.Store(false)
				require.Eventually(t, func() bool {
					states, err := s.loadStates(ctx, "r/pagerduty/0", []keySeq{{Key: "a"}})
					require.NoError(t, err)
					st := states["a"]
					return st != nil && !st.pending && st.delivered == st.version
				}, 20*time.Second, 20*time.Millisecond)
				dead, err := s.DeadLetters(ctx)
				require.NoError(t, err)
				require.Empty(t, dead, "more failures than max_attempts, none the target's")
				require.Positive(t, deliveriesOf(t, s, "retry", sinks.ReasonUnrecorded), `alertfan_deliveries_total{result="retry",reason="unrecorded"} counts the calls whose outcome the store did not take, either way`)
				got := sink.calls()
				require.False(t, got[0], "the first call knows of no earlier one")
				for i, u := range got[1:] {
					require.True(t, u, "call %d follows one whose outcome the store never took", i+2)
				}
			})
		}
	}
}

// settlingSink is a sink that is not idempotent (a settler): its first
// call is cut off by a timeout, as a request Backlog is still serving.
type settlingSink struct {
	mu    sync.Mutex
	calls []time.Time
	done  []bool // whether each call's retry was told it may be a repeat
}

func (u *settlingSink) Settle() time.Duration { return time.Second }

func (u *settlingSink) Deliver(ctx context.Context, n *sinks.Notification) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	c := sinks.CallFrom(ctx)
	c.Action = "create"
	u.calls = append(u.calls, time.Now())
	u.done = append(u.done, c.Uncertain)
	if len(u.calls) == 1 {
		return sinks.Retryable(sinks.ReasonTimeout, 0, fmt.Errorf("Post \"https://example.backlog.com/api/v2/issues\": %w", context.DeadlineExceeded))
	}
	c.StatusCode = 201
	return nil
}

// A call of a sink that is not idempotent, cut off before its answer, is
// retried only after Settle (the request may still land at the target
// after alertfan gave up on it; looked for too early, it was made twice:
// a breaker saw 18 of 300 Backlog issues doubled with job_timeout 5s),
// and the retry is told the call may have been made.
func TestCutCallOfANonIdempotentSinkSettlesBeforeItsRetry(t *testing.T) {
	sink := &settlingSink{}
	s := openStore(t, drivers()[0].opts(t), sink)
	require.NoError(t, s.Enqueue(context.Background(), []Item{item("a", "firing")}))
	require.Eventually(t, func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return len(sink.calls) == 2 }, 20*time.Second, 10*time.Millisecond)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	require.GreaterOrEqual(t, sink.calls[1].Sub(sink.calls[0]), time.Second, "the retry waited for the cut call to land (min_backoff is 50 ms)")
	require.Equal(t, []bool{false, true}, sink.done)
}

// counterValue reads a counter from the store's registry.
func counterValue(t *testing.T, s *Store, name string) float64 {
	t.Helper()
	mfs, err := s.opts.Registerer.(prometheus.Gatherer).Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// deliveriesOf sums alertfan_deliveries_total over sinks and receivers
// for a result and a reason.
func deliveriesOf(t *testing.T, s *Store, result, reason string) float64 {
	t.Helper()
	mfs, err := s.opts.Registerer.(prometheus.Gatherer).Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "alertfan_deliveries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["result"] == result && labels["reason"] == reason {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func firstErr(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errs[0]
}

// Enqueue stores items' states and their jobs in one transaction, without
// the alert-level rules of Accept (staleness, sticky targets): the queue's
// mechanics on their own, for these tests.
func (s *Store) Enqueue(ctx context.Context, items []Item) error {
	if len(items) == 0 {
		return nil
	}
	// Sorting keeps row-lock order the same in every transaction, which
	// keeps concurrent PostgreSQL committers and replicas from deadlocking.
	sorted := make([]Item, len(items))
	copy(sorted, items)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].Target != sorted[j].Target {
			return sorted[i].Target < sorted[j].Target
		}
		return sorted[i].Key < sorted[j].Key
	})
	err := s.submit(ctx, func(ctx context.Context, b *batch) error {
		for _, it := range sorted {
			if _, err := b.putItem(ctx, it); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		s.metrics.itemsCommitted.Add(float64(len(items)))
	}
	return err
}

// waitDeadLetters waits until the store holds n dead letters and returns
// them.
func waitDeadLetters(t *testing.T, s *Store, n int) []DeadLetter {
	t.Helper()
	var dead []DeadLetter
	require.Eventually(t, func() bool {
		var err error
		dead, err = s.DeadLetters(context.Background())
		require.NoError(t, err)
		return len(dead) == n
	}, 10*time.Second, 20*time.Millisecond)
	return dead
}

// A job runs twice under one seq when the replica running it stalls
// (paused, frozen) past rescue_after, another runs the rescued job with
// the state as it is then, and the first comes back. Its late ack and
// phase writes must not take back the newer version's delivery: they
// set the key pending again with no job left to deliver it, and every
// later update of the alert was lost (a fresh helper, SIGSTOP on one of
// two replicas on PostgreSQL).
func TestStalledRunTakesNoDeliveryBack(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			sink := &recordingSink{}
			s := openStore(t, d.opts(t), sink)
			ctx := context.Background()
			const target = "r/pagerduty/0"
			state := func() *state {
				states, err := s.loadStates(ctx, target, []keySeq{{Key: "a"}})
				require.NoError(t, err)
				return states["a"]
			}
			settled := func() bool { st := state(); return st != nil && !st.pending && st.delivered == st.version }
			require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
			require.Eventually(t, settled, 10*time.Second, 10*time.Millisecond)
			require.NoError(t, s.Enqueue(ctx, []Item{item("a", "resolved")}))
			require.Eventually(t, settled, 10*time.Second, 10*time.Millisecond)
			now := state()
			require.Equal(t, PhaseResolved, now.phase)
			k := keySeq{Key: "a", Seq: now.seq}
			before := now.delivered - 1 // what the stalled run read

			for _, stale := range []struct {
				name string
				rec  ackRecord
			}{
				// It delivered an older version under the same seq.
				{"older version", ackRecord{version: now.version - 1, from: before, phase: PhaseTriggered, ref: "stale-ref"}},
				// It had the same version, and its call was answered
				// before the rescue's: a 400, where the rescue's got a
				// 202 and the incident is open.
				{"same version", ackRecord{version: now.version, from: before, phase: PhaseNone, dead: &deadRecord{reason: sinks.ReasonClientError, err: "pagerduty answered 400", attempts: 1}}},
			} {
				require.NoError(t, s.setPhase(ctx, target, k, stale.rec.from, stale.rec.phase, now.occ, stale.rec.ref), stale.name)
				pending, applied, err := s.ack(ctx, target, k, stale.rec)
				require.NoError(t, err, stale.name)
				require.False(t, applied, "%s: the stalled run's ack applies to nothing", stale.name)
				require.False(t, pending, stale.name)
				after := state()
				require.False(t, after.pending, "%s: no key pending without a job", stale.name)
				require.Equal(t, now.delivered, after.delivered, stale.name)
				require.Equal(t, PhaseResolved, after.phase, stale.name)
				require.Empty(t, after.ref, stale.name)
				dead, err := s.DeadLetters(ctx)
				require.NoError(t, err)
				require.Empty(t, dead, "%s: no dead letter of an alert delivered since", stale.name)
			}

			// The alert's next update is delivered.
			calls := len(sink.all())
			require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
			require.Eventually(t, func() bool { return len(sink.all()) > calls }, 10*time.Second, 10*time.Millisecond)
			require.Eventually(t, settled, 10*time.Second, 10*time.Millisecond)

			// The ack of the run that read the state as it is applies.
			now = state()
			pending, applied, err := s.ack(ctx, target, keySeq{Key: "a", Seq: now.seq}, ackRecord{version: now.version, from: now.delivered, phase: now.phase, ref: now.ref})
			require.NoError(t, err)
			require.True(t, applied)
			require.False(t, pending)

			// A stalled run's failed call counts no attempt on a key the
			// other run left pending for a newer version (as intake
			// leaves it: same seq; no job is made for it here).
			_, err = s.db.ExecContext(ctx, s.rebind(`UPDATE alertfan_state SET version = version + 1, pending = 1 WHERE target = ? AND key = ?`), target, "a")
			require.NoError(t, err)
			k = keySeq{Key: "a", Seq: now.seq}
			s.recordFailure(ctx, target, k, now.delivered-1, nil, time.Now(), errors.New("pagerduty answered 500"))
			attempts, _, _ := stateAttempts(t, s, "a")
			require.Zero(t, attempts, "the stalled run's failure is not the key's attempt")
			s.recordFailure(ctx, target, k, now.delivered, nil, time.Now(), errors.New("pagerduty answered 500"))
			attempts, _, _ = stateAttempts(t, s, "a")
			require.Equal(t, 1, attempts, "control: the failure of the run that read the state counts")
		})
	}
}

// rescuerPassed waits for the pass River's rescuer makes when it starts
// (internal/maintenance/job_rescuer.go: a ticker with an initial tick; the
// next pass comes 30 s later). A test whose run outlasts rescue_after on
// purpose could otherwise see that pass rescue the job under it, depending
// on when the leader was elected: CI's -race pass on PostgreSQL did. The
// pass discards a job of a kind nobody works, left running an hour ago.
func rescuerPassed(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	ago := s.dbTime(time.Now().Add(-time.Hour))
	_, err := s.db.ExecContext(ctx, s.rebind(`INSERT INTO river_job (args, kind, max_attempts, queue, state, attempt, attempted_at, scheduled_at) VALUES ('{}', 'alertfan_rescuer_probe', 1, 'alertfan_rescuer_probe', 'running', 1, ?, ?)`), ago, ago)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var state string
		require.NoError(t, s.db.QueryRowContext(ctx, `SELECT state FROM river_job WHERE kind = 'alertfan_rescuer_probe'`).Scan(&state))
		return state != "running"
	}, 30*time.Second, 10*time.Millisecond, "River's rescuer makes a pass when it starts")
}

// A run of a job that finds a key's outcome recorded by another run of
// the job (a rescue's, while this one stalled), or that outlasted
// rescue_after, hands the job back for job_timeout instead of finishing
// it: River records a run's end on the job whoever runs it now, so its
// "completed" would end the other run's job under it, and a key that run
// then failed stayed pending with no job (a fresh helper: SIGSTOP on one
// of two replicas, the rescue's call answered 500 after the stalled one
// resumed). The job's next run finds what is left.
func TestRunThatMayShareItsJobHandsItBack(t *testing.T) {
	for _, way := range []string{"superseded", "stalled"} {
		for _, d := range drivers() {
			t.Run(way+"/"+d.name, func(t *testing.T) {
				ctx := context.Background()
				const target = "r/pagerduty/0"
				var s *Store
				var firstDone atomic.Int64 // when the first run's call returned, Unix ns
				sink := &fnSink{answer: func(n *sinks.Notification, call int) error {
					if call > 1 {
						return nil
					}
					defer func() { firstDone.Store(time.Now().UnixNano()) }()
					if way == "stalled" {
						time.Sleep(700 * time.Millisecond) // past rescue_after, the job's context ignored
						return nil
					}
					// Another run of the job delivers the state and
					// records it while this call is under way.
					states, err := s.loadStates(ctx, target, []keySeq{{Key: "a"}})
					if err != nil {
						return err
					}
					st := states["a"]
					_, applied, err := s.ack(ctx, target, keySeq{Key: "a", Seq: st.seq}, ackRecord{version: st.version, from: st.delivered, phase: PhaseTriggered})
					if err == nil && !applied {
						err = errors.New("the other run's ack did not apply")
					}
					return err
				}}
				opts := d.opts(t)
				opts.JobTimeout = 300 * time.Millisecond
				opts.RescueAfter = 600 * time.Millisecond
				s = openStore(t, opts, sink)
				rescuerPassed(t, s)
				require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
				// River's record of the job once it is over, read after the
				// fact: a poll for the snoozed state misses it when the
				// machine is slow enough.
				snoozes := `CAST(metadata->>'snoozes' AS integer)`
				if s.dialect == dialectSQLite {
					snoozes = `json_extract(metadata, '$.snoozes')`
				}
				var state string
				var snoozed sql.NullInt64
				var attempted time.Time
				require.Eventually(t, func() bool {
					var at any
					require.NoError(t, s.db.QueryRowContext(ctx, `SELECT state, `+snoozes+`, attempted_at FROM river_job WHERE kind = 'alertfan_deliver'`).Scan(&state, &snoozed, &at))
					if state != "completed" {
						return false
					}
					var ok bool
					attempted, ok = parseTime(at)
					require.True(t, ok, "attempted_at %v", at)
					return true
				}, 10*time.Second, 10*time.Millisecond, "the job's next run finds nothing left and finishes it")
				require.Equal(t, int64(1), snoozed.Int64, "the first run handed the job back rather than finishing it")
				handedBack := time.Unix(0, firstDone.Load())
				require.GreaterOrEqual(t, attempted.Sub(handedBack), opts.JobTimeout+time.Second-50*time.Millisecond, "for job_timeout, past the other run's end")
				require.Equal(t, 1, sink.count(), "the key was delivered once")
				states, err := s.loadStates(ctx, target, []keySeq{{Key: "a"}})
				require.NoError(t, err)
				require.False(t, states["a"].pending)
				require.Equal(t, PhaseTriggered, states["a"].phase)
			})
		}
	}
}
