package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/alertfan/alertfan/sinks"
)

// Sink is what the queue needs from a destination.
type Sink interface {
	// Deliver brings the target in line with the notification. A failure
	// should be a *sinks.Error; anything else is retried.
	Deliver(ctx context.Context, n *sinks.Notification) error
}

// Target is a configured destination: one entry of a receiver's
// pagerduty_configs or backlog_configs.
type Target struct {
	ID       string // "<receiver>/<kind>/<index>", stable across reloads
	Kind     string // one of Kinds; also the River queue it runs in
	Receiver string
	Sink     Sink
	// Destination names where the target sends (sinks.DestinationID).
	// When a reload or restart finds another destination at a target's
	// ID, the alerts the old one holds go with it (see SetTargets).
	Destination string
}

// keySeq names one work item and the pending generation the job owns.
type keySeq struct {
	Key string `json:"k"`
	Seq int64  `json:"s"`
}

type deliverArgs struct {
	Target string `json:"target"`
	// Class is the keys' priority class for the target's rate limit.
	Class int      `json:"class,omitempty"`
	Keys  []keySeq `json:"keys"`
}

func (deliverArgs) Kind() string { return "alertfan_deliver" }

// keyParallelism bounds concurrent deliveries within one job; River's
// MaxWorkers bounds the jobs.
const keyParallelism = 16

// admitter is implemented by sinks with a proactive rate limit.
type admitter interface {
	// Admit returns 0 when a delivery of the priority class may start
	// now, else how long to park.
	Admit(class int) time.Duration
}

// scheduler is implemented by sinks with a proactive rate limit: it books
// keys deliveries of a priority class and says how long their job should
// wait before running.
type scheduler interface {
	Schedule(keys, class int) time.Duration
	// Unschedule gives back what Schedule booked for keys that turned
	// out to need no call (releaseBooked).
	Unschedule(keys, class int)
}

// pacer is implemented by sinks with a proactive rate limit: Pace waits
// for a call's turn (its priority class comes from ctx) and returns a
// sinks.Error with ReasonRateLimitWait when the turn is too far off. The
// worker paces before it takes its last look at the state, then lets the
// sink make the call on the slot it waited for (sinks.WithPrepaid).
type pacer interface {
	// Pace returns how long it waited.
	Pace(ctx context.Context, maxWait time.Duration) (time.Duration, error)
}

// maxPaceWait bounds how long a key waits in-process for its turn; a later
// turn parks the key (its job is snoozed), so that few keys sit holding a
// state that may change before their call — and a queued trigger whose
// alert resolves is dropped by a re-plan, not sent.
const maxPaceWait = 2 * time.Second

// maxRunTaking bounds how long one run of a job takes up new keys: a
// rate-limited key's job whose calls go one turn after another holds a
// River worker while they do, and hands it back this often.
const maxRunTaking = 20 * time.Second

// rereadAfter is the shortest wait — for intake's turn or for its pace —
// after which the key's state is read again before the call. A shorter
// one is a fast target's limiter spacing its calls (microseconds at high
// rates), where the re-read cost a store query per call; an update that
// lands meanwhile is sent next, as one that lands during the call is.
const rereadAfter = 10 * time.Millisecond

// readStaleAfter is how old a key's state may be at its call, whatever
// it waited for, before it is read again.
const readStaleAfter = time.Second

// mayHaveChanged reports whether the state of (target, key) read at readAt
// may have been written since. On SQLite this process's intake is its only
// writer and says so (touched), at the cost of a map lookup. On PostgreSQL
// another replica may have written it, and reading it again costs a round
// trip: it is read again after a wait of the key's (waited: for intake's
// turn or its pace), when it is pgRereadAfter old, as a call or an earlier
// step takes, and at readStaleAfter.
func (s *Store) mayHaveChanged(target, key string, readAt time.Time, waited bool) bool {
	age := time.Since(readAt)
	if age >= readStaleAfter {
		return true
	}
	if s.dialect == dialectSQLite {
		return s.touched.changedSince(target, key, readAt)
	}
	return waited || age >= pgRereadAfter
}

// pgRereadAfter is how old a key's state may be at its call on PostgreSQL
// before it is read again, when the key waited for nothing: longer than a
// job's keys take to start their calls on its goroutines in a drain
// (re-reading each doubled the store's reads), shorter than a slow call.
const pgRereadAfter = 100 * time.Millisecond

// PriorityAging moves waiting work up one priority class per period, so
// that a steady flow of better work never starves worse work: after four
// periods everything is in the best class, first come first served.
const PriorityAging = time.Minute

// holder is implemented by sinks with a rate limit: Hold keeps every call
// of the key back for a while (the target answered 429).
type holder interface {
	Hold(d time.Duration)
}

// heldReporter is implemented by sinks that hold a key after a 429: it
// says until when the hold is in force (zero or past: none).
type heldReporter interface {
	HeldUntil() time.Time
}

// effectiveClass is a job's class after aging.
func effectiveClass(job *rivertype.JobRow, class int) int {
	return max(0, class-int(time.Since(job.CreatedAt)/PriorityAging))
}

type worker struct {
	river.WorkerDefaults[deliverArgs]
	s *Store
}

type state struct {
	version, delivered, seq int64
	pending                 bool
	payload                 []byte
	want, phase             Phase
	firePayload             []byte
	digest, sentDigest      string
	occ, sentOcc            int64
	closePayload            []byte
	// attempts are the key's failed attempts at its pending work under
	// its seq since its last ack, and failingSince (Unix nanoseconds, 0:
	// none) when the first of them failed: what delivery.max_attempts and
	// max_age judge.
	attempts     int
	failingSince int64
	// readAt is when the state was read from the store.
	readAt time.Time
	// paced: a slot of the rate limit was taken for a call of the key, and
	// this newer state, read after it, takes it over; fresh: the state was
	// read just before its call and is sent as it is (see deliver).
	paced, fresh bool
	// uncertain: an earlier attempt of the job owning the key may have
	// made a call it could not record (see callsUnrecorded), or the row
	// says so of an earlier job's (unsettled, migration 35).
	uncertain bool
	unsettled bool
	// ref is what the target holds open for the key (migration 39).
	ref string
	// class is the best priority class asked of the pending work since
	// its job was enqueued (migration 42).
	class int
	// targetsGen is Store.targetsGen when the state was read.
	targetsGen int64
}

// loadStates reads the states of a job's keys in one query.
func (s *Store) loadStates(ctx context.Context, target string, keys []keySeq) (map[string]*state, error) {
	q := `SELECT key, version, delivered, seq, pending, payload, want, phase, fire_payload, digest, sent_digest, occ, sent_occ, close_payload,
		CASE WHEN attempts_seq = seq THEN attempts ELSE 0 END, CASE WHEN attempts_seq = seq THEN failing_since ELSE 0 END, uncertain, ref, class
		FROM alertfan_state WHERE target = ? AND key IN (` +
		placeholders(len(keys)) + `)`
	args := make([]any, 0, len(keys)+1)
	args = append(args, target)
	for _, k := range keys {
		args = append(args, k.Key)
	}
	readAt := time.Now() // what the query reads is at least this new
	gen := s.targetsGen.Load()
	rows, err := s.rdb.QueryContext(ctx, s.rebind(q), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string]*state, len(keys))
	for rows.Next() {
		var st state
		var key, payload, fire, closing string
		var pending, uncertain int
		if err := rows.Scan(&key, &st.version, &st.delivered, &st.seq, &pending, &payload, &st.want, &st.phase, &fire, &st.digest, &st.sentDigest,
			&st.occ, &st.sentOcc, &closing, &st.attempts, &st.failingSince, &uncertain, &st.ref, &st.class); err != nil {
			return nil, err
		}
		st.pending = pending == 1
		st.unsettled = uncertain == 1
		st.readAt, st.targetsGen = readAt, gen
		st.payload = []byte(payload)
		st.firePayload = []byte(fire)
		st.closePayload = []byte(closing)
		out[key] = &st
	}
	return out, rows.Err()
}

