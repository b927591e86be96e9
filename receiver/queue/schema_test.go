package queue

import (
	"bytes"
	"context"
	"fmt"
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
				`ALTER TABLE alertfan_state DROP COLUMN class`,
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

// TestMigrationsSayWhenTheyRun: a start that migrates an existing store
// says so, and how long it took; a fresh store's first start, nothing.
func TestMigrationsSayWhenTheyRun(t *testing.T) {
	ctx := context.Background()
	opts := drivers()[0].opts(t)
	var logs bytes.Buffer
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := openStore(t, opts, &recordingSink{})
	require.NotContains(t, logs.String(), "Migrat")
	// The store as the build before the last migration (42) left it.
	_, err := s.db.ExecContext(ctx, `ALTER TABLE alertfan_state DROP COLUMN class`)
	require.NoError(t, err)
	_, err = s.db.ExecContext(ctx, `DELETE FROM alertfan_migration WHERE version = ?`, len(migrations))
	require.NoError(t, err)
	require.NoError(t, s.Close(ctx))
	openStore(t, opts, &recordingSink{})
	require.Contains(t, logs.String(), fmt.Sprintf(`msg="Migrating the store's schema; a large store can take a while" from_version=%d to_version=%d`, len(migrations)-1, len(migrations)))
	require.Contains(t, logs.String(), `msg="Migrated the store's schema" took=`)
}

// stateTableBefore41 are the statements that put a migrated SQLite store's
// state table back as the build before migration 41 had it: keyed by
// (target, key), with its index on key (its rows are gone).
func stateTableBefore41(t *testing.T) []string {
	t.Helper()
	v41 := migrations[rekeyMigration-1]
	require.True(t, strings.HasPrefix(v41, sqliteOnly))
	create, _, _ := strings.Cut(strings.TrimPrefix(v41, sqliteOnly), ";")
	return []string{
		`DROP TABLE alertfan_state`,
		strings.NewReplacer("alertfan_state_new", "alertfan_state", "PRIMARY KEY (key, target)", "PRIMARY KEY (target, key)").Replace(create),
		`CREATE INDEX alertfan_state_gc ON alertfan_state (updated_at) WHERE pending = 0 AND resolved = 1`,
		`CREATE INDEX alertfan_state_key ON alertfan_state (key)`,
	}
}

// TestStatesKeyedByKeyFirst: migration 41 makes SQLite's state table
// again, keyed by (key, target) instead of (target, key) beside an index
// on key; every row and column comes through, the lookups by key alone
// use the new key, and the writes that conflict on (target, key) still
// meet it.
func TestStatesKeyedByKeyFirst(t *testing.T) {
	ctx := context.Background()
	opts := drivers()[0].opts(t)
	s := openStore(t, opts, &recordingSink{})
	cols := `target, key, version, delivered, seq, pending, resolved, payload, updated_at, want, phase, fire_payload, digest, sent_digest, occ, sent_occ, close_payload, enqueued, attempts, failing_since, attempts_seq, uncertain, last_error, ref`
	// What the build before 41 had, with two states of every column set.
	for _, q := range append(stateTableBefore41(t),
		`INSERT INTO alertfan_state (`+cols+`) VALUES ('r/pagerduty/0', 'k1', 3, 2, 7, 1, 0, '{"a":1}', 11, 'triggered', 'triggered', '{"f":1}', 'd1', 's1', 4, 3, '{"c":1}', 1, 2, 99, 7, 1, 'boom', 'dk-1')`,
		`INSERT INTO alertfan_state (`+cols+`) VALUES ('r/backlog/0', 'k1', 5, 5, 8, 0, 1, '{"a":2}', 12, 'resolved', 'resolved', '', 'd2', 'd2', 1, 1, '', 0, 0, 0, 0, 0, '', '')`,
		// An operator's own view on the table.
		`CREATE VIEW ops_open AS SELECT target, key FROM alertfan_state WHERE resolved = 0`,
		`DELETE FROM alertfan_migration WHERE version >= 41`,
	) {
		_, err := s.db.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	dump := func() []string {
		rows, err := s.db.QueryContext(ctx, `SELECT `+cols+` FROM alertfan_state ORDER BY target, key`)
		require.NoError(t, err)
		defer rows.Close()
		var out []string
		for rows.Next() {
			v := make([]any, 24)
			p := make([]any, 24)
			for i := range v {
				p[i] = &v[i]
			}
			require.NoError(t, rows.Scan(p...))
			out = append(out, fmt.Sprint(v...))
		}
		require.NoError(t, rows.Err())
		return out
	}
	before := dump()
	require.Len(t, before, 2)
	require.NoError(t, s.Close(ctx))

	s = openStore(t, opts, &recordingSink{})
	require.Equal(t, before, dump(), "every row and column comes through")
	var n int
	require.NoError(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'alertfan_state_key'`).Scan(&n))
	require.Zero(t, n, "the index on key alone is gone")
	require.NoError(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'alertfan_state_gc'`).Scan(&n))
	require.Equal(t, 1, n, "the retention index is made again")
	require.NoError(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM ops_open`).Scan(&n))
	require.Equal(t, 1, n, "the operator's view reads the new table")
	plan := func(q string) string {
		var plan strings.Builder
		rows, err := s.db.QueryContext(ctx, `EXPLAIN QUERY PLAN `+q)
		require.NoError(t, err)
		defer rows.Close()
		for rows.Next() {
			var id, parent, notused int
			var detail string
			require.NoError(t, rows.Scan(&id, &parent, &notused, &detail))
			plan.WriteString(detail + "\n")
		}
		require.NoError(t, rows.Err())
		return plan.String()
	}
	require.Contains(t, plan(`SELECT target FROM alertfan_state WHERE key = 'k1'`), "sqlite_autoindex_alertfan_state_1 (key=?)", "a lookup by key alone uses the table's key")
	require.Contains(t, plan(`SELECT payload FROM alertfan_state WHERE target = 'r/pagerduty/0' AND key IN ('k1', 'k2')`), "sqlite_autoindex_alertfan_state_1 (key=? AND target=?)", "a job's states are read by their key")
	for _, q := range []string{
		`SELECT key FROM alertfan_state WHERE target = 'r/pagerduty/0' AND pending = 1`,
		`SELECT key FROM alertfan_state WHERE target = 'r/pagerduty/0' AND resolved = 0 AND want <> 'event' AND updated_at < 5 ORDER BY key`,
	} {
		require.Contains(t, plan(q), "alertfan_state_target (target=?)", "a lookup by target alone (a reload's moves, expiry) scans that target's states only: %s", q)
	}

	// Intake's upsert conflicts on (target, key): it updates the row.
	require.NoError(t, s.Enqueue(ctx, []Item{item("k1", "firing")}))
	require.NoError(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM alertfan_state WHERE key = 'k1'`).Scan(&n))
	require.Equal(t, 2, n)
}

