package queue

import (
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// clockAt is what time.Now returns mono after t0 on the monotonic clock
// when the wall clock has moved by wall meanwhile (an NTP step, a VM
// resumed, an operator's date -s): the monotonic reading of t0+mono with
// the wall reading of t0+wall. time.Now's Time is {wall uint64; ext int64;
// loc}; with a monotonic reading, ext holds it.
func clockAt(t0 time.Time, mono, wall time.Duration) time.Time {
	type layout struct {
		wall uint64
		ext  int64
		loc  *time.Location
	}
	w, m := t0.Add(wall), t0.Add(mono)
	(*layout)(unsafe.Pointer(&w)).ext = (*layout)(unsafe.Pointer(&m)).ext
	return w
}

func TestClockAt(t *testing.T) {
	t0 := time.Now()
	c := clockAt(t0, 2*time.Second, -time.Hour)
	require.Equal(t, 2*time.Second, c.Sub(t0), "monotonic")
	require.Equal(t, (-time.Hour).Nanoseconds(), c.Round(0).Sub(t0.Round(0)).Nanoseconds(), "wall")
}

// intakeFirst kept its times as Unix ns (wall clock). A wall clock stepped
// back kept intake "busy" for the size of the step (deliveries paced at
// 1,000 calls/s for an hour after a one-hour step) and stops the delivery
// window from rolling, so the calls of the hour pile into one window and
// any slow accept finds deliveries "heavy".
func TestIntakeFirstWallClockStepBack(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, g *intakeFirst, t0 time.Time) (busy bool)
	}{
		{"a busy hold ends slowHold later on the monotonic clock", func(t *testing.T, g *intakeFirst, t0 time.Time) bool {
			g.hold(t0, slowHold)
			// 1 s + 10 ms later; the wall clock was stepped back an hour.
			return g.busy(clockAt(t0, slowHold+10*time.Millisecond, slowHold+10*time.Millisecond-time.Hour))
		}},
		{"a light delivery load stays light after the step", func(t *testing.T, g *intakeFirst, t0 time.Time) bool {
			g.started(t0) // deliveries run; the window starts
			// The wall clock steps back an hour; deliveries go on at 500
			// calls a second (a tenth of heavy) for 2 s.
			for i := range 1000 {
				g.started(clockAt(t0, time.Duration(i+1)*2*time.Millisecond, time.Duration(i+1)*2*time.Millisecond-time.Hour))
			}
			now := clockAt(t0, 2*time.Second, 2*time.Second-time.Hour)
			g.accepted(now, now.Add(-time.Millisecond))    // the store's own cost
			g.accepted(now, now.Add(-50*time.Millisecond)) // one slow accept
			return g.busy(now)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newIntakeFirst(nil)
			t0 := time.Now()
			require.False(t, tt.run(t, g, t0), "deliveries paced because the wall clock moved")
		})
	}
}

// On a store whose accepts are slow whatever the deliveries do (a remote
// PostgreSQL, 10+ ms of round trips per commit; a slow disk's fsync),
// every accept took over slowAt, so a draining queue was paced at ~1,000
// calls/s for as long as it drained, although pacing cannot make the
// accepts any faster. An accept is slow only at slowAt over the fastest
// of the last minWindow or two: the store's own cost.
func TestIntakeFirstSlowStoreDoesNotCapDeliveries(t *testing.T) {
	tests := []struct {
		name     string
		accepts  []time.Duration // one every 10 ms, deliveries heavy
		wantBusy bool
	}{
		{"every accept takes the store's 12 ms", []time.Duration{12 * time.Millisecond, 12 * time.Millisecond, 13 * time.Millisecond, 12 * time.Millisecond}, false},
		{"an accept slowAt over the store's cost", []time.Duration{12 * time.Millisecond, 12 * time.Millisecond, 12*time.Millisecond + slowAt + time.Millisecond}, true},
		{"a local store: an accept slowAt over its 2 ms", []time.Duration{2 * time.Millisecond, 2*time.Millisecond + slowAt + time.Millisecond}, true},
		{"the first accept, however long, is its own baseline", []time.Duration{slowAt + time.Millisecond}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newIntakeFirst(nil)
			t0 := time.Now()
			for i := range 3 * heavyCallRate * int(heavyWindow/time.Millisecond) * 6 / 5000 {
				g.started(t0.Add(time.Duration(i) * time.Second / (3 * heavyCallRate)))
			}
			now := t0.Add(heavyWindow * 6 / 5)
			for _, d := range tt.accepts {
				now = now.Add(10 * time.Millisecond)
				g.accepted(now, now.Add(-d))
			}
			require.Equal(t, tt.wantBusy, g.busy(now))
		})
	}
}
