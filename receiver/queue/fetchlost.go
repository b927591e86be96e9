package queue

import (
	"context"
	"sync"
	"time"

	"github.com/riverqueue/river"
)

// A job fetch on PostgreSQL is one statement (River's JobGetAvailable:
// UPDATE … SET state = 'running' … RETURNING). When the connection is cut
// after the database committed it and before its answer arrived (a
// failover, a network blip, a proxy restart), the jobs are marked running
// under this replica's client id and nobody works them; River's rescuer
// makes them available again only after rescue_after (default
// job_timeout + 4 min) — a page held for minutes after a database blip.
//
// The fetch-lost sweep finds them sooner: every fetchLostEvery, jobs
// running under this client's id since more than fetchLostAfter that
// never reached this process's worker are made available again. A job
// that did reach the worker is never touched, whatever happened to its
// completion: River's completer keeps a completion it could not write
// and writes it once the database answers (it requeues failed batches),
// and a job made available under it could be finished by that late
// completion while another run works it.
//
// Variables for the tests, which set them before a store starts.
var (
	fetchLostEvery = 10 * time.Second
	// fetchLostAfter is how long after its fetch a job must have reached
	// the worker: River hands fetched jobs to workers at once.
	fetchLostAfter = 30 * time.Second
)

// runKey names one run of a job: its id and when it was fetched
// (attempted_at, in microseconds: PostgreSQL's precision). Not the attempt
// number: a snooze gives the attempt back (River's job executor writes
// Attempt-1), so the run after it has the same number, and the report of
// the snoozed run would forget the next one.
type runKey struct {
	id int64
	at int64
}

func keyOf(id int64, at *time.Time) (runKey, bool) {
	if at == nil {
		return runKey{}, false
	}
	return runKey{id, at.UnixMicro()}, true
}

// fetchLost tracks the runs of jobs that reached this process's worker
// and whose outcome River has not reported yet (PostgreSQL only).
type fetchLost struct {
	mu   sync.Mutex
	runs map[runKey]time.Time // → when the worker got it
}

// started records that a run of a job reached the worker.
func (f *fetchLost) started(k runKey) {
	f.mu.Lock()
	if f.runs == nil {
		f.runs = map[runKey]time.Time{}
	}
	f.runs[k] = time.Now()
	f.mu.Unlock()
}

// finished forgets a run whose outcome River wrote.
func (f *fetchLost) finished(k runKey) {
	f.mu.Lock()
	delete(f.runs, k)
	f.mu.Unlock()
}

// forget drops runs older than keep: River's rescuer has them by then,
// and an outcome River did not report (a full event channel) would
// otherwise keep them for ever.
func (f *fetchLost) forget(keep time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, at := range f.runs {
		if time.Since(at) > keep {
			delete(f.runs, k)
		}
	}
}

// reached reports whether a run of a job reached the worker and River has
// not reported its outcome.
func (f *fetchLost) reached(k runKey) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.runs[k]
	return ok
}

// subscribeOutcomes subscribes to River's reports of runs' outcomes,
// before the client starts, so that no run's report is missed. River
// drops a report its subscriber's buffer cannot take, and logs a warning
// for each; its completer reports up to 5,000 at once.
func (s *Store) subscribeOutcomes() (<-chan *river.Event, func()) {
	return s.client.SubscribeConfig(&river.SubscribeConfig{ChanSize: 20_000, Kinds: []river.EventKind{
		river.EventKindJobCompleted, river.EventKindJobFailed, river.EventKindJobSnoozed,
		river.EventKindJobCancelled, river.EventKindJobInterrupted,
	}})
}

// followOutcomes forgets each run whose outcome River wrote, until the
// store closes. River reports an outcome only once the completer has
// written it, with the run's attempted_at unchanged.
func (s *Store) followOutcomes(events <-chan *river.Event, cancel func()) {
	defer s.wg.Done()
	defer cancel()
	for {
		select {
		case <-s.closing:
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if ev.Job == nil {
				continue
			}
			if k, ok := keyOf(ev.Job.ID, ev.Job.AttemptedAt); ok {
				s.fetchLost.finished(k)
			}
		}
	}
}

// sweepFetchLost makes available again the jobs running under this
// client's id whose fetch never reached the worker (see fetchLost).
func (s *Store) sweepFetchLost() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id := s.client.ID()
	rows, err := s.rdb.QueryContext(ctx, `SELECT id, attempted_at FROM river_job
		WHERE state = 'running' AND attempted_by[array_length(attempted_by, 1)] = $1
			AND attempted_at < now() - make_interval(secs => $2)`, id, fetchLostAfter.Seconds())
	if err != nil {
		return // the store is away: the next sweep looks again
	}
	s.fetchLost.forget(s.opts.RescueAfter)
	type lostRun struct {
		id int64
		at time.Time
	}
	var lost []lostRun
	for rows.Next() {
		var r lostRun
		if rows.Scan(&r.id, &r.at) != nil {
			continue
		}
		if k, _ := keyOf(r.id, &r.at); !s.fetchLost.reached(k) {
			lost = append(lost, r)
		}
	}
	rows.Close()
	for _, r := range lost {
		// The same run only: a run fetched since has another attempted_at.
		res, err := s.db.ExecContext(ctx, `UPDATE river_job SET state = 'available', scheduled_at = now()
			WHERE id = $1 AND attempted_at = $2 AND state = 'running' AND attempted_by[array_length(attempted_by, 1)] = $3`, r.id, r.at, id)
		if err != nil {
			return
		}
		if n, _ := res.RowsAffected(); n > 0 {
			s.metrics.fetchLost.Inc()
			s.logger.Warn("A job this replica fetched never reached its workers (the database's answer was lost); it is available again rather than waiting for rescue_after",
				"job_id", r.id)
		}
	}
}
