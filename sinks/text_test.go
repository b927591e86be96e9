package sinks

import (
	"net/url"
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

func TestScrub(t *testing.T) {
	const key = "R0UT1NGKEYSECRETxxxxxxxxxxxxxxx1"
	cases := []struct{ name, in, want string }{
		{"none", "bad request", "bad request"},
		{"as written, twice", "a " + key + " b " + key, "a <secret> b <secret>"},
		{"inside a query", "k=" + url.QueryEscape("a b+/"+key), "k=a+b%2B%2F<secret>"},
		{"cut at the end", "echo " + key[:12], "echo <secret>"},
		{"a short tail is left", "echo " + key[:5], "echo " + key[:5]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, Scrub(c.in, key))
		})
	}
	require.Equal(t, "a+b <secret>", Scrub("a+b "+url.QueryEscape("k y"), "k y"))
	require.Equal(t, "x", Scrub("x", ""))
}
