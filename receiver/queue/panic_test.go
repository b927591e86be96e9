package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/sinks"
)

// leakyError calls itself a runtime error but is not Go's: its text is
// not to be trusted.
type leakyError struct{ body string }

func (leakyError) RuntimeError()   {}
func (e leakyError) Error() string { return "decode reply: " + e.body }

// A sink that panics costs its key a retry, not the process: the job's
// other keys are delivered, a panic that keeps happening ends as a dead
// letter after max_attempts, and neither the log nor the dead letter
// carries the panic's value (which may be anything), only its type or a
// Go runtime error's own message.
func TestSinkPanicIsRetriedThenDeadLettered(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			var logs testenv.LogBuffer
			opts := d.opts(t)
			opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			opts.MaxAttempts = 2
			sink := &recordingSink{fail: func(n *sinks.Notification) error {
				switch n.Key {
				case "boom":
					panic("token=secret-value-123")
				case "index":
					var keys []string
					_ = keys[len(n.Key)] // Go's runtime error: its message is kept
				case "typed-nil":
					panic((*runtime.TypeAssertionError)(nil)) // its Error panics
				case "leaky":
					panic(leakyError{body: "apiKey=secret-value-123"})
				}
				return nil
			}}
			s := openStore(t, opts, sink)
			ctx := context.Background()
			var items []Item
			for _, k := range []string{"a", "boom", "b", "index", "typed-nil", "leaky", "c"} {
				items = append(items, item(k, "firing"))
			}
			require.NoError(t, s.Enqueue(ctx, items))
			var dead []DeadLetter
			require.Eventually(t, func() bool {
				var err error
				dead, err = s.DeadLetters(ctx)
				require.NoError(t, err)
				return len(dead) == 4 && len(sink.all()) == 3
			}, 15*time.Second, 20*time.Millisecond)
			byKey := map[string]DeadLetter{}
			for _, dl := range dead {
				byKey[dl.Key] = dl
				require.Equal(t, sinks.ReasonExhausted, dl.Reason, "retried, then dead-lettered")
				require.Equal(t, 2, dl.Attempts)
			}
			require.Contains(t, byKey["boom"].Error, "the pagerduty sink panicked (string)")
			require.Contains(t, byKey["index"].Error, "index out of range [5] with length 0")
			require.Contains(t, byKey["typed-nil"].Error, "panicked (*runtime.TypeAssertionError)")
			require.Contains(t, byKey["leaky"].Error, "panicked (queue.leakyError)")
			require.Contains(t, logs.String(), "Sink panicked")
			all := logs.String()
			for _, dl := range dead {
				all += dl.Error
			}
			require.NotContains(t, all, "secret-value-123")
		})
	}
}

// A panic that a passing condition set off heals with the retry.
func TestSinkPanicOnceIsDelivered(t *testing.T) {
	var panicked atomic.Bool
	sink := &recordingSink{fail: func(n *sinks.Notification) error {
		if panicked.CompareAndSwap(false, true) {
			panic("once")
		}
		return nil
	}}
	s := openStore(t, drivers()[0].opts(t), sink)
	ctx := context.Background()
	require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
	require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 10*time.Second, 20*time.Millisecond)
	dead, err := s.DeadLetters(ctx)
	require.NoError(t, err)
	require.Empty(t, dead)
}

// pacingSink's own rate limiting (run by the worker before Deliver,
// outside callSink) panics the first times.
type pacingSink struct {
	recordingSink
	panics atomic.Int32
}

func (p *pacingSink) Pace(ctx context.Context, maxWait time.Duration) (time.Duration, error) {
	if p.panics.Add(-1) >= 0 {
		panic("pace bug")
	}
	return 0, nil
}

var _ pacer = (*pacingSink)(nil)

// A panic outside the sink's Deliver — its limiter, the plan, the
// bookkeeping — runs on a goroutine of Work's own, which River's recovery
// does not reach: it retries the key with the job instead of ending the
// process.
func TestPanicOutsideDeliverIsRetried(t *testing.T) {
	sink := &pacingSink{}
	sink.panics.Store(2)
	s := openStore(t, drivers()[0].opts(t), sink)
	require.NoError(t, s.Enqueue(context.Background(), []Item{item("a", "firing")}))
	require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 10*time.Second, 20*time.Millisecond)
}

