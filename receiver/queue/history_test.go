package queue

import (
	"context"
	"strconv"
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

// TestHistoryChunksKeepEveryRowAndItsAlert: SQLite writes a batch's
// history in INSERTs of 32, 8 and 1 rows, each row finding its alert's
// rowid in the INSERT itself. Every row count that crosses those chunks
// keeps every row, in order, with the aid it was given, the aid of its
// alert when it was not given one, and 0 for a key with no alert (a
// group key).
func TestHistoryChunksKeepEveryRowAndItsAlert(t *testing.T) {
	s := openStore(t, Options{Driver: DriverSQLite, Path: t.TempDir() + "/q.db"}, &recordingSink{})
	ctx := context.Background()
	_, err := s.db.ExecContext(ctx, `INSERT INTO alertfan_alert (identity, input, status, starts_at, ends_at, labels, seen_at) VALUES ('am:a', 'alertmanager', 'firing', 0, 0, '{}', 0), ('am:b', 'alertmanager', 'firing', 0, 0, '{}', 0)`)
	require.NoError(t, err)
	aids := map[string]int64{}
	for _, id := range []string{"am:a", "am:b"} {
		var aid int64
		require.NoError(t, s.db.QueryRowContext(ctx, sqlAlertRowid, id).Scan(&aid))
		aids[id] = aid
	}
	for _, n := range []int{1, 7, 8, 9, 31, 32, 33, 41, 42, 100} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			ref := "chunk-" + strconv.Itoa(n)
			want := make([]int64, n)
			require.NoError(t, s.submit(ctx, func(ctx context.Context, b *batch) error {
				for i := range n {
					r := histRow{event: EventCall, target: "r/pagerduty/0", key: "k", attempt: i, ref: ref}
					switch i % 4 {
					case 0: // an alert the caller knew
						r.aid, r.identity = aids["am:b"], "am:b"
					case 1, 2: // an alert found by its identity
						r.identity = "am:a"
					case 3: // a group key: no alert
						r.identity = ""
					}
					want[i] = map[int]int64{0: aids["am:b"], 1: aids["am:a"], 2: aids["am:a"], 3: 0}[i%4]
					b.record(r)
				}
				return nil
			}))
			rows, err := s.db.QueryContext(ctx, `SELECT aid, attempt FROM alertfan_history WHERE ref = ? ORDER BY rowid`, ref)
			require.NoError(t, err)
			defer rows.Close()
			var got []int64
			for rows.Next() {
				var aid int64
				var attempt int
				require.NoError(t, rows.Scan(&aid, &attempt))
				require.Equal(t, len(got), attempt, "rows in the order recorded")
				got = append(got, aid)
			}
			require.NoError(t, rows.Err())
			require.Equal(t, want, got)
		})
	}
}