// outcome of one key's work within a job attempt.
type outcome struct {
	retry      bool          // keep the key for another attempt
	retryAfter time.Duration // > 0: the target or our limiter said when
	park       bool          // only our own limiter asked to wait
	err        error
	// failedSince is set when the key's own attempt failed (a call made
	// or tried, counted toward max_attempts): when its run of failures
	// began. Zero for what is no attempt of the key — a park, a key held
	// while its target is down, a failure of the store.
	failedSince time.Time
	// superseded: the key's ack applied to nothing; another run of the
	// job may be at work on it (see sqlAckDone).
	superseded bool
	// decided is when the key's work returned: retryAfter counts from
	// then, not from the end of the job's run (see Work).
	decided time.Time
}

// pacedKey holds, in a job's context, the count of its calls that took a
// turn of the target's rate limit (Pace).
type pacedKey struct{}

// releaseBooked gives the target's limiter back the calls its job was
// booked for (batch.jobs: one per key) and that its keys, done, did not
// make: their alerts resolved before their turn, a newer job took them
// over, or a resolve needed no call at the target. Calls booked after
// them would otherwise be planned behind calls that never come — a new
// page minutes late behind a storm that resolved (a fresh helper: 8
// minutes at 120/min after 1,000 warnings resolved). Keys kept for
// another attempt keep their booking. Only the keys this run took up
// (todo: pending under the job's seq) count: a key an earlier run of the
// job settled is not pending any more, and was given back then.
func (w *worker) releaseBooked(a deliverArgs, todo []int, outcomes []outcome, paced int) {
	t, _ := w.s.target(a.Target)
	sch, ok := t.Sink.(scheduler)
	if !ok {
		return
	}
	done := 0
	for _, i := range todo {
		if !outcomes[i].retry {
			done++
		}
	}
	if n := done - paced; n > 0 {
		w.s.unschedule(sch, a.Target, n, a.Class)
	}
}