// A sink that never returns from Deliver (runtime.Goexit) leaves its key
// to the next attempt: neither counted as delivered nor left pending with
// no job.
func TestSinkGoexitIsRetried(t *testing.T) {
	var once atomic.Bool
	sink := &recordingSink{fail: func(n *sinks.Notification) error {
		if once.CompareAndSwap(false, true) {
			runtime.Goexit()
		}
		return nil
	}}
	s := openStore(t, drivers()[0].opts(t), sink)
	require.NoError(t, s.Enqueue(context.Background(), []Item{item("g", "firing")}))
	require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 10*time.Second, 20*time.Millisecond)
}

// A panic is not an answer of the target: a down target whose probe
// panics stays down, its held work stays held.
func TestSinkPanicDoesNotBringATargetBack(t *testing.T) {
	var mu sync.Mutex
	mode := "down"
	sink := &recordingSink{fail: func(n *sinks.Notification) error {
		mu.Lock()
		defer mu.Unlock()
		if mode == "down" {
			return sinks.Retryable(sinks.ReasonNetwork, 0, errors.New("connection refused"))
		}
		panic("boom")
	}}
	s, logs := downStore(t, sink)
	mu.Lock()
	mode = "panic"
	mu.Unlock()
	require.Eventually(t, func() bool { return logs.Len() > 0 && strings.Contains(logs.String(), "Sink panicked") }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	require.NotContains(t, logs.String(), "Target is back", "a panic is not an answer of the target")
	require.Len(t, s.Down(), 1)
}

// A panic outside Deliver that outlasts max_attempts does not leave its
// key pending with no job (River discards a job at its last attempt): the
// job comes back after max_backoff until the key is delivered.
func TestPanicOutsideDeliverOutlastingMaxAttempts(t *testing.T) {
	sink := &pacingSink{}
	sink.panics.Store(5)
	opts := drivers()[0].opts(t)
	opts.MaxAttempts = 2
	s := openStore(t, opts, sink)
	require.NoError(t, s.Enqueue(context.Background(), []Item{item("a", "firing")}))
	require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 15*time.Second, 20*time.Millisecond)
	require.LessOrEqual(t, sink.panics.Load(), int32(0))
}

// triggerThenPanic sends (records) its first trigger, then panics, as a
// sink that fails on the target's reply after the call left would.
type triggerThenPanic struct {
	recordingSink
	panicked atomic.Bool
}

func (p *triggerThenPanic) Deliver(ctx context.Context, n *sinks.Notification) error {
	if err := p.recordingSink.Deliver(ctx, n); err != nil {
		return err
	}
	if n.Status() == sinks.StatusFiring && p.panicked.CompareAndSwap(false, true) {
		panic("decoding the reply")
	}
	return nil
}

// A panic may come after its call left: the next attempt treats the key's
// phase as unknown, so a resolve that arrived meanwhile is still sent (the
// target may hold an open incident).
func TestPanicAfterTheCallStillResolves(t *testing.T) {
	sink := &triggerThenPanic{}
	s := openStore(t, drivers()[0].opts(t), sink)
	ctx := context.Background()
	require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
	require.Eventually(t, func() bool { return sink.panicked.Load() }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, s.Enqueue(ctx, []Item{item("a", sinks.StatusResolved)}))
	require.Eventually(t, func() bool {
		got := sink.all()
		return len(got) >= 2 && got[len(got)-1].Status() == sinks.StatusResolved
	}, 10*time.Second, 20*time.Millisecond)
}

// schedulingSink's rate-limit schedule, run on the committer when its
// jobs are inserted, panics.
type schedulingSink struct{ recordingSink }

func (*schedulingSink) Schedule(n, class int) time.Duration { panic("schedule bug") }
func (*schedulingSink) Unschedule(n, class int)             {}

var _ scheduler = (*schedulingSink)(nil)

// A panic in a sink's schedule, on the committer that every intake
// request waits for, neither ends the process nor fails the intake: the
// job is inserted unscheduled and delivered.
func TestSchedulePanicStillEnqueues(t *testing.T) {
	sink := &schedulingSink{}
	s := openStore(t, drivers()[0].opts(t), sink)
	require.NoError(t, s.Enqueue(context.Background(), []Item{item("a", "firing")}))
	require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 10*time.Second, 20*time.Millisecond)
}

