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
}
