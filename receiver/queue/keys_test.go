package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/backlog"
)

// A key the store can always index: short keys — all those stored before
// long ones were accepted — unchanged, long ones bounded, readable and
// distinct.
func TestStoreKey(t *testing.T) {
	long := `{}:{url="` + strings.Repeat("item=123456789&", 700) + `"}`
	cases := []struct {
		name string
		key  string
		same bool // kept as it is
	}{
		{"empty", "", true},
		{"alert identity", "am:3c8c0f1b5c2f7a1e", true},
		{"group key", `{}/{severity="critical"}:{alertname="Disk"}`, true},
		{"MaxKeyBytes", strings.Repeat("k", MaxKeyBytes), true},
		{"one byte over", strings.Repeat("k", MaxKeyBytes+1), false},
		{"10 KB", long, false},
		{"10 KB, same prefix", long + "x", false},
		{"multi-byte at the cut", strings.Repeat("k", keyPrefixBytes-1) + strings.Repeat("é", MaxKeyBytes), false},
		{"4-byte runes", strings.Repeat("🔥", MaxKeyBytes), false},
	}
	seen := map[string]string{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := StoreKey(c.key)
			require.LessOrEqual(t, len(got), MaxKeyBytes)
			require.True(t, utf8.ValidString(got))
			require.Equal(t, got, StoreKey(c.key), "stable")
			if c.same {
				require.Equal(t, c.key, got)
			} else {
				sum := sha256.Sum256([]byte(c.key))
				prefix, hash, ok := strings.Cut(got, "…sha256:")
				require.True(t, ok, got)
				require.Equal(t, hex.EncodeToString(sum[:]), hash)
				require.True(t, strings.HasPrefix(c.key, prefix))
				require.Greater(t, len(prefix), keyPrefixBytes-utf8.UTFMax)
			}
			require.NotContains(t, seen, got, "two keys, one stored form (%q)", seen[got])
			seen[got] = c.name
		})
	}
}

// incompressible is n bytes of hex digits without repeats: PostgreSQL
// compresses a long index entry before it judges its size, so a key of
// repeated text would fit where a real one does not.
func incompressible(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		sum := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
		b.WriteString(hex.EncodeToString(sum[:]))
	}
	return b.String()[:n]
}

// A Backlog issue record keyed by a long group key is written and read by
// that key on both databases (PostgreSQL refuses to index it whole); a
// short key is stored as it is, so records written before are found.
func TestIssueRecordLongIdentity(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			s := openStore(t, d.opts(t), &recordingSink{})
			ctx := context.Background()
			long := `{}:{url="` + incompressible(10_000) + `"}`
			cases := []struct {
				identity string
				stored   string
			}{
				{`{}:{alertname="Disk"}`, `{}:{alertname="Disk"}`},
				{long, StoreKey(long)},
				{long + "x", StoreKey(long + "x")},
			}
			for i, c := range cases {
				rec := backlog.IssueRecord{IssueID: int64(i + 1), IssueKey: "OPS-" + string(rune('1'+i)), State: backlog.StateOpen, Gen: 1}
				require.NoError(t, s.PutIssue(ctx, "r/backlog/0", c.identity, rec))
			}
			for i, c := range cases {
				got, found, err := s.GetIssue(ctx, "r/backlog/0", c.identity)
				require.NoError(t, err)
				require.True(t, found)
				require.Equal(t, int64(i+1), got.IssueID)
				var n int
				require.NoError(t, s.rdb.QueryRowContext(ctx, s.rebind(`SELECT COUNT(*) FROM alertfan_backlog_issue WHERE identity = ?`), c.stored).Scan(&n))
				require.Equal(t, 1, n, "stored as %.40q", c.stored)
			}
		})
	}
}
