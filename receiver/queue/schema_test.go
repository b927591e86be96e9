package queue

import (
	"bytes"
	"context"
	"database/sql"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// TestSchemaVersionOfEachDialect: SQLite runs and records every
// migration; PostgreSQL skips those only SQLite needs without recording
// them (while they were the last ones, a replica of the build before could
// still start during a rolling upgrade), and runs the shared ones after
// them. A store at a version newer than the running alertfan knows is
// refused, naming both versions.
func TestSchemaVersionOfEachDialect(t *testing.T) {
	lastShared, shared := 0, 0
	for i, m := range migrations {
		if !strings.HasPrefix(m, sqliteOnly) {
			lastShared, shared = i+1, shared+1
		}
	}
	require.Less(t, shared, len(migrations), "this test is about a schema with migrations of SQLite's own")
	ctx := context.Background()
	for _, c := range []struct {
		d           driverCase
		want, count int
	}{{drivers()[0], len(migrations), len(migrations)}, {drivers()[1], lastShared, shared}} {
		t.Run(c.d.name, func(t *testing.T) {
			opts := c.d.opts(t)
			s := openStore(t, opts, &recordingSink{})
			var v, n int
			require.NoError(t, s.db.QueryRowContext(ctx, `SELECT MAX(version), COUNT(*) FROM alertfan_migration`).Scan(&v, &n))
			require.Equal(t, c.want, v)
			require.Equal(t, c.count, n, "SQLite's own migrations are not recorded on PostgreSQL")
			require.NoError(t, s.Close(ctx))
			// Reopening runs nothing again and changes nothing.
			s = openStore(t, opts, &recordingSink{})
			require.NoError(t, s.db.QueryRowContext(ctx, `SELECT MAX(version) FROM alertfan_migration`).Scan(&v))
			require.Equal(t, c.want, v)
			// A store written by a newer alertfan.
			_, err := s.db.ExecContext(ctx, s.rebind(`INSERT INTO alertfan_migration (version) VALUES (?)`), len(migrations)+1)
			require.NoError(t, err)
			require.NoError(t, s.Close(ctx))
			opts.Registerer = nil
			_, err = Open(ctx, opts)
			require.ErrorContains(t, err, "newer than this alertfan knows")
		})
	}
}

// A connection string pgx cannot parse never appears in the store's
// error, not even the part of a password pgx's own redaction misses.
func TestOpenErrorNeverQuotesTheDSN(t *testing.T) {
	for _, dsn := range []string{
		`host=127.0.0.1 user=postgres password=Sup3r\ SecretPW dbname=x sslmode=bogus`,
		`host=127.0.0.1 user=postgres password='Sup3r SecretPW sslmode=disable`,
	} {
		_, err := Open(context.Background(), Options{Driver: DriverPostgres, DSN: dsn, Registerer: prometheus.NewRegistry()})
		require.Error(t, err)
		require.NotContains(t, err.Error(), "SecretPW")
		require.NotContains(t, err.Error(), "Sup3r")
	}
}

// TestOpenIncidentsKeepTheirKeyAcrossTheUpgrade: incidents open before
// migration 39 get their key from the delivery history (40): the newest
// trigger that went through; a resolved state, or one the history has no
// such call for, gets none.
func TestOpenIncidentsKeepTheirKeyAcrossTheUpgrade(t *testing.T) {
	ctx := context.Background()
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			opts := d.opts(t)
			s := openStore(t, opts, &recordingSink{})
			for _, q := range []string{
				`INSERT INTO alertfan_state (target, key, version, payload, updated_at, phase) VALUES ('r/pagerduty/0', 'open', 1, '{}', 1, 'triggered')`,
				`INSERT INTO alertfan_state (target, key, version, payload, updated_at, phase) VALUES ('r/pagerduty/0', 'acked', 1, '{}', 1, 'acknowledged')`,
				`INSERT INTO alertfan_state (target, key, version, payload, updated_at, phase) VALUES ('r/pagerduty/0', 'done', 1, '{}', 1, 'resolved')`,
				`INSERT INTO alertfan_state (target, key, version, payload, updated_at, phase) VALUES ('r/pagerduty/0', 'unknown', 1, '{}', 1, 'triggered')`,
				`INSERT INTO alertfan_history (at, identity, target, key, event, action, outcome, ref) VALUES (1, 'open', 'r/pagerduty/0', 'open', 'call', 'trigger', 'success', 'first')`,
				`INSERT INTO alertfan_history (at, identity, target, key, event, action, outcome, ref) VALUES (2, 'open', 'r/pagerduty/0', 'open', 'call', 'trigger', 'success', 'api-1')`,
				`INSERT INTO alertfan_history (at, identity, target, key, event, action, outcome, ref) VALUES (3, 'open', 'r/pagerduty/0', 'open', 'accepted', '', '', '')`,
				// Neither a failed trigger nor an acknowledge (an old build
				// sent a sender's payload-less one to another key) names
				// the incident.
				`INSERT INTO alertfan_history (at, identity, target, key, event, action, outcome, ref) VALUES (4, 'open', 'r/pagerduty/0', 'open', 'call', 'trigger', 'dead', 'k-refused')`,
				`INSERT INTO alertfan_history (at, identity, target, key, event, action, outcome, ref) VALUES (5, 'open', 'r/pagerduty/0', 'open', 'call', 'acknowledge', 'success', 'srv-1')`,
				`INSERT INTO alertfan_history (at, identity, target, key, event, action, outcome, ref) VALUES (1, 'acked', 'r/pagerduty/0', 'acked', 'call', 'trigger', 'success', 'k-acked')`,
				`INSERT INTO alertfan_history (at, identity, target, key, event, action, outcome, ref) VALUES (2, 'acked', 'r/pagerduty/0', 'acked', 'call', 'acknowledge', 'success', 'k-acked')`,
				`INSERT INTO alertfan_history (at, identity, target, key, event, action, outcome, ref) VALUES (1, 'done', 'r/pagerduty/0', 'done', 'call', 'trigger', 'success', 'k-done')`,
				// What the build before 39 had.
				`ALTER TABLE alertfan_state DROP COLUMN ref`,
				`DELETE FROM alertfan_migration WHERE version >= 39`,
			} {
				_, err := s.db.ExecContext(ctx, q)
				require.NoError(t, err, q)
			}
			require.NoError(t, s.Close(ctx))
			s = openStore(t, opts, &recordingSink{})
			for key, want := range map[string]string{"open": "api-1", "acked": "k-acked", "done": "", "unknown": ""} {
				var ref string
				require.NoError(t, s.db.QueryRowContext(ctx, s.rebind(`SELECT ref FROM alertfan_state WHERE key = ?`), key).Scan(&ref))
				require.Equal(t, want, ref, key)
			}
		})
	}
}