// Work delivers the newest state of each of the job's keys, several at
// once. A key whose delivery fails retryably keeps the job alive: River
// retries it and keys already delivered are skipped then because they are
// no longer pending under this seq.
//
// Only alertfan's own pacing parks a job without spending an attempt
// (River's snooze); every answer of the target — a Retry-After included —
// is an attempt that counts toward max_attempts and max_age.
func (w *worker) Work(ctx context.Context, job *river.Job[deliverArgs]) (err error) {
	s, a := w.s, job.Args
	start := time.Now()
	// River recovers a panic here too, but logs and stores its value,
	// which may hold anything: recover it first, as callSink does.
	defer func() {
		if r := recover(); r != nil {
			what := s.logPanic("Delivery panicked; the job will be retried", r, "target", a.Target, "job_id", job.ID)
			err = fmt.Errorf("queue: the job %w (%s); see alertfan's log", errSinkPanicked, what)
		}
		err = s.finishAttempt(ctx, a.Target, job.JobRow, err)
	}()
	if s.dialect == dialectPostgres {
		if k, ok := keyOf(job.ID, job.AttemptedAt); ok {
			s.fetchLost.started(k)
		}
	}
	if len(a.Keys) == 0 {
		return nil
	}
	// A replica whose configuration puts another destination at this id
	// than the one loaded last (a rolling reload under way) leaves the job
	// to a replica with that configuration: sent from here, it would reach
	// the destination this configuration has at the id.
	if differs, err := s.targetDiffers(ctx, a.Target); err != nil {
		return err
	} else if differs {
		return river.JobSnooze(targetsDifferWait)
	}
	states, err := s.loadStates(ctx, a.Target, a.Keys)
	if err != nil {
		return fmt.Errorf("load states: %w", err)
	}
	ctx = sinks.WithPriority(ctx, effectiveClass(job.JobRow, a.Class))
	var paced atomic.Int64
	ctx = context.WithValue(ctx, pacedKey{}, &paced)
	gen := s.replanGen.Load()
	outcomes := make([]outcome, len(a.Keys))
	var todo []int
	for i, k := range a.Keys {
		st := states[k.Key]
		if st == nil || !st.pending || st.seq != k.Seq {
			s.unrecorded.drop(a.Target, k)
			continue // a newer job owns this key, or nothing is left to do
		}
		todo = append(todo, i)
	}
	// Keys whose newest update asks a better class than this job's go to
	// a job of that class (escalate.go) instead of taking this one's turn.
	if moved := escalated(a, states, todo); len(moved) > 0 {
		e := escalation{jobID: job.ID, kind: job.Queue, args: a, moved: moved, uncertain: callsUnrecorded(job.JobRow)}
		if ok, err := s.escalate(ctx, e, "running"); err != nil {
			s.logger.Debug("Could not move escalated keys to a better class; they go at this job's", "target", a.Target, "job_id", job.ID, "err", err)
		} else if ok {
			todo = slices.DeleteFunc(todo, func(i int) bool { return e.moves(a.Keys[i]) })
		}
	}
	// keyParallelism goroutines take the keys in turn rather than one
	// goroutine per key: a delivery's stack (JSON, template, HTTP) grows
	// a new goroutine's several times, and the copies were 6% of a
	// drain's CPU (BENCHMARKS.md, "A job's keys on 16 goroutines, not one
	// each").
	//
	// Until its work returns, a key's outcome is a retry: a goroutine that
	// never comes back from it (runtime.Goexit) leaves its keys to the
	// job's next attempt rather than counting them as done.
	for _, i := range todo {
		outcomes[i] = outcome{retry: true, err: errKeyUnfinished}
	}
	//
	// A goroutine whose key parked (its turn on the rate limit is beyond
	// maxPaceWait, the target is down) takes no more keys: the ones left
	// would park the same way, and would leave the limiter with none of
	// the job's calls waiting in it once the goroutines still holding a
	// turn were served. The goroutines that got a turn go on to the next
	// key after their call, so the job keeps its calls waiting in the
	// limiter, where a better class goes first, for as long as it has
	// keys: parking them all at once served two keys per run at 60/min,
	// and a queued warning job took every other slot from a later
	// critical one (a fresh helper). The run takes new keys for at most
	// maxRunTaking (half of job_timeout if less); the keys it did not
	// start park for when the first parked key's turn comes, or come back
	// at once.
	var next atomic.Int64
	var parked atomic.Pointer[outcome]
	runUntil := start.Add(min(s.opts.JobTimeout/2, maxRunTaking))
	var wg sync.WaitGroup
	for range min(len(todo), keyParallelism) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if time.Now().After(runUntil) {
					o := outcome{retry: true, park: true, retryAfter: time.Millisecond, decided: time.Now(),
						err: sinks.Retryable(sinks.ReasonRateLimitWait, time.Millisecond, errors.New("the job's run took up new keys for as long as one run may"))}
					parked.CompareAndSwap(nil, &o)
					return
				}
				n := int(next.Add(1)) - 1
				if n >= len(todo) {
					return
				}
				i := todo[n]
				k := a.Keys[i]
				outcomes[i] = w.workKeyRecovered(ctx, job, k, states[k.Key])
				outcomes[i].decided = time.Now()
				if o := outcomes[i]; o.park && o.retryAfter > 0 {
					parked.CompareAndSwap(nil, &o)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := parked.Load(); p != nil {
		for _, i := range todo[min(int(next.Load()), len(todo)):] {
			outcomes[i] = *p // never started: parked as the first parked key
		}
	}
	w.releaseBooked(a, todo, outcomes, int(paced.Load()))
	var parkAfter, targetAfter time.Duration
	var failingSince time.Time // the earliest run of failures among the keys
	var keyErrs []error        // storable: River keeps each attempt's error; empty: every key done
	seen := map[string]bool{}
	parkOnly, superseded := true, false
	for _, o := range outcomes {
		if !o.retry {
			continue
		}
		superseded = superseded || o.superseded
		// The job's error (kept by River per attempt) names every distinct
		// failure, not only the first key's: the next attempt reads it
		// to tell whether any key's calls may have left unrecorded
		// (callsUnrecorded).
		if msg := storableError(o.err.Error()); !seen[msg] && len(keyErrs) < maxJobErrors {
			seen[msg] = true
			keyErrs = append(keyErrs, &keyError{text: msg, err: o.err, counted: !o.failedSince.IsZero()})
		}
		if !o.failedSince.IsZero() && (failingSince.IsZero() || o.failedSince.Before(failingSince)) {
			failingSince = o.failedSince
		}
		parkOnly = parkOnly && o.park
		// Come back when the first waiting key's turn comes; the others
		// wait again then with fresh estimates. A key's wait counts from
		// when it parked: the job's run ends only when its slowest key
		// does (one pacing its call for up to maxPaceWait), and a wait
		// counted from then left the limit idle for that long (a storm
		// at 600/min drained 20% slower than the limit allows).
		if o.park {
			left := o.retryAfter - time.Since(o.decided)
			if sinks.AsError(o.err).Reason == sinks.ReasonRateLimitWait {
				// Back when its turn is within the pacing window, to wait
				// for it in the limiter, where a better class goes first
				// and a worse one cannot take the turn while the key is
				// still on its way (River fetches a snoozed job up to a
				// poll interval late).
				left -= maxPaceWait
			}
			left = max(time.Millisecond, left)
			if parkAfter == 0 || left < parkAfter {
				parkAfter = left
			}
		}
		if !o.park && o.retryAfter > targetAfter {
			targetAfter = o.retryAfter
		}
	}
	// A run that found a key's outcome recorded by another run, or that
	// outlasted rescue_after (its process stalled: a rescue may have
	// started another run of the job meanwhile), hands the job back for
	// job_timeout. River records a run's end on the job whoever runs it
	// now (it checks only that the job is running): this run's
	// "completed" would end the other run's job under it, and a key that
	// run then failed stayed pending with no job, its alert's later
	// updates lost (a fresh helper, SIGSTOP on one of two replicas). Past
	// job_timeout the other run is over; the job's next run finds what is
	// left.
	if superseded || time.Since(start) > s.opts.RescueAfter {
		if slices.ContainsFunc(keyErrs, func(e error) bool { return uncertainError(e.Error()) }) {
			markUncertain(ctx)
		}
		s.logger.Debug("Another run of the delivery job may be under way (this one stalled past rescue_after, or found a key's outcome recorded by it); handing the job back until it is over", "target", a.Target, "job_id", job.ID, "took", time.Since(start).Round(time.Millisecond))
		return river.JobSnooze(s.opts.JobTimeout + time.Second)
	}
	switch {
	case len(keyErrs) == 0:
		return nil
	case parkOnly && parkAfter > 0:
		if s.replanGen.Load() != gen {
			parkAfter = min(parkAfter, 100*time.Millisecond)
		}
		return river.JobSnooze(parkAfter)
	default:
		jobErr := keyErrs[0]
		if len(keyErrs) > 1 {
			jobErr = errors.Join(keyErrs...)
		}
		if targetAfter > 0 {
			at := time.Now().Add(targetAfter)
			// A target's wait never outlasts max_age: the attempt at the
			// deadline is the last (tooOld dead-letters its failure).
			if deadline := failingSince.Add(s.opts.MaxAge); s.opts.MaxAge > 0 && !failingSince.IsZero() && at.After(deadline) {
				at = deadline
			}
			s.retryHints.Store(job.ID, at)
		}
		return jobErr
	}
}

// settler is a sink whose calls are not idempotent (a Backlog issue or
// comment): a call cut off before its answer (its timeout, job_timeout)
// may still be served after alertfan gave up on it, and the retry, which
// looks for it before calling again (sinks.Call.Uncertain), must not look
// before it has landed. Settle is how long the retry waits.
type settler interface {
	Settle() time.Duration
}

// targetsDifferWait is how long a replica hands back a job of a target id
// whose destination its configuration and the store's record disagree on:
// a rolling reload's next replica is usually seconds away.
const targetsDifferWait = 2 * time.Second

// maxJobErrors bounds the distinct key errors a job's error names (each
// cut to maxHistError bytes).
const maxJobErrors = 8

// keyError is a key's error as River stores it with the job's attempt:
// valid UTF-8 without NUL (PostgreSQL refuses a NUL in jsonb, and River's
// completer then retried its whole batch forever) and cut, while errors.Is
// still sees the original (River tells a shutdown by its context error).
type keyError struct {
	text string
	err  error
	// counted: the failure was the key's own attempt (outcome.failedSince).
	counted bool
}

func (e *keyError) Error() string { return e.text }
func (e *keyError) Unwrap() error { return e.err }

// riverMaxAttempts is the attempts River allows a job: its max_attempts
// column's largest value (a smallint on PostgreSQL). alertfan judges a
// delivery's attempts itself, per key against delivery.max_attempts
// (deliver dead-letters the key), because River discards a job at its last
// attempt — and with it keys still to retry for a reason other than the
// target (the store failing on the ack, a panic, a rate-limit wait beside
// them), left pending with no job: never delivered, never dead-lettered,
// and no later update makes a job for them. Its rescuer does the same to
// a stuck job at its last attempt.
const riverMaxAttempts = 32767

// notDiscarded handles a job that failed at or past delivery.max_attempts
// of its own by snoozing it until its next retry instead: River would
// discard a job inserted before riverMaxAttempts at its last attempt, and
// would keep one error per attempt of the others, up to 32,767. A job
// gets there legitimately — each of its up to 16 keys has max_attempts of
// its own, and a key that probes a down target fails while the others
// wait — or because something other than a target keeps failing, which
// is worth a warning. A snooze records no error; whether a call may have
// left unrecorded is in the job's metadata (markUncertain).
func (s *Store) notDiscarded(target string, job *rivertype.JobRow, err error) error {
	var snooze *river.JobSnoozeError
	if err == nil || job.Attempt < min(s.opts.MaxAttempts, job.MaxAttempts) || errors.As(err, &snooze) {
		return err
	}
	var at time.Time
	if s.retry != nil {
		at = s.retry.NextRetry(job) // takes the target's Retry-After hint
	} else {
		at = time.Now().Add(s.opts.MaxBackoff)
	}
	s.retryHints.Delete(job.ID) // a snooze asks no retry policy
	wait := max(time.Until(at), time.Millisecond)
	if keyAttemptsFailed(err) {
		s.logger.Debug("A delivery job passed max_attempts of its own while its keys' attempts are counted each; retrying", "target", target, "job_id", job.ID, "retry_after", wait, "err", err)
	} else {
		s.logger.Warn("Deliveries failed for a reason other than the target past max_attempts; retrying", "target", target, "job_id", job.ID, "retry_after", wait, "err", err)
	}
	return river.JobSnooze(wait)
}

// keyAttemptsFailed reports whether err, a job's error from Work, holds a
// failure that counted as a key's own attempt.
func keyAttemptsFailed(err error) bool {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		if k, ok := e.(*keyError); ok && k.counted {
			return true
		}
	}
	return false
}

// ackRecord is the outcome of one key's work: the version handled, the
// phase the target reached, the content digest it now has, and a dead
// letter when the delivery failed for good.
type ackRecord struct {
	version int64
	// from is the state's delivered as this run read it: the ack and the
	// phase writes apply only while it is still there (see sqlAckDone).
	from   int64
	phase  Phase
	digest string
	occ    int64
	dead   *deadRecord
	// uncertain: a call may have reached the target unrecorded and none
	// since settled it (the row's uncertain column after this ack).
	uncertain bool
	// calls are the history rows of the calls made, written with the ack.
	calls []histRow
	// ref is what the target holds open for the key after these calls
	// (the last call's Ref; "" once resolved).
	ref string
}

// errCallsUnrecorded marks a key's failure whose calls were made but whose
// outcome the store did not take (uncertainError knows its text).
var errCallsUnrecorded = errors.New("queue: calls were made but their outcome is not recorded")

