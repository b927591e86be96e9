package queue

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
)

// While a target is down, one delivery at a time probes it: wait lets one
// through when the probe is due and holds the rest (parked jobs come back
// together at the probe time), admit gives that one the probe, and only
// the probe's own end (or a call answered) changes the target's health.
func TestHealthOneProbeAtATime(t *testing.T) {
	const id = "r/pagerduty/0"
	t0 := time.Unix(1_700_000_000, 0)
	down := func() *health {
		h := &health{}
		wentDown, _ := h.failed(id, t0, t0, 0, 100*time.Millisecond)
		require.True(t, wentDown)
		return h
	}
	due := t0.Add(100 * time.Millisecond) // min back-off after the first failure

	t.Run("before the probe is due every delivery is held", func(t *testing.T) {
		h := down()
		require.Equal(t, 100*time.Millisecond, h.wait(id, t0))
	})

	t.Run("at the due probe one goes through and the rest are held until it claims it", func(t *testing.T) {
		h := down()
		require.Zero(t, h.wait(id, due), "the first is let through")
		for i := range 50 {
			require.Positive(t, h.wait(id, due.Add(time.Duration(i)*time.Millisecond)), "delivery %d was let through too", i)
		}
		probe, wait := h.admit(id, due.Add(60*time.Millisecond)) // after its turn
		require.NotZero(t, probe)
		require.Zero(t, wait)
		require.Positive(t, h.wait(id, due.Add(61*time.Millisecond)), "held while the probe runs")
	})

	t.Run("a probe that failed makes the next one due at its back-off, offered again", func(t *testing.T) {
		h := down()
		require.Zero(t, h.wait(id, due))
		probe, _ := h.admit(id, due)
		require.NotZero(t, probe)
		h.failed(id, due, due, probe, 100*time.Millisecond)
		next := due.Add(200 * time.Millisecond)
		require.Positive(t, h.wait(id, next.Add(-time.Millisecond)))
		require.Zero(t, h.wait(id, next), "the next probe is not held by the last offer")
	})

	t.Run("a probe that made no call lets another through at once", func(t *testing.T) {
		h := down()
		require.Zero(t, h.wait(id, due))
		probe, _ := h.admit(id, due)
		require.NotZero(t, probe)
		h.released(id, probe)
		require.Zero(t, h.wait(id, due.Add(time.Millisecond)))
	})

	t.Run("one let through that never comes is replaced after probeOffer", func(t *testing.T) {
		h := down()
		require.Zero(t, h.wait(id, due)) // shutdown began; it never reaches admit
		require.Equal(t, 100*time.Millisecond, h.wait(id, due), "held briefly: the probe may fail at once")
		require.Zero(t, h.wait(id, due.Add(probeOffer)))
		probe, _ := h.admit(id, due.Add(probeOffer))
		require.NotZero(t, probe)
	})

	t.Run("admit stays the authority: a second one let through is held there", func(t *testing.T) {
		h := down()
		require.Zero(t, h.wait(id, due))
		require.Zero(t, h.wait(id, due.Add(probeOffer))) // the first is still queued for its turn
		probe, _ := h.admit(id, due.Add(probeOffer))
		require.NotZero(t, probe)
		probe, wait := h.admit(id, due.Add(probeOffer+time.Millisecond))
		require.Zero(t, probe)
		require.Positive(t, wait)
	})

	// Found by a fresh helper trying to break the change:
	t.Run("held deliveries come back by the next probe's due time", func(t *testing.T) {
		h := down()
		require.Zero(t, h.wait(id, due))
		held := h.wait(id, due) // its sibling, fetched together
		probe, _ := h.admit(id, due.Add(time.Millisecond))
		require.NotZero(t, probe)
		h.failed(id, due.Add(2*time.Millisecond), due.Add(time.Millisecond), probe, 100*time.Millisecond) // next probe in 200 ms
		nextDue := due.Add(2*time.Millisecond + 200*time.Millisecond)
		require.Zero(t, h.wait(id, nextDue), "the next probe is due")
		require.LessOrEqual(t, due.Add(held), nextDue, "the held delivery returns after the next probe was due")
	})

	t.Run("a call from before the target went down failing late ends no probe", func(t *testing.T) {
		// A target that hangs: calls started before it went down time out
		// one by one after the first marked it down.
		h := down()
		require.Zero(t, h.wait(id, due))
		probe, _ := h.admit(id, due)
		require.NotZero(t, probe)
		wentDown, failures := h.failed(id, due.Add(10*time.Millisecond), t0.Add(-time.Second), 0, 100*time.Millisecond)
		require.False(t, wentDown)
		require.Equal(t, 1, failures, "not counted: the back-off does not double")
		later := due.Add(time.Second)
		require.Positive(t, h.wait(id, later), "a delivery was let through while the probe runs")
		second, _ := h.admit(id, later)
		require.Zero(t, second, "a second probe was admitted while the first runs")
		h.released(id, probe+1) // an ended probe's number ends nothing
		second, _ = h.admit(id, later)
		require.Zero(t, second)
	})

	t.Run("a call from before the target came back failing late does not take it down", func(t *testing.T) {
		h := down()
		back, _ := h.answered(id, due)
		require.True(t, back)
		wentDown, _ := h.failed(id, due.Add(time.Second), due.Add(-time.Millisecond), 0, 100*time.Millisecond)
		require.False(t, wentDown)
		require.Zero(t, h.wait(id, due.Add(time.Second)))
		// A call started after it came back that fails does.
		wentDown, _ = h.failed(id, due.Add(2*time.Second), due.Add(time.Second), 0, 100*time.Millisecond)
		require.True(t, wentDown)
	})

	t.Run("a target that answered holds nothing", func(t *testing.T) {
		h := down()
		require.Zero(t, h.wait(id, due))
		back, _ := h.answered(id, due)
		require.True(t, back)
		for range 3 {
			require.Zero(t, h.wait(id, due))
		}
	})
}

// TestDownFailure: which failures say the whole target cannot take calls
// now, so its work is held and one call at a time probes it. A refused
// key (sinks.ReasonUnauthorized: Backlog's 401 for a revoked key) is one:
// its alerts were each dead-lettered at once before, while the same key
// refused at start only held the target.
func TestDownFailure(t *testing.T) {
	cases := []struct {
		err  *sinks.Error
		down bool
	}{
		{sinks.Retryable(sinks.ReasonNetwork, 0, nil), true},
		{sinks.Retryable(sinks.ReasonTimeout, 0, nil), true},
		{sinks.StatusError(503, 0, nil), true},
		{sinks.Retryable(sinks.ReasonUnexpectedReply, 0, nil), true},
		{&sinks.Error{Reason: sinks.ReasonUnauthorized, Retryable: true, StatusCode: 401}, true},
		{sinks.StatusError(429, time.Second, nil), false},
		{sinks.StatusError(400, 0, nil), false},
		{sinks.Permanent(sinks.ReasonUnauthorized, nil), false},
		{sinks.Retryable(sinks.ReasonConfig, 0, nil), false},
		{&sinks.Error{Reason: sinks.ReasonMisconfigured, Retryable: true}, true},
	}
	for _, c := range cases {
		t.Run(c.err.Error(), func(t *testing.T) {
			require.Equal(t, c.down, downFailure(c.err))
		})
	}
}