// A job that fails at or past delivery.max_attempts of its own snoozes
// until its next retry instead of being discarded (a job inserted before
// riverMaxAttempts) or piling up one error per attempt. A job gets there
// legitimately, its keys' attempts being counted each (a warning only
// when no key's own attempt failed), and its snooze keeps the target's
// Retry-After.
func TestPastMaxAttemptsSnoozes(t *testing.T) {
	logs := &testenv.LogBuffer{}
	s := &Store{logger: slog.New(slog.NewTextHandler(logs, nil)), opts: Options{MaxAttempts: 50, MaxBackoff: time.Minute}}
	s.retry = &backoff{min: time.Second, max: time.Minute, hints: &s.retryHints}
	failed := errors.New("queue: ack: database is locked")
	keyFailed := errors.Join(&keyError{text: "held", err: failed}, &keyError{text: "pagerduty: 503", err: failed, counted: true})
	for _, c := range []struct {
		name         string
		attempt, max int
		err          error
		hint         time.Duration
		snoozed      time.Duration // 0: not snoozed; else about this long
		warned       bool
	}{
		{"success", 60, riverMaxAttempts, nil, 0, 0, false},
		{"before max_attempts", 49, riverMaxAttempts, failed, 0, 0, false},
		{"at max_attempts", 50, riverMaxAttempts, failed, 0, time.Minute, true},
		{"past it", 51, riverMaxAttempts, failed, 0, time.Minute, true},
		{"an older job's last attempt", 5, 5, failed, 0, 16 * time.Second, true},
		{"an older job before it", 4, 5, failed, 0, 0, false},
		{"a key's own attempt past the job's", 51, riverMaxAttempts, keyFailed, 0, time.Minute, false},
		{"the target's Retry-After", 51, riverMaxAttempts, keyFailed, 3 * time.Second, 3 * time.Second, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			logs.Reset()
			if c.hint > 0 {
				s.retryHints.Store(int64(7), time.Now().Add(c.hint))
			}
			err := s.notDiscarded("r/pagerduty/0", &rivertype.JobRow{ID: 7, Attempt: c.attempt, MaxAttempts: c.max}, c.err)
			var snooze *river.JobSnoozeError
			require.Equal(t, c.snoozed > 0, errors.As(err, &snooze))
			if c.snoozed == 0 {
				require.Equal(t, c.err, err)
				return
			}
			// The back-off's ±20% jitter; a hint is exact.
			require.InDelta(t, c.snoozed.Seconds(), snooze.Duration.Seconds(), c.snoozed.Seconds()*0.21)
			require.Equal(t, c.warned, strings.Contains(logs.String(), "level=WARN"), logs.String())
			_, hinted := s.retryHints.Load(int64(7))
			require.False(t, hinted, "the hint is used once")
		})
	}
	err := s.notDiscarded("r/pagerduty/0", &rivertype.JobRow{ID: 7, Attempt: 60, MaxAttempts: riverMaxAttempts}, river.JobSnooze(time.Second))
	var snooze *river.JobSnoozeError
	require.ErrorAs(t, err, &snooze, "a snooze stays one")
	require.Equal(t, time.Second, snooze.Duration)
}

// Whether an attempt may have left calls unrecorded survives what River
// keeps no error for (a shutdown, a snooze): it is in the job's metadata.
func TestCallsUnrecordedReadsMetadata(t *testing.T) {
	for _, c := range []struct {
		meta string
		want bool
	}{
		{`{}`, false},
		{`{"alertfan_uncertain": true}`, true},
		{`{"alertfan_uncertain":false, "snoozes": 3}`, false},
		{`not json`, false},
	} {
		require.Equal(t, c.want, callsUnrecorded(&rivertype.JobRow{Attempt: 1, Metadata: []byte(c.meta)}), c.meta)
	}
}

// triggerThenHang records its trigger (the call left) and then hangs until
// the job's context ends, as a call in flight at shutdown.
type triggerThenHang struct{ recordingSink }

func (p *triggerThenHang) Deliver(ctx context.Context, n *sinks.Notification) error {
	if err := p.recordingSink.Deliver(ctx, n); err != nil {
		return err
	}
	if n.Status() == sinks.StatusFiring {
		<-ctx.Done()
		return sinks.Retryable(sinks.ReasonNetwork, 0, fmt.Errorf("Post \"https://events.pagerduty.com\": %w", ctx.Err()))
	}
	return nil
}

// A trigger whose call was cut off by a shutdown may be open at the
// target: after the restart a resolve is still sent, although River keeps
// no error for an attempt a shutdown interrupted.
func TestCancelledAtShutdownStillResolves(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			opts := d.opts(t)
			sink := &triggerThenHang{}
			s := openStore(t, opts, sink)
			ctx := context.Background()
			require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
			require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 10*time.Second, 5*time.Millisecond)
			sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			_ = s.Close(sctx)
			after := &recordingSink{}
			s2 := openStore(t, opts, after)
			require.NoError(t, s2.Enqueue(ctx, []Item{item("a", sinks.StatusResolved)}))
			require.Eventually(t, func() bool {
				got := after.all()
				return len(got) >= 1 && got[len(got)-1].Status() == sinks.StatusResolved
			}, 10*time.Second, 20*time.Millisecond, "the trigger may be open at the target; no resolve was sent")
		})
	}
}