// errKeyUnfinished is the outcome of a key whose work never returned.
var errKeyUnfinished = errors.New("queue: the key's delivery did not finish; retrying")

// workKeyRecovered is workKey on a goroutine of Work's own, where River's
// recovery does not reach: a panic outside the sink's Deliver (which
// callSink recovers) — its limiter, the plan, the bookkeeping — retries
// the key with the job instead of ending the process.
func (w *worker) workKeyRecovered(ctx context.Context, job *river.Job[deliverArgs], k keySeq, st *state) outcome {
	return unlessPanicked(w.s, "Delivery panicked; the job will be retried", []any{"target", job.Args.Target, "key", k.Key},
		func() outcome { return w.workKey(ctx, job, k, st) },
		func(what string) outcome {
			return outcome{retry: true, err: fmt.Errorf("queue: the delivery %w (%s); see alertfan's log", errSinkPanicked, what)}
		})
}

// unlessPanicked returns fn's result, or, when fn does not return, logs
// msg with attrs and the stack (logPanic) and returns failed of what it
// makes of the panic. Not returning is a panic, and also a panic(nil)
// under GODEBUG=panicnil=1 or runtime.Goexit (which goes on regardless),
// for which recover gives nil: never a success.
func unlessPanicked[T any](s *Store, msg string, attrs []any, fn func() T, failed func(what string) T) (v T) {
	returned := false
	defer func() {
		if !returned {
			v = failed(s.logPanic(msg, recover(), attrs...))
		}
	}()
	v = fn()
	returned = true
	return v
}

// workKey brings one key's target in line with its newest state and keeps
// going while newer states arrive, so a burst of updates to one alert
// costs few calls and an update that lands while a call is in flight is
// never lost.
func (w *worker) workKey(ctx context.Context, job *river.Job[deliverArgs], k keySeq, st *state) outcome {
	s, target := w.s, job.Args.Target
	for {
		// An outcome whose bookkeeping write failed is written again; the
		// call it records is never made twice.
		rec, ok := s.unrecorded.take(target, k)
		if !ok {
			rec = ackRecord{version: st.version, from: st.delivered, phase: st.phase, digest: st.sentDigest, occ: st.sentOcc, uncertain: st.unsettled}
			if st.delivered < st.version {
				var o outcome
				var moved *state
				if rec, o, moved = w.advance(ctx, job, k, st); o.retry {
					s.recordFailure(ctx, target, k, rec.from, rec.calls, o.failedSince, o.err)
					return o
				}
				if moved != nil {
					s.recordCalls(ctx, rec.calls)
					// A newer state arrived while the call waited for its
					// turn: plan again from it, nothing was sent for the old.
					st = moved
					continue
				}
			}
		}
		pending, applied, err := s.ack(ctx, target, k, rec)
		if err == nil && !applied {
			// Another run of the job took the key over (a rescue while
			// this one stalled) or it moved on: leave it to that run.
			return outcome{retry: true, park: true, superseded: true, err: errSuperseded}
		}
		if err != nil {
			if !s.forgetUnrecorded.Load() {
				s.unrecorded.put(target, k, rec)
			}
			if len(rec.calls) > 0 {
				// The memory above serves this process only: the job's
				// next attempt may run on another replica (PostgreSQL),
				// or after a restart. Its error says the calls may be at
				// the target already (callsUnrecorded), so that attempt
				// checks before repeating what is not idempotent (a
				// Backlog comment, an issue).
				err = fmt.Errorf("%w: %w", errCallsUnrecorded, err)
				// Counted as a sink's own record that failed is
				// (reason="unrecorded"): calls made that may be retried
				// elsewhere as maybe made. (A job's queue is its sink kind.)
				s.metrics.deliveries.WithLabelValues(job.Queue, s.receiverOfTarget(target), "retry", sinks.ReasonUnrecorded).Inc()
			}
			return outcome{retry: true, err: err}
		}
		if !pending {
			return outcome{}
		}
		states, err := s.loadStates(ctx, target, []keySeq{k})
		if err != nil {
			return outcome{retry: true, err: fmt.Errorf("load state: %w", err)}
		}
		st = states[k.Key]
		if st == nil || !st.pending || st.seq != k.Seq {
			return outcome{}
		}
	}
}

// advance makes the calls plan asks for, in order. A call that fails
// retryably after an earlier one succeeded records the phase reached, so
// the retry does not repeat the earlier call. When a call had to wait for
// the rate limit and a newer state arrived meanwhile, nothing more is sent
// and the newer state is returned to plan from (a trigger whose alert
// resolved while it waited is never sent).
func (w *worker) advance(ctx context.Context, job *river.Job[deliverArgs], k keySeq, st *state) (ackRecord, outcome, *state) {
	s := w.s
	rec := ackRecord{version: st.version, from: st.delivered, phase: st.phase, digest: st.sentDigest, occ: st.sentOcc, ref: st.ref}
	st.uncertain = st.unsettled || callsUnrecorded(job.JobRow)
	steps := plan(st)
	if len(steps) == 0 {
		if st.want == PhaseResolved {
			rec.phase = PhaseResolved // nothing open there: nothing to resolve
			rec.ref = ""
		}
		rec.digest, rec.occ = st.digest, st.occ
		s.metrics.skipped.Inc()
		return rec, outcome{}, nil
	}
	for i, sp := range steps {
		// While the target holds the key open, every call keeps what it
		// was opened with (a PagerDuty dedup_key a template would now
		// render otherwise: a group member gone, a payload-less resolve).
		// A key is also kept from a trigger that failed (its answer lost
		// to a timeout or a dropped connection, it may have opened the
		// incident), with the occurrence it was for: that occurrence's
		// retry and resolve use it rather than render a new one; a later
		// occurrence renders its own (after the older one's resolve, when
		// the failure left it uncertain: plan). A resolve clears it.
		open := rec.phase == PhaseTriggered || rec.phase == PhaseAcknowledged
		pin := ""
		if open || (rec.ref != "" && (sp.closing || rec.occ == st.occ)) {
			pin = rec.ref
		}
		dead, o, moved, call := w.deliver(ctx, job, k, st, sp.payload, pin)
		if call != nil {
			rec.calls = append(rec.calls, *call)
		}
		// The key a failed trigger used is kept with its occurrence
		// (sent_occ): plan and the pin above read them.
		keptRef := o.retry && call != nil && call.ref != "" && !open && sp.to != PhaseResolved && !sp.closing
		if keptRef {
			rec.ref, rec.occ = call.ref, st.occ
		}
		if (o.retry || moved != nil) && (i > 0 || keptRef) {
			if err := s.setPhase(ctx, job.Args.Target, k, rec.from, rec.phase, rec.occ, rec.ref); err != nil {
				s.logger.Debug("Could not record an intermediate phase or a failed call's key; the retry may repeat the call before it or render its key again", "err", err)
			}
		}
		if moved != nil {
			moved.phase, moved.sentOcc, moved.ref = rec.phase, rec.occ, rec.ref
			return rec, outcome{}, moved
		}
		if o.retry {
			return rec, o, nil
		}
		if dead != nil {
			// The key's uncertainty outlives its job: a later change (a
			// resolve) still treats the target as maybe holding it.
			rec.dead, rec.uncertain = dead, st.uncertain || uncertainError(dead.err)
			return rec, outcome{}, nil
		}
		rec.phase = sp.to
		switch {
		case sp.to == PhaseResolved:
			rec.ref = ""
		case call != nil && call.ref != "":
			rec.ref = call.ref
		}
		// The target is now at this occurrence: a closing resolve closed
		// the old one, any other step reached this one. A step of the
		// plan left for a retry (an acknowledge parked for its turn) must
		// not find the occurrence unsent and close it again with the old
		// one's resolve, then trigger it a second time (a fresh helper:
		// trigger, resolve, trigger, acknowledge sent as trigger,
		// resolve, trigger, resolve, trigger, acknowledge — a second
		// page).
		rec.occ = st.occ
	}
	rec.digest, rec.occ = st.digest, st.occ
	return rec, outcome{}, nil
}

