// Package logrun tells a caller which failures of a run to log: a run of
// the same failure (a database away, every request refused for it) is
// logged as its start, a reminder a minute while it lasts, and its end
// with how long and how many — not a line per failure, which during an
// outage is tens of lines a second and buries everything else.
package logrun

import (
	"sync"
	"sync/atomic"
	"time"
)

// Reminder is how often a run still going is logged again.
const Reminder = time.Minute

// Settle is how long after a run's last failure a success ends it. A
// flapping dependency (a database reached now and then through a bad
// link) answers between failures; ending the run at each such success
// logged its start and end every few seconds (a fresh helper counted 116
// start lines in 4 minutes on 3 replicas).
const Settle = 5 * time.Second

// Run is one kind of failure's run. The zero value is ready; it is safe
// for concurrent use, and Succeeded costs one atomic load outside a run.
type Run struct {
	active   atomic.Bool
	mu       sync.Mutex
	since    time.Time
	last     time.Time // the last failure
	n        int
	reminded time.Time
}

// Failed counts a failure at now and says whether to log it: first, the
// run's first failure; else log is a reminder (Reminder since the last).
// failingFor and n are the run's length and its failures so far.
func (r *Run) Failed(now time.Time) (log, first bool, failingFor time.Duration, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	r.last = now
	switch {
	case !r.active.Load():
		r.active.Store(true)
		r.since, r.reminded = now, now
		return true, true, 0, r.n
	case now.Sub(r.reminded) >= Reminder:
		r.reminded = now
		return true, false, now.Sub(r.since), r.n
	}
	return false, false, now.Sub(r.since), r.n
}

// Succeeded ends the run, if one is going and its last failure is Settle
// old: ended says so, with the run's length and its failures, for the
// caller's one line. A success sooner after a failure leaves the run
// going: the next failure continues it.
func (r *Run) Succeeded(now time.Time) (ended bool, failedFor time.Duration, n int) {
	if !r.active.Load() {
		return false, 0, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.active.Load() || now.Sub(r.last) < Settle {
		return false, 0, 0
	}
	ended, failedFor, n = true, now.Sub(r.since), r.n
	r.active.Store(false)
	r.n = 0
	return ended, failedFor, n
}
