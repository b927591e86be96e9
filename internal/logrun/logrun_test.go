package logrun

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRun(t *testing.T) {
	var r Run
	t0 := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	ended, _, _ := r.Succeeded(t0)
	require.False(t, ended, "no run yet")
	type fail struct {
		at         time.Duration
		log, first bool
		failingFor time.Duration
		n          int
	}
	for _, c := range []fail{
		{0, true, true, 0, 1},
		{time.Second, false, false, time.Second, 2},
		{59 * time.Second, false, false, 59 * time.Second, 3},
		{61 * time.Second, true, false, 61 * time.Second, 4},
		{90 * time.Second, false, false, 90 * time.Second, 5},
		{122 * time.Second, true, false, 122 * time.Second, 6},
	} {
		log, first, failingFor, n := r.Failed(t0.Add(c.at))
		require.Equal(t, c, fail{c.at, log, first, failingFor, n})
	}
	ended, failedFor, n := r.Succeeded(t0.Add(130 * time.Second))
	require.True(t, ended)
	require.Equal(t, 130*time.Second, failedFor)
	require.Equal(t, 6, n)
	ended, _, _ = r.Succeeded(t0.Add(131 * time.Second))
	require.False(t, ended, "said once")
	log, first, _, n := r.Failed(t0.Add(140 * time.Second))
	require.True(t, log && first, "a new run")
	require.Equal(t, 1, n)

	// Flapping: successes between failures, each sooner than Settle
	// after one, neither end the run nor start another.
	for i := range 5 {
		at := t0.Add(141*time.Second + time.Duration(i)*3*time.Second)
		ended, _, _ = r.Succeeded(at)
		require.False(t, ended, "a success 1 s after a failure")
		log, _, _, _ = r.Failed(at.Add(2 * time.Second))
		require.False(t, log, "the same run")
	}
	ended, _, _ = r.Succeeded(t0.Add(160*time.Second - time.Nanosecond))
	require.False(t, ended, "sooner than Settle after the last failure (155 s)")
	ended, failedFor, n = r.Succeeded(t0.Add(160 * time.Second))
	require.True(t, ended, "settled")
	require.Equal(t, 20*time.Second, failedFor)
	require.Equal(t, 6, n)
}