// deliver makes one call of st's plan, with payload. It returns a dead
// letter for a permanent failure, or an outcome asking for a retry, and
// the call's history row (nil when no call was made: parked, or the sink
// had nothing to send).
//
// The call is the key's attempt st.attempts+1: delivery.max_attempts and
// max_age judge the key's own failures, not its job's attempts, which
// also count failures of the job's other keys — a key held while another
// probes its down target has not failed.
//
// pin is what the target holds open for the key ("" if nothing), which the
// sink keeps using (sinks.Call.Pinned).
func (w *worker) deliver(ctx context.Context, job *river.Job[deliverArgs], k keySeq, st *state, payload []byte, pin string) (*deadRecord, outcome, *state, *histRow) {
	s, id, version := w.s, job.Args.Target, st.version
	attempt := st.attempts + 1
	var n sinks.Notification
	var derr error
	// Intake goes first (yield.go). The turn comes before the rate-limit
	// turn is taken, so a wait here never bunches paced calls, and before
	// the reload lock and the shutdown check, so neither waits for it.
	//
	// A delivery that would only park (shutting down, its target down)
	// learns so before it queues for a turn: a turn is for a call.
	if s.draining.Load() {
		return nil, handedBack, nil, nil
	}
	if wait := s.health.wait(id, time.Now()); wait > 0 {
		return nil, outcome{retry: true, park: true, retryAfter: wait, err: sinks.Retryable(sinks.ReasonTargetDown, wait, nil)}, nil, nil
	}
	turnWait, err := s.intake.call(ctx)
	if err != nil {
		if errors.Is(err, errDraining) {
			return nil, handedBack, nil, nil
		}
		return nil, outcome{retry: true, park: true, retryAfter: time.Second, err: sinks.Retryable(sinks.ReasonOther, time.Second, err)}, nil, nil
	}
	// A reload that moves stored work between target ids waits for the
	// call to end, and the call waits for the move: never both at once.
	s.swap.RLock()
	defer s.swap.RUnlock()
	if s.draining.Load() {
		// Shutting down: hand the key back to the queue, uncalled.
		return nil, handedBack, nil, nil
	}
	if st.targetsGen != s.targetsGen.Load() {
		// A reload gave ids other destinations after the state was read
		// (SetTargets waited for no call: none was in flight): the key
		// may have moved to another id, and this id may send elsewhere
		// now. Sent, the old state would reach the new destination. The
		// job's next attempt reads it again, where it is now.
		return nil, movedBack, nil, nil
	}
	t, ok := s.target(id)
	if dest, retired := strings.CutPrefix(id, RetiredPrefix); !ok && retired {
		// Another replica's reload retired the destination; this one, not
		// reloaded yet, still has it configured (under its old id): the
		// same destination, whose sink serves the retired id's work.
		t, ok = s.targetOf(dest)
		if !ok && s.dialect == dialectPostgres && time.Since(job.CreatedAt) < s.opts.RescueAfter {
			// A replica that retired it holds its sink until it restarts:
			// leave the work to it for a while rather than dead-letter it.
			return nil, outcome{retry: true, park: true, retryAfter: targetsDifferWait, err: sinks.Retryable(sinks.ReasonNotReady, targetsDifferWait, fmt.Errorf("target %s is not configured in this process; another replica may hold it", id))}, nil, nil
		}
	}
	call := &sinks.Call{Pinned: pin, Uncertain: st.uncertain}
	if st.failingSince != 0 {
		call.FailingSince = time.Unix(0, st.failingSince)
	}
	var probe uint64
	// The key waited long enough for intake's turn or its pace to read its
	// state again before the call.
	stale := turnWait >= rereadAfter
	if ok {
		var wait time.Duration
		if probe, wait = s.health.admit(id, time.Now()); wait > 0 {
			// The target is down and another delivery is probing it.
			return nil, outcome{retry: true, park: true, retryAfter: wait, err: sinks.Retryable(sinks.ReasonTargetDown, wait, nil)}, nil, nil
		}
		if probe != 0 {
			// A probe that ends without the target's answer (parked by the
			// limiter, the state moved on, nothing to send) lets another
			// delivery probe; an answer has settled the target's health
			// already.
			defer s.health.released(id, probe)
		}
	}
	// A newer state that took over a call's paced slot (below) uses it,
	// and is sent as read: a key updated faster than its pace spacing
	// would otherwise take slot after slot and never be called.
	prepaid, fresh := st.paced, st.fresh
	st.paced, st.fresh = false, false
	if prepaid {
		ctx = sinks.WithPrepaid(ctx)
	}
	if ad, isAd := t.Sink.(admitter); ok && isAd && !prepaid {
		if d := ad.Admit(sinks.PriorityFrom(ctx)); d > 0 {
			return w.limitPark(t, k, st, d, sinks.AsError(sinks.Retryable(sinks.ReasonRateLimitWait, d, nil)))
		}
	}
	if pc, isPc := t.Sink.(pacer); ok && isPc && !prepaid {
		// Wait for the call's turn here, then look at the state again: the
		// alert may have moved on while the call waited.
		waited, err := pc.Pace(ctx, maxPaceWait)
		if p, _ := ctx.Value(pacedKey{}).(*atomic.Int64); p != nil && err == nil {
			p.Add(1)
		}
		if err != nil {
			e := sinks.AsError(err)
			if e.Reason == sinks.ReasonRateLimitWait {
				return w.limitPark(t, k, st, e.RetryAfter, e)
			}
			return nil, outcome{retry: true, err: e}, nil, nil
		}
		ctx, prepaid = sinks.WithPrepaid(ctx), true
		if waited >= rereadAfter {
			stale = true
		}
	}
	// The call goes out with the state as it is now when it may have
	// changed since it was read: a resolve accepted meanwhile — while the
	// key waited for intake's turn (in a storm, the very time resolves
	// arrive), for its pace, for its job's other calls or an earlier step
	// of its plan — replaces a trigger that would page for an alert
	// already resolved.
	if ok && !fresh && s.mayHaveChanged(id, k.Key, st.readAt, stale) {
		states, err := s.loadStates(ctx, id, []keySeq{k})
		if now := states[k.Key]; err == nil && now != nil && now.pending && now.seq == k.Seq && now.version != version {
			now.paced, now.fresh = prepaid, true
			return nil, outcome{}, now, nil
		}
	}
	var start time.Time // the call's
	switch {
	case !ok:
		derr = sinks.Permanent(sinks.ReasonUnknownTarget, fmt.Errorf("target %s is not configured in this process (removed, or not yet added here: replicas reloading one by one); queued again when a config that has it is loaded", id))
		t = Target{ID: id, Kind: job.Queue}
	default:
		if err := json.Unmarshal(payload, &n); err != nil {
			derr = sinks.Permanent(sinks.ReasonOther, fmt.Errorf("stored state is unreadable: %w", err))
			break
		}
		start = time.Now()
		s.intake.started(start)
		derr = s.callSink(sinks.WithCall(sinks.WithTarget(ctx, id), call), t, &n)
		s.metrics.attemptDuration.WithLabelValues(t.Kind).Observe(time.Since(start).Seconds())
	}
	if derr == nil {
		if ok && (call.Action != "" || call.StatusCode != 0) {
			// Only a call answered says the target is up: a sink with
			// nothing to send (a Backlog change event, a resolve with
			// on_resolved: none) made none.
			s.targetAnswered(t)
		}
		s.logger.Debug("Delivered", "target", id, "key", k.Key, "status", n.Status(), "alerts", len(n.Alerts))
		s.metrics.deliveries.WithLabelValues(t.Kind, t.Receiver, "success", "").Inc()
		if !n.AcceptedAt.IsZero() {
			s.metrics.latency.WithLabelValues(t.Kind).Observe(time.Since(n.AcceptedAt).Seconds())
		}
		if call.Action == "" {
			return nil, outcome{}, nil, nil // the sink had nothing to send
		}
		return nil, outcome{}, nil, s.callRow(id, k, attempt, call, OutcomeSuccess, nil)
	}
	e := sinks.AsError(derr)
	log := s.logger.With("target", id, "key", k.Key, "attempt", attempt, "reason", e.Reason)
	if e.Reason == sinks.ReasonRateLimitWait {
		// Our own limiter parked the key: not a failure of the target.
		return w.limitPark(t, k, st, e.RetryAfter, e)
	}
	if e.Reason == sinks.ReasonNotReady {
		// This process's copy of the target is not set up (its start
		// check failed): no call was made, so no attempt is spent. The
		// key waits for the next check here, or for a replica whose copy
		// is ready; its deliveries are held, not dead-lettered.
		s.metrics.deliveries.WithLabelValues(t.Kind, t.Receiver, "retry", e.Reason).Inc()
		return nil, outcome{retry: true, park: true, retryAfter: e.RetryAfter, err: e}, nil, nil
	}
	if e.Reason == sinks.ReasonUnrecorded {
		// The target took the call; the sink's record of it is what
		// failed (the store). Neither the target's failure nor the key's
		// attempt: the retry, on any replica, treats the call as maybe
		// made (errCallsUnrecorded) and looks before repeating it.
		s.metrics.deliveries.WithLabelValues(t.Kind, t.Receiver, "retry", e.Reason).Inc()
		log.Debug("The target took the call but its record could not be written; will retry as a call that may have been made", "err", e)
		return nil, outcome{retry: true, err: fmt.Errorf("%w: %w", errCallsUnrecorded, e)}, nil, s.callRow(id, k, attempt, call, OutcomeRetry, e)
	}
	if ctx.Err() != nil && s.draining.Load() {
		// Shutdown cut the call (README, "Shutdown": what is cancelled
		// goes out after the next start): neither the target's answer nor
		// the key's attempt. The error names the cancellation, so the job
		// is marked uncertain: the call may have reached the target.
		log.Debug("Delivery cut by shutdown; handed back", "err", e)
		return nil, outcome{retry: true, err: fmt.Errorf("the call was cut by shutdown (%w): %w", context.Canceled, e)}, nil, s.callRow(id, k, attempt, call, OutcomeRetry, e)
	}
	if ok {
		s.targetFailed(t, e, start, probe, call.StatusCode != 0)
		if h, isH := t.Sink.(holder); isH && e.Reason == sinks.ReasonRateLimited {
			// A 429 is about the key, not this alert: every call of the
			// key waits it out.
			h.Hold(max(e.RetryAfter, s.opts.MinBackoff))
		}
	}
	since := time.Now()
	if st.failingSince > 0 {
		since = time.Unix(0, st.failingSince)
	}
	if e.Retryable && attempt < s.opts.MaxAttempts && !s.tooOld(since) {
		s.metrics.deliveries.WithLabelValues(t.Kind, t.Receiver, "retry", e.Reason).Inc()
		retryAfter := e.RetryAfter
		if st, ok := t.Sink.(settler); ok && uncertainError(e.Error()) {
			// The call was cut, not answered: it may still land. Its
			// retry, which looks for it first, waits until it has.
			retryAfter = max(retryAfter, st.Settle())
		}
		// One line per target state change is logged (targetFailed); each
		// attempt only at debug.
		log.Debug("Delivery failed; will retry", "retry_after", retryAfter, "err", e)
		return nil, outcome{retry: true, retryAfter: retryAfter, err: e, failedSince: since}, nil, s.callRow(id, k, attempt, call, OutcomeRetry, e)
	}
	reason := e.Reason
	if e.Retryable {
		reason = sinks.ReasonExhausted
	}
	return w.deadLetter(t, k, attempt, call, e, reason, log)
}