// TestRekeyNeedsRoom: migration 41 is refused, naming what it needs, when
// the store's file system cannot hold the state table twice (the WAL,
// then the file); the store stays as the build before left it, and
// migrates once there is room.
func TestRekeyNeedsRoom(t *testing.T) {
	ctx := context.Background()
	opts := drivers()[0].opts(t)
	s := openStore(t, opts, &recordingSink{})
	for _, q := range append(stateTableBefore41(t),
		`WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000)
			INSERT INTO alertfan_state (target, key, version, payload, updated_at) SELECT 'r/pagerduty/0', 'k' || x, 1, hex(randomblob(500)), x FROM c`,
		`DELETE FROM alertfan_migration WHERE version >= 41`,
	) {
		_, err := s.db.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	require.NoError(t, s.Close(ctx))

	real := diskFree
	t.Cleanup(func() { diskFree = real })
	diskFree = func(string) (int64, bool) { return 10 << 20, true }
	opts.Registerer = nil
	_, err := Open(ctx, opts)
	require.ErrorContains(t, err, "migration 41 makes the alert-state table (2 MiB) again and needs about")
	require.ErrorContains(t, err, "MiB free on the file system of "+opts.Path)
	require.ErrorContains(t, err, "10 MiB are free")

	diskFree = func(string) (int64, bool) { return 1 << 30, true }
	s = openStore(t, opts, &recordingSink{})
	var v, n int
	require.NoError(t, s.db.QueryRowContext(ctx, `SELECT MAX(version) FROM alertfan_migration`).Scan(&v))
	require.Equal(t, len(migrations), v)
	require.NoError(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM alertfan_state`).Scan(&n))
	require.Equal(t, 2000, n)
}
