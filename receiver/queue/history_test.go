package queue

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// TestHistoryRowClean: PostgreSQL refuses invalid UTF-8 and NUL in TEXT,
// and a refused history row would fail the whole group commit (intake and
// acks with it), so every text is made storable first.
func TestHistoryRowClean(t *testing.T) {
	cases := []struct {
		name string
		row  histRow
		want func(t *testing.T, r histRow)
	}{
		{"multi-byte character across the cut", histRow{errText: strings.Repeat("a", maxHistError-1) + strings.Repeat("日本語", 20)}, func(t *testing.T, r histRow) {
			require.True(t, utf8.ValidString(r.errText))
			require.LessOrEqual(t, len(r.errText), maxHistError)
			require.Equal(t, strings.Repeat("a", maxHistError-1), r.errText)
		}},
		{"invalid UTF-8 and NUL", histRow{errText: "bad \xff\xfe byte\x00s", labels: "{\"a\":\"\xc3\"}", ref: "k\x00"}, func(t *testing.T, r histRow) {
			require.Equal(t, "bad \uFFFD bytes", r.errText)
			require.Equal(t, `{"a":"`+"\uFFFD"+`"}`, r.labels)
			require.Equal(t, "k", r.ref)
		}},
		{"clean text unchanged", histRow{errText: "pagerduty answered 400", labels: `{"alertname":"ディスク"}`}, func(t *testing.T, r histRow) {
			require.Equal(t, "pagerduty answered 400", r.errText)
			require.Equal(t, `{"alertname":"ディスク"}`, r.labels)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.row
			r.clean()
			c.want(t, r)
		})
	}
}