// deadLetter ends a key's delivery for good with e (reason: e's, or
// attempts_exhausted), counted, logged and recorded with call.
func (w *worker) deadLetter(t Target, k keySeq, attempt int, call *sinks.Call, e *sinks.Error, reason string, log *slog.Logger) (*deadRecord, outcome, *state, *histRow) {
	s := w.s
	s.metrics.deliveries.WithLabelValues(t.Kind, t.Receiver, "dead", reason).Inc()
	log.Error("Delivery failed permanently; dead-lettered", "err", e)
	row := s.callRow(t.ID, k, attempt, call, OutcomeDead, e)
	row.reason = reason
	return &deadRecord{reason: reason, err: e.Error(), attempts: attempt}, outcome{}, nil, row
}

// limitPark parks a key for d because alertfan's own limiter asks it to
// wait (its turn, or its routing key held by a 429's Retry-After): no
// attempt. While a 429's hold is in force, a key that has failed waits no
// further than its max_age (from its first failure), and is dead-lettered
// at that deadline rather than wait on: a target's Retry-After never
// pushes its next attempt past max_age (README, "Retries"). Its turn at
// the rate limit alone never ends a key: that wait is alertfan's.
func (w *worker) limitPark(t Target, k keySeq, st *state, d time.Duration, e *sinks.Error) (*deadRecord, outcome, *state, *histRow) {
	s := w.s
	hr, reports := t.Sink.(heldReporter)
	if held := reports && hr.HeldUntil().After(time.Now()); held && st.failingSince > 0 && s.opts.MaxAge > 0 {
		deadline := time.Unix(0, st.failingSince).Add(s.opts.MaxAge)
		if left := time.Until(deadline); left <= 0 {
			late := sinks.AsError(sinks.Retryable(sinks.ReasonRateLimitWait, d,
				fmt.Errorf("delivery.max_age (%s) passed while the key waited %s more for the target's rate limit", s.opts.MaxAge, d.Round(time.Second))))
			log := s.logger.With("target", t.ID, "key", k.Key, "attempt", st.attempts, "reason", sinks.ReasonExhausted)
			return w.deadLetter(t, k, st.attempts, &sinks.Call{}, late, sinks.ReasonExhausted, log)
		} else if left < d {
			d = left
		}
	}
	s.metrics.rateLimitParks.WithLabelValues(t.Kind).Inc()
	return nil, outcome{retry: true, park: true, retryAfter: d, err: e}, nil, nil
}

// callRow is the history row of one call (or of a failure before any call,
// such as a template that would not render).
func (s *Store) callRow(target string, k keySeq, attempt int, c *sinks.Call, outcome string, e *sinks.Error) *histRow {
	r := &histRow{at: time.Now().UnixNano(), identity: k.Key, target: target, key: k.Key, event: EventCall, receiver: s.receiverOfTarget(target),
		action: c.Action, outcome: outcome, httpStatus: c.StatusCode, attempt: attempt, ref: c.Ref}
	if e != nil {
		r.reason, r.errText = e.Reason, e.Error()
		if r.httpStatus == 0 {
			r.httpStatus = e.StatusCode
		}
	}
	return r
}

// callsUnrecorded reports whether the job's previous attempt may have made
// calls whose outcome it never recorded: the process died during it (an
// orphan recovered at start has no error for that attempt), River's
// rescuer took it back from a dead replica, its calls were cancelled
// (job timeout, shutdown), or the store did not take their outcome
// (errCallsUnrecorded). A trigger may then be open at the target
// although the state says nothing was sent. Snoozes do not count as
// attempts, so a key that only waited for its turn is never uncertain.
func callsUnrecorded(job *rivertype.JobRow) bool {
	var meta struct {
		Uncertain bool `json:"alertfan_uncertain"`
	}
	// Read per key of every attempt: parsed only when the key is there.
	if bytes.Contains(job.Metadata, []byte(metaUncertain)) && json.Unmarshal(job.Metadata, &meta) == nil && meta.Uncertain {
		return true
	}
	if job.Attempt <= 1 {
		return false
	}
	var last *rivertype.AttemptError
	for i := range job.Errors {
		if job.Errors[i].Attempt == job.Attempt-1 {
			last = &job.Errors[i]
		}
	}
	if last == nil {
		return true
	}
	return uncertainError(last.Error)
}

