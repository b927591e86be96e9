package queue

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// While a target is down, one delivery at a time goes on to probe it: wait
// lets one through when the probe is due and holds the rest (parked jobs
// come back together at the probe time), admit gives that one the probe.
func TestHealthLetsOneDeliveryThroughToTheDueProbe(t *testing.T) {
	const id = "r/pagerduty/0"
	t0 := time.Unix(1_700_000_000, 0)
	down := func() *health {
		h := &health{}
		wentDown, _ := h.failed(id, t0, 100*time.Millisecond)
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
		require.True(t, probe)
		require.Zero(t, wait)
		require.Positive(t, h.wait(id, due.Add(61*time.Millisecond)), "held while the probe runs")
	})

	t.Run("a probe that failed makes the next one due at its back-off, offered again", func(t *testing.T) {
		h := down()
		require.Zero(t, h.wait(id, due))
		probe, _ := h.admit(id, due)
		require.True(t, probe)
		h.failed(id, due, 100*time.Millisecond)
		next := due.Add(200 * time.Millisecond)
		require.Positive(t, h.wait(id, next.Add(-time.Millisecond)))
		require.Zero(t, h.wait(id, next), "the next probe is not held by the last offer")
	})

	t.Run("a probe that made no call lets another through at once", func(t *testing.T) {
		h := down()
		require.Zero(t, h.wait(id, due))
		probe, _ := h.admit(id, due)
		require.True(t, probe)
		h.released(id)
		require.Zero(t, h.wait(id, due.Add(time.Millisecond)))
	})

	t.Run("one let through that never comes is replaced after probeOffer", func(t *testing.T) {
		h := down()
		require.Zero(t, h.wait(id, due)) // shutdown began; it never reaches admit
		require.Equal(t, probeOffer, h.wait(id, due))
		require.Zero(t, h.wait(id, due.Add(probeOffer)))
		probe, _ := h.admit(id, due.Add(probeOffer))
		require.True(t, probe)
	})

	t.Run("admit stays the authority: a second one let through is held there", func(t *testing.T) {
		h := down()
		require.Zero(t, h.wait(id, due))
		require.Zero(t, h.wait(id, due.Add(probeOffer))) // the first is still queued for its turn
		probe, _ := h.admit(id, due.Add(probeOffer))
		require.True(t, probe)
		probe, wait := h.admit(id, due.Add(probeOffer+time.Millisecond))
		require.False(t, probe)
		require.Positive(t, wait)
	})

	t.Run("a target that answered holds nothing", func(t *testing.T) {
		h := down()
		require.Zero(t, h.wait(id, due))
		back, _ := h.answered(id)
		require.True(t, back)
		for range 3 {
			require.Zero(t, h.wait(id, due))
		}
	})
}
