package receiver

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"github.com/alertfan/alertfan/receiver/intake"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// A PagerDuty event's identity hashes its routing key to 128 bits. An
// alert opened under the 32-bit hash of releases before keeps that
// identity until it resolves: its resolve closes the issue it opened.
// Once resolved, the dedup_key's next trigger is a new alert under the new
// identity.
func TestPagerDutyLegacyIdentityKeepsOpenAlerts(t *testing.T) {
	bl := sinkstest.NewBacklog(backlogKey)
	defer bl.Close()
	cfg := backlogConfig(bl.URL, "")
	ts := startServer(t, cfg)
	event := func(action string) []byte {
		if action != "trigger" {
			return []byte(`{"routing_key":"` + testRoutingKey + `","event_action":"` + action + `","dedup_key":"disk-1"}`)
		}
		return []byte(`{"routing_key":"` + testRoutingKey + `","event_action":"trigger","dedup_key":"disk-1","payload":{"summary":"Disk full","source":"db-1","severity":"critical"}}`)
	}
	code, body := ts.post(t, "/v2/enqueue", event("trigger"))
	require.Equal(t, 202, code, "%v", body)
	waitIssues(t, bl, func(is []sinkstest.BacklogIssue) bool { return len(is) == 1 })
	settle(t, ts)
	ts.stop()

	// The store as the release before wrote it: the alert under the
	// 32-bit hash.
	legacy := intake.LegacyPDIdentity(testRoutingKey, "disk-1")
	db, err := sql.Open("sqlite", filepath.Join(ts.dir, "alertfan.db"))
	require.NoError(t, err)
	var current string
	require.NoError(t, db.QueryRow(`SELECT identity FROM alertfan_alert`).Scan(&current))
	require.NotEqual(t, legacy, current)
	require.Len(t, current, len(legacy)+24, "a 128-bit hash")
	for _, q := range []string{
		`UPDATE alertfan_alert SET identity = ? WHERE identity = ?`,
		`UPDATE alertfan_state SET key = ? WHERE key = ?`,
		`UPDATE alertfan_backlog_issue SET identity = ? WHERE identity = ?`,
		`UPDATE alertfan_history SET identity = ? WHERE identity = ?`,
	} {
		_, err := db.Exec(q, legacy, current)
		require.NoError(t, err, q)
	}
	require.NoError(t, db.Close())

	ts = startServerIn(t, ts.dir, cfg)
	code, body = ts.post(t, "/v2/enqueue", event("resolve"))
	require.Equal(t, 202, code, "%v", body)
	is := waitIssues(t, bl, func(is []sinkstest.BacklogIssue) bool {
		return len(is) == 1 && bl.StatusName(is[0].StatusID) == "Closed"
	})
	require.Len(t, is, 1)

	// Resolved: the next trigger of the dedup_key is a new alert, under
	// the new identity.
	code, body = ts.post(t, "/v2/enqueue", event("trigger"))
	require.Equal(t, 202, code, "%v", body)
	settle(t, ts)
	ts.stop()
	db, err = sql.Open("sqlite", filepath.Join(ts.dir, "alertfan.db"))
	require.NoError(t, err)
	defer db.Close()
	var n int
	require.NoError(t, db.QueryRow(`SELECT COUNT(*) FROM alertfan_alert WHERE identity = ?`, current).Scan(&n))
	require.Equal(t, 1, n)
}
