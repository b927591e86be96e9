package sinks

import (
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// CutBytes never splits a character; Abbreviate marks a cut.
func TestCutBytesAndAbbreviate(t *testing.T) {
	for _, tc := range []struct {
		in         string
		n          int
		cut, abbrv string
	}{
		{"disk full", 20, "disk full", "disk full"},
		{"disk full", 9, "disk full", "disk full"},
		{"disk full", 4, "disk", "disk…"},
		{"ディスク", 4, "デ", "デ…"}, // 3 bytes each: the second would be split
		{"ディスク", 6, "ディ", "ディ…"},
		{"ディスク", 2, "", "…"},
		{"x", 0, "", "…"},
	} {
		got := CutBytes(tc.in, tc.n)
		require.Equal(t, tc.cut, got, "CutBytes(%q, %d)", tc.in, tc.n)
		require.True(t, utf8.ValidString(got))
		require.LessOrEqual(t, len(got), tc.n)
		require.Equal(t, tc.abbrv, Abbreviate(tc.in, tc.n), "Abbreviate(%q, %d)", tc.in, tc.n)
	}
}