// metaUncertain is the job metadata key that says an attempt of the job
// may have made calls it never recorded. River keeps metadata through
// what it keeps no error for: an attempt interrupted by a shutdown (it
// rewinds the attempt), a snooze. It stays set for the job's life: a
// resolve too many is harmless (PagerDuty ignores one for an unknown
// dedup key; Backlog calls nothing without a recorded issue).
const metaUncertain = "alertfan_uncertain"

// markUncertain records, in the job's metadata, that this attempt may
// have made calls it never recorded (see callsUnrecorded). A variable for
// tests: River's metadata exists only inside its workers.
var markUncertain = func(ctx context.Context) {
	river.MetadataSet(ctx, metaUncertain, true) //nolint:errcheck // fails only outside a worker
}

// metaBackoff is the job metadata key that says the job's snooze is a
// retry's back-off (notDiscarded), not a park for alertfan's own rate
// limit: Replan, which wakes parked jobs when rates change, leaves it to
// its wait (a target's Retry-After among them), as it leaves a retryable
// job.
const metaBackoff = "alertfan_backoff"

// markBackoff records in the job's metadata whether its snooze is a
// retry's back-off. A variable for tests, as markUncertain.
var markBackoff = func(ctx context.Context, on bool) {
	river.MetadataSet(ctx, metaBackoff, on) //nolint:errcheck // fails only outside a worker
}

// finishAttempt is the last step of every attempt of Work that returns
// err: it marks the job uncertain when this attempt may have left calls
// unrecorded, or inherited such an attempt (an orphan, a rescue: no one
// marked it) and fails plainly now — else the attempt after it, reading
// only this one's error, would no longer send the resolve — and keeps
// River from discarding the job (notDiscarded), marking such a snooze as
// a back-off (metaBackoff).
func (s *Store) finishAttempt(ctx context.Context, target string, job *rivertype.JobRow, err error) error {
	if err != nil && (uncertainError(err.Error()) || callsUnrecorded(job)) {
		markUncertain(ctx)
	}
	out := s.notDiscarded(target, job, err)
	var snooze *river.JobSnoozeError
	if errors.As(out, &snooze) {
		backoff := !errors.As(err, &snooze) // notDiscarded made it; else Work parked the job
		if backoff || bytes.Contains(job.Metadata, []byte(metaBackoff)) {
			markBackoff(ctx, backoff)
		}
	}
	return out
}

// uncertainError reports whether an attempt that failed with msg may have
// made calls it never recorded. A panic, or work that never returned, may
// have come after its call left too.
func uncertainError(msg string) bool {
	msg = strings.ToLower(msg)
	return strings.Contains(msg, "rescued") || strings.Contains(msg, "context canceled") ||
		strings.Contains(msg, "deadline exceeded") || strings.Contains(msg, "timeout") ||
		strings.Contains(msg, errSinkPanicked.Error()) || strings.Contains(msg, "did not finish") ||
		strings.Contains(msg, errCallsUnrecorded.Error())
}

// tooOld reports whether a key whose run of failures began at since has
// been failing for longer than max_age.
func (s *Store) tooOld(since time.Time) bool {
	return s.opts.MaxAge > 0 && time.Since(since) > s.opts.MaxAge
}

type deadRecord struct {
	reason   string
	err      string
	attempts int
}

// sqlAckDone acks the state's newest version: nothing is left to do for
// the key. sqlAckNewer acks a version a newer one follows: the key stays
// pending for it. The version handled ends the key's run of failures
// either way: a newer version starts with a clean slate of attempts. The
// ack runs the second only when the first found a newer version, instead
// of one UPDATE … RETURNING pending: on SQLite a RETURNING statement
// costs about twice an Exec (BENCHMARKS.md). Only intake changes a key's
// version, and only upward, so the second finds what the first did not.
//
// Both apply only while the state's delivered is what this run read
// (ackRecord.from): no other run has recorded an outcome since. A job
// runs twice under one seq when a replica that stalled (paused, frozen
// past rescue_after) comes back after another ran the job's rescue. The
// stalled one's late ack set delivered and phase back to its own — over
// a newer version's delivery, or over the same version's that reached
// the target after its own call's answer (its 400 over the rescue's 202:
// a dead letter and no phase, with the incident open at PagerDuty) — and
// pending to 1 with no job left to deliver it (two fresh helpers, SIGSTOP
// on one of two replicas). An ack that applies to nothing makes its run
// hand the job back for the other run to finish (errSuperseded).
const (
	sqlAckDone  = `UPDATE alertfan_state SET delivered = ?, phase = ?, sent_digest = ?, sent_occ = ?, pending = 0, attempts = 0, failing_since = 0, uncertain = ?, ref = ? WHERE target = ? AND key = ? AND seq = ? AND version <= ? AND delivered = ?`
	sqlAckNewer = `UPDATE alertfan_state SET delivered = ?, phase = ?, sent_digest = ?, sent_occ = ?, pending = 1, attempts = 0, failing_since = 0, uncertain = ?, ref = ? WHERE target = ? AND key = ? AND seq = ? AND version > ? AND delivered = ?`
)

// errSuperseded is a key's outcome when its ack applied to nothing.
var errSuperseded = errors.New("queue: another run of the job recorded the key's outcome, or the key moved on; this run's is kept as history only")

// ack records that a version was handled (delivered, needed no call, or
// dead-lettered) and the phase the target reached, and says whether a
// newer version is waiting (pending) and whether the record applied: not
// when another run of the job recorded an outcome since rec.from was
// read, or the key is no longer this job's. It outlives the job's
// context: a delivery that happened must be recorded even during
// shutdown, or it would be made again.
//
// A write that fails (PostgreSQL restarting, a disk full) is retried until
// the job's own deadline (delivery.job_timeout), with the job kept: once
// the job gives up, any replica may run it again, and that replica, not
// knowing the call was made, would make it again. So an outage of the
// store shorter than job_timeout repeats no call. A longer one fails the
// key with errCallsUnrecorded: the retry, on any replica, then treats the
// calls as maybe made (sinks.Call.Uncertain) and checks the target before
// repeating one that is not idempotent.
func (s *Store) ack(ctx context.Context, target string, k keySeq, rec ackRecord) (pending, applied bool, err error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(commitDeadline)
	}
	fn := func(ctx context.Context, b *batch) error {
		for _, r := range rec.calls {
			b.record(r)
		}
		uncertain := 0
		if rec.uncertain {
			uncertain = 1
		}
		args := []any{rec.version, rec.phase, rec.digest, rec.occ, uncertain, rec.ref, target, k.Key, k.Seq, rec.version, rec.from}
		pending, applied = false, false
		for _, q := range [...]string{sqlAckDone, sqlAckNewer} {
			res, err := b.exec(ctx, q, args...)
			if err != nil {
				return fmt.Errorf("queue: ack: %w", err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return fmt.Errorf("queue: ack: %w", err)
			} else if n > 0 {
				pending, applied = q == sqlAckNewer, true
				return recordDead(ctx, b, target, k, rec)
			}
		}
		// The key is no longer this job's (another seq), another run of
		// the job recorded a newer version, or the state is gone: this
		// run's outcome is history, and its failure no dead letter of an
		// alert delivered since.
		return nil
	}
	for i := 0; ; i++ {
		if s.injectAckFailure() {
			err = errInjected
		} else {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitDeadline)
			err = s.submitTo(actx, s.acks, fn)
			cancel()
			if err == nil {
				return pending, applied, nil
			}
		}
		wait := min(time.Duration(100<<min(i, 5))*time.Millisecond, 2*time.Second)
		if errors.Is(err, ErrClosed) || time.Now().Add(wait).After(deadline) {
			break
		}
		time.Sleep(wait)
	}
	return false, false, fmt.Errorf("record delivery: %w", err)
}