// A key error as River stores it is valid UTF-8 without NUL and cut, and
// still unwraps to the original (River tells a shutdown by its context
// error).
func TestKeyErrorIsStorable(t *testing.T) {
	orig := fmt.Errorf("503: \xfc\x00 %w", context.Canceled)
	e := &keyError{text: storableError(orig.Error()), err: orig}
	require.ErrorIs(t, e, context.Canceled)
	require.NotContains(t, e.Error(), "\x00")
	long := &keyError{text: storableError(strings.Repeat("\xe9a", 1000))}
	require.LessOrEqual(t, len(long.Error()), maxHistError)
	require.True(t, utf8.ValidString(long.Error()))
}

// A dead letter whose error holds a target's reply in another encoding
// (a proxy's Latin-1 page), or a NUL, is stored — PostgreSQL refuses
// both in TEXT, and a refused dead letter failed the batch at every try.
func TestDeadLetterOfAnyEncodingIsStored(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			sink := &recordingSink{fail: func(n *sinks.Notification) error {
				return sinks.Permanent(sinks.ReasonClientError, errors.New("403: Zugriff verweigert \xfc\xe4 \x00end"))
			}}
			s := openStore(t, d.opts(t), sink)
			ctx := context.Background()
			require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
			dead := waitDeadLetters(t, s, 1)
			require.Contains(t, dead[0].Error, "Zugriff verweigert \uFFFD")
			require.Contains(t, dead[0].Error, "end")
		})
	}
}

// A retryable error whose text holds a NUL (a target's raw reply) is kept
// with the job's attempt like any other: PostgreSQL refused it in River's
// errors, and River's completer then retried its whole batch forever.
func TestRetryErrorWithNULIsRetried(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			var failed atomic.Bool
			sink := &recordingSink{fail: func(n *sinks.Notification) error {
				if n.Key == "a" && failed.CompareAndSwap(false, true) {
					return sinks.Retryable(sinks.ReasonServerError, 0, errors.New("502: <html>\x00\xff</html>"))
				}
				return nil
			}}
			s := openStore(t, d.opts(t), sink)
			ctx := context.Background()
			require.NoError(t, s.Enqueue(ctx, []Item{item("a", "firing")}))
			require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 10*time.Second, 20*time.Millisecond)
			require.NoError(t, s.Enqueue(ctx, []Item{item("b", "firing")}))
			require.Eventually(t, func() bool { return len(sink.all()) == 2 }, 10*time.Second, 20*time.Millisecond)
		})
	}
}

// An attempt marks its job uncertain when it may have left calls
// unrecorded, and also when it inherited that from an attempt no one
// marked (an orphan, a rescue) and now fails plainly: the attempt after
// reads only this one's error.
func TestFinishAttemptMarksUncertainty(t *testing.T) {
	var marked int
	old := markUncertain
	markUncertain = func(context.Context) { marked++ }
	t.Cleanup(func() { markUncertain = old })
	s := &Store{logger: slog.New(slog.DiscardHandler), opts: Options{MaxAttempts: 50, MaxBackoff: time.Minute}}
	rescued := []rivertype.AttemptError{{Attempt: 2, Error: "Stuck job rescued by JobRescuer"}}
	plain := []rivertype.AttemptError{{Attempt: 2, Error: "pagerduty: 500"}}
	for _, c := range []struct {
		name   string
		errs   []rivertype.AttemptError
		err    error
		marked bool
	}{
		{"success", rescued, nil, false},
		{"a plain failure", plain, errors.New("pagerduty: 500"), false},
		{"a timeout", plain, fmt.Errorf("post: %w", context.DeadlineExceeded), true},
		{"a panic", plain, fmt.Errorf("the sink %w (string)", errSinkPanicked), true},
		{"a plain failure after a rescue", rescued, errors.New("pagerduty: 500"), true},
		{"a plain failure after an orphan", nil, errors.New("pagerduty: 500"), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			marked = 0
			err := s.finishAttempt(context.Background(), "r/pagerduty/0", &rivertype.JobRow{Attempt: 3, MaxAttempts: riverMaxAttempts, Errors: c.errs}, c.err)
			require.Equal(t, c.err, err)
			require.Equal(t, c.marked, marked == 1)
		})
	}
}
