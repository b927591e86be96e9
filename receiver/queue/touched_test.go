package queue

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// touched answers "may (target, key) have been written since at": yes for
// a mark at or after at, and for any time older than the marks it keeps.
func TestTouched(t *testing.T) {
	var tc touched
	t0 := time.Now()
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	p := touchedPeriod
	require.False(t, tc.changedSince("t", "a", at(0)), "nothing written yet")
	tc.mark([][2]string{{"t", "a"}}, at(10))
	for _, c := range []struct {
		key  string
		at   time.Duration
		want bool
	}{
		{"a", 10, true},
		{"a", 9, true},
		{"a", 11, false},
		{"b", 0, false}, // every write since the start is kept
		{"b", 11, false},
	} {
		require.Equal(t, c.want, tc.changedSince("t", c.key, at(c.at)), "%s since %d", c.key, c.at)
	}
	require.False(t, tc.changedSince("u", "a", at(9)), "another target's key")

	// A period later the marks rotate: the previous ones are still seen,
	// and times before them are unknown.
	tc.mark([][2]string{{"t", "b"}}, at(10+p))
	require.True(t, tc.changedSince("t", "a", at(10)))
	require.True(t, tc.changedSince("t", "b", at(10+p)))
	require.False(t, tc.changedSince("t", "c", at(10)))
	tc.mark([][2]string{{"t", "c"}}, at(10+2*p))
	require.True(t, tc.changedSince("t", "a", at(5+p)), "older than the marks kept")
	require.False(t, tc.changedSince("t", "a", at(11+p)), "a's mark was dropped, after the time asked about")
	require.True(t, tc.changedSince("t", "b", at(10+p)))
}
