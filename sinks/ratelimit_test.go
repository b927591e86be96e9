package sinks

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Calls booked and then given back (their work needed no call) no
// longer delay what is booked after them.
func TestReleaseGivesBookedCallsBack(t *testing.T) {
	l := newLimiter(120)
	require.Zero(t, l.Schedule(1000, PriorityWarning, time.Second), "the first of them may go now")
	require.Greater(t, l.Schedule(1, PriorityWarning, time.Second), 8*time.Minute, "behind 1,000 at 120/min")
	l.Release(1000, PriorityWarning)
	require.Less(t, l.Schedule(1, PriorityWarning, time.Second), time.Second, "nothing ahead once given back")
	l.Release(5, PriorityCritical) // nothing booked there: no effect below zero
	require.Zero(t, l.Schedule(1, PriorityCritical, time.Second))
}