// TestStatesRekeyedOnSQLite: migration 41 rebuilds a SQLite store's
// alertfan_state under the primary key (key, target), every row and
// column kept, with alertfan_state_key gone and alertfan_state_target in
// its place; the upsert's conflict target still names it.
func TestStatesRekeyedOnSQLite(t *testing.T) {
	ctx := context.Background()
	opts := drivers()[0].opts(t)
	s := openStore(t, opts, &recordingSink{})
	asBeforeRekey(t, s)
	_, err := s.db.ExecContext(ctx, `INSERT INTO alertfan_state (target, key, version, delivered, seq, pending, payload, updated_at, want, phase, digest, sent_digest, attempts, last_error, ref)
		VALUES ('r/pagerduty/0', 'a', 3, 2, 4, 1, '{"x":1}', 7, 'triggered', 'triggered', 'd3', 'd2', 2, 'boom', 'k-a'),
			('r/backlog/1', 'a', 1, 1, 1, 0, '{}', 8, 'resolved', 'resolved', 'd1', 'd1', 0, '', '')`)
	require.NoError(t, err)
	require.NoError(t, s.Close(ctx))

	// The operator is told why the start pauses.
	var logs bytes.Buffer
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s = openStore(t, opts, &recordingSink{})
	require.Contains(t, logs.String(), `msg="Migrating the store's schema; a large store can take a while" from_version=40 to_version=41`)
	require.Contains(t, logs.String(), `msg="Migrated the store's schema" took=`)
	var sql string
	require.NoError(t, s.db.QueryRowContext(ctx, `SELECT sql FROM sqlite_master WHERE name = 'alertfan_state'`).Scan(&sql))
	require.Contains(t, sql, "PRIMARY KEY (key, target)")
	var indexes []string
	rows, err := s.db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'alertfan_state' AND sql IS NOT NULL ORDER BY name`)
	require.NoError(t, err)
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		indexes = append(indexes, n)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"alertfan_state_gc", "alertfan_state_target"}, indexes)
	var (
		version, delivered, seq, pending, attempts int
		payload, digest, lastError, ref            string
	)
	require.NoError(t, s.db.QueryRowContext(ctx, `SELECT version, delivered, seq, pending, payload, digest, attempts, last_error, ref
		FROM alertfan_state WHERE key = 'a' AND target = 'r/pagerduty/0'`).Scan(&version, &delivered, &seq, &pending, &payload, &digest, &attempts, &lastError, &ref))
	require.Equal(t, []any{3, 2, 4, 1, `{"x":1}`, "d3", 2, "boom", "k-a"}, []any{version, delivered, seq, pending, payload, digest, attempts, lastError, ref})
	var n int
	require.NoError(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM alertfan_state`).Scan(&n))
	require.Equal(t, 2, n)
	// The upsert's conflict target still finds the key, in either order.
	_, err = s.db.ExecContext(ctx, `INSERT INTO alertfan_state (target, key, version, payload, updated_at) VALUES ('r/backlog/1', 'a', 1, '{}', 9)
		ON CONFLICT (target, key) DO UPDATE SET version = alertfan_state.version + 1`)
	require.NoError(t, err)
	require.NoError(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM alertfan_state`).Scan(&n))
	require.Equal(t, 2, n)
}

// asBeforeRekey puts a SQLite store's alertfan_state back as migration 40
// left it: keyed by (target, key), with alertfan_state_key, and 41 to run.
func asBeforeRekey(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	for _, q := range []string{
		`DROP TABLE alertfan_state`,
		`CREATE TABLE alertfan_state (target TEXT NOT NULL, key TEXT NOT NULL, version BIGINT NOT NULL,
			delivered BIGINT NOT NULL DEFAULT 0, seq BIGINT NOT NULL DEFAULT 0, pending INTEGER NOT NULL DEFAULT 0,
			resolved INTEGER NOT NULL DEFAULT 0, payload TEXT NOT NULL, updated_at BIGINT NOT NULL, PRIMARY KEY (target, key))`,
		`CREATE INDEX alertfan_state_gc ON alertfan_state (updated_at) WHERE pending = 0 AND resolved = 1`,
		`CREATE INDEX alertfan_state_key ON alertfan_state (key)`,
	} {
		_, err := s.db.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	for _, col := range strings.Split(stateColumns, ",")[9:] {
		col = strings.TrimSpace(col)
		def := "TEXT NOT NULL DEFAULT ''"
		switch col {
		case "occ", "sent_occ", "enqueued", "attempts", "failing_since", "attempts_seq", "uncertain":
			def = "BIGINT NOT NULL DEFAULT 0"
		}
		_, err := s.db.ExecContext(ctx, `ALTER TABLE alertfan_state ADD COLUMN `+col+` `+def)
		require.NoError(t, err, col)
	}
	_, err := s.db.ExecContext(ctx, `DELETE FROM alertfan_migration WHERE version >= 41`)
	require.NoError(t, err)
}

// TestRekeyRefusedWithoutRoom: on a disk without room for migration 41's
// copy twice more, the start is refused before anything is written,
// saying how much room it needs; with room, the same store migrates.
func TestRekeyRefusedWithoutRoom(t *testing.T) {
	ctx := context.Background()
	opts := drivers()[0].opts(t)
	s := openStore(t, opts, &recordingSink{})
	asBeforeRekey(t, s)
	_, err := s.db.ExecContext(ctx, `INSERT INTO alertfan_state (target, key, version, payload, updated_at) VALUES ('r/pagerduty/0', 'a', 1, '{}', 1)`)
	require.NoError(t, err)
	require.NoError(t, s.Close(ctx))

	free := uint64(10 << 20)
	defer func(f func(string) (uint64, error)) { diskFree = f }(diskFree)
	diskFree = func(string) (uint64, error) { return free, nil }
	o := opts
	o.Registerer = prometheus.NewRegistry()
	_, err = Open(ctx, o)
	require.ErrorContains(t, err, "queue: migration 41: rebuilding alertfan_state (")
	require.ErrorContains(t, err, "needs about 64.")
	require.ErrorContains(t, err, "and 10.0 MiB are: free space or move the store (storage.path) and start again; nothing was changed")

	raw, err := sql.Open("sqlite", opts.Path)
	require.NoError(t, err)
	var v, keyIndex int
	require.NoError(t, raw.QueryRow(`SELECT MAX(version) FROM alertfan_migration`).Scan(&v))
	require.NoError(t, raw.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'alertfan_state_key'`).Scan(&keyIndex))
	require.NoError(t, raw.Close())
	require.Equal(t, 40, v, "nothing was changed")
	require.Equal(t, 1, keyIndex)

	free = 1 << 30
	s = openStore(t, opts, &recordingSink{})
	require.NoError(t, s.db.QueryRowContext(ctx, `SELECT MAX(version) FROM alertfan_migration`).Scan(&v))
	require.Equal(t, len(migrations), v)
	require.NoError(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM alertfan_state WHERE key = 'a'`).Scan(&keyIndex))
	require.Equal(t, 1, keyIndex)
}

// TestUnrefreshedAlertsFoundFromTheSeenIndex: resolve_after's pass, in
// the writer's transaction, reads the alerts not seen since the cutoff
// and each one's state by its primary key, never a target's every state.
func TestUnrefreshedAlertsFoundFromTheSeenIndex(t *testing.T) {
	s := openStore(t, drivers()[0].opts(t), &recordingSink{})
	rows, err := s.db.QueryContext(context.Background(), `EXPLAIN QUERY PLAN `+sqlUnrefreshed, "r/pagerduty/0", PhaseEvent, 1)
	require.NoError(t, err)
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		require.NoError(t, rows.Scan(&id, &parent, &unused, &detail))
		plan = append(plan, detail)
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	require.Len(t, plan, 3, "%q", plan)
	require.Equal(t, "SEARCH a USING INDEX alertfan_alert_seen (seen_at<?)", plan[0])
	require.Equal(t, "SEARCH st USING INDEX sqlite_autoindex_alertfan_state_1 (key=? AND target=?)", plan[1])
}
