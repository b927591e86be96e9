package queue

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type dialect int

const (
	dialectSQLite dialect = iota
	dialectPostgres
)

// pick is the statement text for the dialect.
func (d dialect) pick(postgres, sqlite string) string {
	if d == dialectSQLite {
		return sqlite
	}
	return postgres
}

// rebind turns the ? placeholders every query is written with into $n for
// PostgreSQL, so that one query text serves both databases.
func (d dialect) rebind(q string) string {
	if d != dialectPostgres {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// placeholders is n comma-separated SQL placeholders ("?, ?, ?"),
// rebound for PostgreSQL by rebind.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// migrations are alertfan's own tables, applied in order once each. The
// {{id}} placeholder is the dialect's auto-increment key; a migration that
// starts with sqliteOnly runs on SQLite only.
var migrations = []string{
	// 1: latest state per (target, key) and what of it was delivered.
	`CREATE TABLE alertfan_state (
		target     TEXT   NOT NULL,
		key        TEXT   NOT NULL,
		version    BIGINT NOT NULL,
		delivered  BIGINT NOT NULL DEFAULT 0,
		seq        BIGINT NOT NULL DEFAULT 0,
		pending    INTEGER NOT NULL DEFAULT 0,
		resolved   INTEGER NOT NULL DEFAULT 0,
		payload    TEXT   NOT NULL,
		updated_at BIGINT NOT NULL,
		PRIMARY KEY (target, key)
	)`,
	`CREATE INDEX alertfan_state_gc ON alertfan_state (updated_at) WHERE pending = 0 AND resolved = 1`,
	// 3: dead letters.
	`CREATE TABLE alertfan_dead (
		id         {{id}},
		target     TEXT   NOT NULL,
		key        TEXT   NOT NULL,
		version    BIGINT NOT NULL,
		reason     TEXT   NOT NULL,
		error      TEXT   NOT NULL,
		attempts   INTEGER NOT NULL,
		created_at BIGINT NOT NULL
	)`,
	// 4: Backlog issue per alert identity. The primary key is what makes
	// "one issue per identity" hold across crashes, retries and replicas.
	`CREATE TABLE alertfan_backlog_issue (
		target     TEXT   NOT NULL,
		identity   TEXT   NOT NULL,
		issue_id   BIGINT NOT NULL DEFAULT 0,
		issue_key  TEXT   NOT NULL DEFAULT '',
		state      TEXT   NOT NULL,
		gen        BIGINT NOT NULL DEFAULT 0,
		closed_at  BIGINT NOT NULL DEFAULT 0,
		updated_at BIGINT NOT NULL,
		PRIMARY KEY (target, identity)
	)`,
	// 5: labels last seen for an identity, so that a PagerDuty resolve or
	// acknowledge without a payload routes like the trigger did.
	`CREATE TABLE alertfan_identity (
		identity   TEXT   NOT NULL PRIMARY KEY,
		labels     TEXT   NOT NULL,
		updated_at BIGINT NOT NULL
	)`,
	// 6–11: the lifecycle. want is the phase the newest state asks for,
	// phase what the target was last brought to; fire_payload keeps the
	// newest firing content once an acknowledge or resolve replaced it, so
	// a target that never got the trigger gets it first; digest and
	// sent_digest tell a repeat from a change.
	`ALTER TABLE alertfan_state ADD COLUMN want TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE alertfan_state ADD COLUMN phase TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE alertfan_state ADD COLUMN fire_payload TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE alertfan_state ADD COLUMN digest TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE alertfan_state ADD COLUMN sent_digest TEXT NOT NULL DEFAULT ''`,
	`UPDATE alertfan_state SET
		want = CASE WHEN resolved = 1 THEN 'resolved' ELSE 'triggered' END,
		phase = CASE WHEN delivered = 0 THEN '' WHEN resolved = 1 THEN 'resolved' ELSE 'triggered' END`,
	// 12: the targets holding an alert open, for sticky destinations.
	`CREATE INDEX alertfan_state_open ON alertfan_state (key) WHERE resolved = 0`,
	// 13: the newest accepted state of every alert identity, whatever it
	// routes to: what tells a stale update (an HA replica's late firing)
	// from a new occurrence, and when its sender last refreshed it.
	`CREATE TABLE alertfan_alert (
		identity  TEXT   NOT NULL PRIMARY KEY,
		input     TEXT   NOT NULL,
		status    TEXT   NOT NULL,
		starts_at BIGINT NOT NULL,
		ends_at   BIGINT NOT NULL,
		labels    TEXT   NOT NULL,
		seen_at   BIGINT NOT NULL
	)`,
	`CREATE INDEX alertfan_alert_seen ON alertfan_alert (seen_at)`,
	// 15: hash of the Backlog description last written,
	// so group-mode issues are rewritten only when their alerts change.
	`ALTER TABLE alertfan_backlog_issue ADD COLUMN content_hash TEXT NOT NULL DEFAULT ''`,
	// 16: every target of a key, for sticky destinations and for sending
	// acknowledges and resolves only where something was sent.
	`CREATE INDEX alertfan_state_key ON alertfan_state (key)`,
	// 17–18: occurrences. occ counts the times a target's state went from
	// resolved to firing again; sent_occ what the target was brought to;
	// close_payload keeps the resolve that a new firing replaced, so a
	// target that never got that resolve gets it before the new trigger.
	`ALTER TABLE alertfan_state ADD COLUMN occ BIGINT NOT NULL DEFAULT 0`,
	`ALTER TABLE alertfan_state ADD COLUMN sent_occ BIGINT NOT NULL DEFAULT 0`,
	`ALTER TABLE alertfan_state ADD COLUMN close_payload TEXT NOT NULL DEFAULT ''`,
	// 20: where each target id sends (sinks.DestinationID), so a reload or
	// restart that puts another destination at an id moves the old one's
	// alerts out of its way (see SetTargets).
	`CREATE TABLE alertfan_target (
		id         TEXT   NOT NULL PRIMARY KEY,
		dest       TEXT   NOT NULL,
		updated_at BIGINT NOT NULL
	)`,
	// 21: one row the readiness probe writes, so "ready" means "can write".
	`CREATE TABLE alertfan_probe (
		id INTEGER NOT NULL PRIMARY KEY,
		at BIGINT  NOT NULL
	)`,
	// 22–24: delivery history, one row per accepted transition (accepted,
	// stale, expired) and per call made (and per dead-letter action), written
	// in the transactions that already make them; pruned by
	// storage.retention.history. at is Unix nanoseconds. The id is a plain
	// rowid on SQLite (no AUTOINCREMENT: no sqlite_sequence write per row)
	// and grows with at, so pruning walks it oldest first and no index on
	// at is kept. On SQLite, aid is the alert's alertfan_alert rowid: a new
	// alert's rows are appended at the end of the (aid, id) index instead of
	// landing on a random page of an index on the identity text, which made
	// the history cost intake a fifth of its throughput; rows without an
	// alert row (group keys, PostgreSQL: aid 0) are found by identity.
	`CREATE TABLE alertfan_history (
		id          {{rowid}},
		aid         BIGINT  NOT NULL DEFAULT 0,
		at          BIGINT  NOT NULL,
		identity    TEXT    NOT NULL,
		target      TEXT    NOT NULL DEFAULT '',
		key         TEXT    NOT NULL DEFAULT '',
		event       TEXT    NOT NULL,
		input       TEXT    NOT NULL DEFAULT '',
		status      TEXT    NOT NULL DEFAULT '',
		labels      TEXT    NOT NULL DEFAULT '',
		receiver    TEXT    NOT NULL DEFAULT '',
		route       TEXT    NOT NULL DEFAULT '',
		action      TEXT    NOT NULL DEFAULT '',
		outcome     TEXT    NOT NULL DEFAULT '',
		http_status INTEGER NOT NULL DEFAULT 0,
		reason      TEXT    NOT NULL DEFAULT '',
		error       TEXT    NOT NULL DEFAULT '',
		attempt     INTEGER NOT NULL DEFAULT 0,
		ref         TEXT    NOT NULL DEFAULT ''
	)`,
	`CREATE INDEX alertfan_history_aid ON alertfan_history (aid, id)`,
	`CREATE INDEX alertfan_history_identity ON alertfan_history (identity, id) WHERE aid = 0`,
	// 25: dead letters by (target, key), for the status API.
	`CREATE INDEX alertfan_dead_key ON alertfan_dead (target, key)`,
	// 26: the closed Backlog issue records the janitor prunes
	// (storage.retention.closed_issues), found without reading open ones.
	`CREATE INDEX alertfan_backlog_issue_gc ON alertfan_backlog_issue (updated_at) WHERE state IN ('closed', 'person_closed')`,
	// 27: the rate budget replicas share on PostgreSQL (ratebudget.go): per
	// limiter id (a hash, never the API key), the start of the next free
	// call slot and the end of a 429's hold, in microseconds since the
	// epoch on the database's clock.
	`CREATE TABLE alertfan_rate (
		key        TEXT   PRIMARY KEY,
		next_slot  BIGINT NOT NULL,
		held_until BIGINT NOT NULL DEFAULT 0
	)`,
	// 28-29: the records of issues alertfan left open at resolve
	// (on_resolved: comment|none) are pruned too; the index covers them.
	`DROP INDEX alertfan_backlog_issue_gc`,
	`CREATE INDEX alertfan_backlog_issue_gc ON alertfan_backlog_issue (updated_at) WHERE state IN ('closed', 'person_closed', 'resolved')`,
	// 30: whether the state's last upsert flipped pending from 0 to 1 (and
	// so must enqueue a job): sqlUpsertState returns it, merging what was
	// a second UPDATE per alert. Its value between upserts means nothing.
	`ALTER TABLE alertfan_state ADD COLUMN enqueued INTEGER NOT NULL DEFAULT 0`,
	// 31: alertfan_state_key (key) serves every lookup alertfan_state_open
	// (key) WHERE resolved = 0 did; each new state wrote both, one random
	// index page more per alert in every intake commit.
	`DROP INDEX alertfan_state_open`,
	// 32–34: a key's own failed attempts at its pending work, when the
	// first of them failed (Unix nanoseconds), and the seq they were
	// counted under, judged against delivery.max_attempts and max_age
	// instead of its job's attempts: a job carries up to 16 keys, and keys
	// held while another key of the job probes a down target have not
	// failed (see deliver). Counts under another seq are an earlier run's:
	// work made pending again starts over whoever acked the last (a
	// replica from before these columns, during a rolling upgrade, acks
	// without zeroing them).
	`ALTER TABLE alertfan_state ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE alertfan_state ADD COLUMN failing_since BIGINT NOT NULL DEFAULT 0`,
	`ALTER TABLE alertfan_state ADD COLUMN attempts_seq BIGINT NOT NULL DEFAULT 0`,
	// 35: a call of the key's may have reached the target unrecorded (it
	// timed out, panicked, was cut by a shutdown or a kill) and no call
	// since has settled what the target holds. A job's attempts know it
	// (callsUnrecorded); the row keeps it beyond the job — past a dead
	// letter, into the next change's job — so a resolve still goes out
	// for a trigger that may have opened an incident.
	`ALTER TABLE alertfan_state ADD COLUMN uncertain INTEGER NOT NULL DEFAULT 0`,
	// 36: the error of the key's last failed attempt (with attempts, under
	// attempts_seq), for `queue list` and the alert view: the job's last
	// error may be another key's, and is stored only once the attempt ends.
	`ALTER TABLE alertfan_state ADD COLUMN last_error TEXT NOT NULL DEFAULT ''`,
	// 37, 38 (SQLite): history rows whose alert row is pruned are found by
	// their identity again (aid 0, see 22). Before, a kept row pointed at
	// a rowid no alert row had any more, and once the alert fired again
	// under a new rowid its earlier history was hidden from the alert
	// view. The trigger unlinks them in the pruning DELETE's transaction;
	// 38 unlinks the rows earlier prunes left (a rowid reused by another
	// alert included: the view checks the identity too).
	sqliteOnly + `CREATE TRIGGER alertfan_alert_unlink_history AFTER DELETE ON alertfan_alert
	BEGIN
		UPDATE alertfan_history SET aid = 0 WHERE aid = OLD.rowid AND identity = OLD.identity;
	END`,
	sqliteOnly + `UPDATE alertfan_history SET aid = 0 WHERE aid <> 0 AND NOT EXISTS (
		SELECT 1 FROM alertfan_alert a WHERE a.rowid = alertfan_history.aid AND a.identity = alertfan_history.identity)`,
	// 39: ref, what identifies at the target what it holds open for the
	// key (a PagerDuty dedup_key): the calls that follow while it is open
	// (an update, the acknowledge, the resolve) keep it, whatever a
	// dedup_key template renders for them (sinks.Call.Pinned).
	`ALTER TABLE alertfan_state ADD COLUMN ref TEXT NOT NULL DEFAULT ''`,
	// 40: incidents open before 39 take their key from the delivery
	// history (the newest trigger that went through, which opened or
	// updated the incident; an acknowledge or a failed call may have used
	// another), where it is kept: their updates, acknowledges and
	// resolves reach them too. One pass over the history, grouped;
	// nothing to do where it is off or pruned.
	`UPDATE alertfan_state SET ref = last.ref
	FROM (SELECT h.target, h.key, h.ref FROM alertfan_history h
		JOIN (SELECT target, key, MAX(id) AS id FROM alertfan_history
			WHERE event = 'call' AND action = 'trigger' AND outcome = 'success' AND ref <> '' GROUP BY target, key) m ON h.id = m.id) AS last
	WHERE alertfan_state.target = last.target AND alertfan_state.key = last.key
		AND alertfan_state.phase IN ('triggered', 'acknowledged') AND alertfan_state.ref = ''`,
	// 41 (SQLite): the states keyed by (key, target), which also serves
	// every lookup by key alone, instead of (target, key) beside an index
	// on key: with random keys (fingerprints, dedup keys) each index puts
	// a new state on a random page, a WAL frame of its own in every
	// intake commit. The lookups by target alone (a reload's moves, expiry)
	// get an index on target: a new state's entry lands after its
	// target's last one (rowids grow), on a page the commit writes anyway.
	// SQLite cannot change a table's key in place: the table is made again
	// (https://www.sqlite.org/lang_altertable.html, "Making Other Kinds Of
	// Table Schema Changes"), with legacy_alter_table on for the rename:
	// otherwise SQLite checks every view again between the DROP and the
	// RENAME, and an operator's view on the table failed the migration.
	// The store's room for the copy is checked first (roomToRekey).
	sqliteOnly + `CREATE TABLE alertfan_state_new (
		target        TEXT    NOT NULL,
		key           TEXT    NOT NULL,
		version       BIGINT  NOT NULL,
		delivered     BIGINT  NOT NULL DEFAULT 0,
		seq           BIGINT  NOT NULL DEFAULT 0,
		pending       INTEGER NOT NULL DEFAULT 0,
		resolved      INTEGER NOT NULL DEFAULT 0,
		payload       TEXT    NOT NULL,
		updated_at    BIGINT  NOT NULL,
		want          TEXT    NOT NULL DEFAULT '',
		phase         TEXT    NOT NULL DEFAULT '',
		fire_payload  TEXT    NOT NULL DEFAULT '',
		digest        TEXT    NOT NULL DEFAULT '',
		sent_digest   TEXT    NOT NULL DEFAULT '',
		occ           BIGINT  NOT NULL DEFAULT 0,
		sent_occ      BIGINT  NOT NULL DEFAULT 0,
		close_payload TEXT    NOT NULL DEFAULT '',
		enqueued      INTEGER NOT NULL DEFAULT 0,
		attempts      INTEGER NOT NULL DEFAULT 0,
		failing_since BIGINT  NOT NULL DEFAULT 0,
		attempts_seq  BIGINT  NOT NULL DEFAULT 0,
		uncertain     INTEGER NOT NULL DEFAULT 0,
		last_error    TEXT    NOT NULL DEFAULT '',
		ref           TEXT    NOT NULL DEFAULT '',
		PRIMARY KEY (key, target)
	);
	INSERT INTO alertfan_state_new (target, key, version, delivered, seq, pending, resolved, payload, updated_at, want, phase, fire_payload, digest, sent_digest, occ, sent_occ, close_payload, enqueued, attempts, failing_since, attempts_seq, uncertain, last_error, ref)
		SELECT target, key, version, delivered, seq, pending, resolved, payload, updated_at, want, phase, fire_payload, digest, sent_digest, occ, sent_occ, close_payload, enqueued, attempts, failing_since, attempts_seq, uncertain, last_error, ref FROM alertfan_state;
	DROP TABLE alertfan_state;
	PRAGMA legacy_alter_table = ON;
	ALTER TABLE alertfan_state_new RENAME TO alertfan_state;
	PRAGMA legacy_alter_table = OFF;
	CREATE INDEX alertfan_state_gc ON alertfan_state (updated_at) WHERE pending = 0 AND resolved = 1;
	CREATE INDEX alertfan_state_target ON alertfan_state (target)`,
	// 42: the best priority class (sinks.PriorityClose … PriorityInfo)
	// asked of the key's pending work since its job was enqueued: an
	// update that asks a better one than the job's (a warning turned
	// critical, a resolve of a queued update) has the key moved to a job
	// of that class (escalate.go). Rows from before, and rows a replica of
	// the build before writes during a rolling upgrade, read as the worst
	// class: never moved.
	`ALTER TABLE alertfan_state ADD COLUMN class INTEGER NOT NULL DEFAULT 4`,
}

// sqliteOnly starts a migration PostgreSQL has no need of (its history
// rows have no aid). On PostgreSQL it is neither run nor recorded, so the
// database's version stays that of the last shared migration and a replica
// of the build before can still start during a rolling upgrade (a store at
// a newer version refuses an older alertfan).
const sqliteOnly = "-- sqlite only\n"

// rekeyMigration is the migration that makes SQLite's state table again
// (41, above).
const rekeyMigration = 41

// diskFree is the space free to this process on the file system holding
// dir, in bytes; ok is false where it cannot be told. A variable: tests
// stand in a small disk.
var diskFree = fsFree

// roomToRekey refuses migration 41 when the store's file system lacks the
// room it needs, naming what it needs and has. The new table is written
// into the WAL, then into the file while the old table's pages are still
// there: about twice the table. With room for one copy, the migration
// committed and then every commit failed, the disk full, and the build
// before refused the migrated store: no alert came in until disk was added
// (a fresh helper, 1M states on a tmpfs). Refused here, the store stays
// at the version before, which the build before still runs.
func (s *Store) roomToRekey(ctx context.Context) error {
	var table int64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(pgsize), 0) FROM dbstat
		WHERE name IN (SELECT name FROM sqlite_master WHERE tbl_name = 'alertfan_state')`).Scan(&table)
	if err != nil {
		s.logger.Warn("Could not size the state table before migrating it; migrating without checking the room it needs (about twice the table's size free)", "err", err)
		return nil
	}
	need := 2*table + 64<<20
	free, ok := diskFree(filepath.Dir(s.sqliteFile))
	if !ok {
		s.logger.Warn("Could not tell the free space beside the store; migrating without checking the room it needs", "path", s.sqliteFile, "table_mib", table>>20, "needs_mib", need>>20)
		return nil
	}
	if free < need {
		return fmt.Errorf("queue: migration %d makes the alert-state table (%d MiB) again and needs about %d MiB free on the file system of %s (the new table is written twice: into the WAL, then into the file); %d MiB are free. Make room, or keep running the previous release until then: the store is unchanged",
			rekeyMigration, table>>20, need>>20, s.sqliteFile, free>>20)
	}
	return nil
}

func (s *Store) migrateOwn(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS alertfan_migration (version INTEGER PRIMARY KEY)`); err != nil {
		return fmt.Errorf("queue: migrations table: %w", err)
	}
	var have int
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM alertfan_migration`).Scan(&have); err != nil {
		return fmt.Errorf("queue: read migration version: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("queue: the database is at schema version %d, newer than this alertfan knows (%d); run a newer alertfan", have, len(migrations))
	}
	id, rowid := "INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER PRIMARY KEY"
	if s.dialect == dialectPostgres {
		id, rowid = "BIGSERIAL PRIMARY KEY", "BIGSERIAL PRIMARY KEY"
	}
	start, told, rekeyed := time.Now(), false, false
	for v := have + 1; v <= len(migrations); v++ {
		q, sqlite := strings.CutPrefix(migrations[v-1], sqliteOnly)
		if sqlite && s.dialect != dialectSQLite {
			continue // not recorded either: see sqliteOnly
		}
		if sqlite && v == rekeyMigration && have > 0 {
			if err := s.roomToRekey(ctx); err != nil {
				return err
			}
			rekeyed = true
		}
		if have > 0 && !told {
			// A migration that rewrites rows (40; 38 and 41 on SQLite) pauses
			// the start on a large store: the operator is told why.
			s.logger.Info("Migrating the store's schema; a large store can take a while", "from_version", have, "to_version", len(migrations))
			told = true
		}
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, strings.NewReplacer("{{id}}", id, "{{rowid}}", rowid).Replace(q)); err != nil {
			tx.Rollback() //nolint:errcheck
			return fmt.Errorf("queue: migration %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, s.rebind(`INSERT INTO alertfan_migration (version) VALUES (?)`), v); err != nil {
			tx.Rollback() //nolint:errcheck
			return fmt.Errorf("queue: record migration %d: %w", v, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("queue: migration %d: %w", v, err)
		}
	}
	if rekeyed {
		// The new table is in the WAL: written back into the file now,
		// and the WAL emptied, rather than at the first shutdown, which
		// outlasted its timeout on a large store.
		if _, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			s.logger.Warn("Could not write the migrated state table back from the WAL; SQLite does it later", "err", err)
		}
	}
	if told {
		s.logger.Info("Migrated the store's schema", "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}