// recordDead writes the dead letter an ack carries, if any.
func recordDead(ctx context.Context, b *batch, target string, k keySeq, rec ackRecord) error {
	if rec.dead == nil {
		return nil
	}
	// The error may hold a target's reply in any encoding: a dead letter
	// PostgreSQL refused would fail this batch at every try.
	if _, err := b.exec(ctx, `INSERT INTO alertfan_dead (target, key, version, reason, error, attempts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		target, k.Key, rec.version, rec.dead.reason, storableError(rec.dead.err), rec.dead.attempts, b.now); err != nil {
		return fmt.Errorf("queue: record dead letter: %w", err)
	}
	return nil
}

// sqlFailed counts a key's failed attempt and starts its run of failures,
// over any counts of an earlier seq (see migration 34).
const sqlFailed = `UPDATE alertfan_state SET
	attempts = CASE WHEN attempts_seq = seq THEN attempts + 1 ELSE 1 END,
	failing_since = CASE WHEN attempts_seq = seq AND failing_since <> 0 THEN failing_since ELSE ? END,
	attempts_seq = seq, last_error = ?
	WHERE target = ? AND key = ? AND seq = ? AND pending = 1 AND delivered = ?`

// recordFailure writes the history rows of a failed attempt's calls and,
// when the failure was the key's own attempt (since is when its run of
// failures began; zero: it was not), counts it on the key's state with
// its error. A write that fails leaves the attempt uncounted: the key gets
// one attempt more rather than none. from is the state's delivered as the
// run read it (ackRecord.from): a stalled run's failure is not counted on
// a key another run has recorded an outcome of since.
func (s *Store) recordFailure(ctx context.Context, target string, k keySeq, from int64, calls []histRow, since time.Time, failure error) {
	counted := !since.IsZero()
	if !counted && (len(calls) == 0 || s.opts.NoHistory) {
		return
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitDeadline)
	defer cancel()
	err := s.submitTo(actx, s.acks, func(ctx context.Context, b *batch) error {
		for _, r := range calls {
			b.record(r)
		}
		if !counted {
			return nil
		}
		_, err := b.exec(ctx, sqlFailed, since.UnixNano(), storableError(failure.Error()), target, k.Key, k.Seq, from)
		return err
	})
	if err != nil {
		s.logger.Debug("Could not record a failed attempt's calls, or count it (the key then gets one attempt more)", "target", target, "calls", len(calls), "err", err)
	}
}

// errInjected is the store failure tests inject (see Store.failAcks).
var errInjected = errors.New("queue: injected store failure")

// injectAckFailure consumes one of the ack failures a test asked for.
func (s *Store) injectAckFailure() bool {
	for {
		n := s.failAcks.Load()
		if n <= 0 {
			return false
		}
		if s.failAcks.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// setPhase records the phase a target reached part-way through a plan,
// and the key it holds open for it (ref, with occ: a failed trigger's).
//
// from is the state's delivered as the run read it (ackRecord.from): a
// run of the job that stalled (see sqlAckDone) writes nothing over an
// outcome another run recorded meanwhile.
func (s *Store) setPhase(ctx context.Context, target string, k keySeq, from int64, phase Phase, occ int64, ref string) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitDeadline)
	defer cancel()
	return s.submit(actx, func(ctx context.Context, b *batch) error {
		_, err := b.exec(ctx, `UPDATE alertfan_state SET phase = ?, sent_occ = ?, ref = ? WHERE target = ? AND key = ? AND seq = ? AND delivered = ?`, phase, occ, ref, target, k.Key, k.Seq, from)
		return err
	})
}

// unrecorded keeps, in memory, outcomes of calls that were made but whose
// bookkeeping write failed (disk full, PostgreSQL away), so a retry writes
// the outcome again instead of making the call again. Only a crash loses
// them, and then only calls in flight can repeat.
type unrecorded struct {
	mu sync.Mutex
	m  map[string]ackRecord
}

func unrecordedKey(target string, k keySeq) string {
	return target + "\x00" + k.Key + "\x00" + strconv.FormatInt(k.Seq, 10)
}

func (u *unrecorded) put(target string, k keySeq, rec ackRecord) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]ackRecord{}
	}
	u.m[unrecordedKey(target, k)] = rec
}

func (u *unrecorded) take(target string, k keySeq) (ackRecord, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	rec, ok := u.m[unrecordedKey(target, k)]
	delete(u.m, unrecordedKey(target, k))
	return rec, ok
}

func (u *unrecorded) drop(target string, k keySeq) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.m, unrecordedKey(target, k))
}

// backoff is exponential with ±20% jitter between min and max, so that a
// target coming back is not hit by every queued job at the same instant.
// A target's Retry-After, when one was given, sets the next attempt instead.
type backoff struct {
	min, max time.Duration
	hints    *sync.Map // job id → time.Time the target asked to wait until
}

func (b *backoff) NextRetry(job *rivertype.JobRow) time.Time {
	if v, ok := b.hints.LoadAndDelete(job.ID); ok {
		return v.(time.Time)
	}
	d := b.min
	for i := 1; i < job.Attempt && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	jitter := 0.8 + 0.4*rand.Float64()
	return time.Now().Add(time.Duration(float64(d) * jitter))
}

type errorHandler struct{ logger *slog.Logger }

func (h *errorHandler) HandleError(ctx context.Context, job *rivertype.JobRow, err error) *river.ErrorHandlerResult {
	return nil
}

func (h *errorHandler) HandlePanic(ctx context.Context, job *rivertype.JobRow, panicVal any, trace string) *river.ErrorHandlerResult {
	h.logger.Error("Delivery panicked; the job will be retried", "job_id", job.ID, "panic", panicText(panicVal), "stack", trace)
	return nil
}

// errSinkPanicked marks a delivery error that is a panic recovered from
// a sink: a bug of ours, not an answer of the target, so it says nothing
// about the target's health.
var errSinkPanicked = errors.New("panicked")

// callSink delivers n through t's sink, turning a panic into a retryable
// failure of this key: the process and the job's other keys go on, instead
// of alertfan crashing, and again at every restart once River brings the
// job back. Retryable (ReasonOther), so a panic that some passing reply
// set off heals by itself, and one that does not ends as a dead letter
// (attempts_exhausted) after max_attempts: a retry repeats a call that
// may have left, which PagerDuty's dedup key absorbs and Backlog's issue
// marker heals. Deliver not returning (a panic(nil) under
// GODEBUG=panicnil=1, runtime.Goexit) counts as a panic too, never as a
// delivery.
func (s *Store) callSink(ctx context.Context, t Target, n *sinks.Notification) error {
	return unlessPanicked(s, "Sink panicked; the delivery will be retried", []any{"target", t.ID, "kind", t.Kind},
		func() error { return t.Sink.Deliver(ctx, n) },
		func(what string) error {
			return sinks.Retryable(sinks.ReasonOther, 0, fmt.Errorf("the %s sink %w (%s); see alertfan's log", t.Kind, errSinkPanicked, what))
		})
}

// logPanic logs msg at error with the stack and what panicText makes of
// the recovered value r (attrs: the target, key or job), and returns that.
func (s *Store) logPanic(msg string, r any, attrs ...any) string {
	what := panicText(r)
	s.logger.Error(msg, append(attrs, "panic", what, "stack", string(debug.Stack()))...)
	return what
}

// panicText describes a recovered panic value without its content, which
// may hold anything (a secret in a URL, an alert's labels): its type, or,
// for an error of Go's runtime package (an index out of range, a nil
// map), the runtime's own message, which holds no data of ours.
func panicText(r any) (text string) {
	text = fmt.Sprintf("%T", r)
	if _, ok := r.(runtime.Error); !ok {
		return text
	}
	t := reflect.TypeOf(r)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.PkgPath() != "runtime" {
		return text // a type of someone else's that calls itself a runtime error
	}
	defer func() {
		if recover() != nil { // a typed nil: its Error panics
			text = fmt.Sprintf("%T", r)
		}
	}()
	return r.(runtime.Error).Error()
}
