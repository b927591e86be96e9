package sinks

import "time"

// LimiterState is what a limiter shows the status API
// (GET /api/v1/ratelimits).
type LimiterState struct {
	// PerMinute is the configured budget in calls per minute.
	PerMinute int `json:"limit_per_minute"`
	// Budget is the number of calls that may start now without waiting
	// (0 or 1: the limiter spaces calls evenly, it keeps no burst).
	Budget int `json:"budget"`
	// Waiting counts calls of this process waiting for a slot.
	Waiting int `json:"waiting"`
	// NextSlot is when the next call may start.
	NextSlot time.Time `json:"next_slot"`
}

// State reads the limiter's state at now.
func (l *Limiter) State(now time.Time) LimiterState {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := l.next
	if l.budget != nil {
		// Shared through the database: this process's next slot is one it
		// holds, or the end of what it booked last (a claim may give it a
		// later one when other replicas booked meanwhile).
		next = now.Add(l.sharedBase(now))
	}
	st := LimiterState{PerMinute: l.perMinute, Waiting: len(l.waiters), NextSlot: next}
	if !next.After(now) && len(l.waiters) == 0 {
		st.Budget, st.NextSlot = 1, now
	}
	return st
}
