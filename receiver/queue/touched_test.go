package queue

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// touched answers "may (target, key) have been written since at": yes for
// a mark at or after at, and for any time older than the marks it keeps.
func TestTouched(t *testing.T) {
	var tc touched
	p := int64(touchedPeriod)
	require.False(t, tc.changedSince("t", "a", 5), "nothing written yet")
	tc.mark([][2]string{{"t", "a"}}, 10)
	for _, c := range []struct {
		key  string
		at   int64
		want bool
	}{
		{"a", 10, true},
		{"a", 9, true},
		{"a", 11, false},
		{"b", 0, false}, // every write since the start is kept
		{"b", 11, false},
	} {
		require.Equal(t, c.want, tc.changedSince("t", c.key, c.at), "%s since %d", c.key, c.at)
	}
	require.False(t, tc.changedSince("u", "a", 9), "another target's key")

	// A period later the marks rotate: the previous ones are still seen,
	// and times before them are unknown.
	tc.mark([][2]string{{"t", "b"}}, 10+p)
	require.True(t, tc.changedSince("t", "a", 10))
	require.True(t, tc.changedSince("t", "b", 10+p))
	require.False(t, tc.changedSince("t", "c", 10))
	require.True(t, tc.changedSince("t", "c", 5), "before the oldest rotation kept: unknown")
	tc.mark([][2]string{{"t", "c"}}, 10+2*p)
	require.True(t, tc.changedSince("t", "a", 5), "older than the marks kept")
	require.False(t, tc.changedSince("t", "a", 11+p), "a's mark was dropped, after the time asked about")
	require.True(t, tc.changedSince("t", "b", 10+p))
}
