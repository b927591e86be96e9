package queue

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// A replica killed with kill -9 (or crashed, or its host lost) leaves the
// jobs it was running marked running under its River client id, and
// River's rescuer makes them available again only after rescue_after
// (default job_timeout + 4 min): the alerts they carry waited that long
// on the other replicas, and one that resolved meanwhile never paged (a
// fresh helper, twice in one soak: River's rescuer cannot tell a dead
// replica from a slow job, so it waits for the longest a job may run).
//
// PostgreSQL can tell: each replica holds, for as long as it runs, a
// session-level advisory lock named by its client id, on a connection of
// its own (liveDB). The server releases it as soon as the replica's
// session ends — a kill, a crash, an exit — and, for a host gone without
// closing its connections, once TCP keepalives give up on them (River's
// rescue_after stays the bound then). Every deadReplicaEvery, each
// replica looks at the jobs running under other alertfan client ids
// (liveIDPrefix: an alertfan from before this holds no such lock and is
// left to River's rescuer, so a rolling upgrade takes over nothing still
// running). A client whose lock it can take, in a transaction that
// releases it at once, has no session; once that has held for
// deadReplicaConfirm (a replica whose liveness connection broke takes its
// lock again within livenessEvery: after a database restart every lock is
// free until each replica is back), its running jobs are made available
// again in that transaction. Their next attempt finds no outcome recorded
// for this one and treats its calls as maybe made (callsUnrecorded):
// the repeats are those of any kill, the calls in flight at it.
//
// Variables for the tests, which set them before a store starts.
var (
	livenessEvery      = 5 * time.Second
	deadReplicaEvery   = 10 * time.Second
	deadReplicaConfirm = 15 * time.Second
)

// liveIDPrefix starts the River client id of every alertfan that holds a
// liveness lock.
const liveIDPrefix = "alertfan_live_"

// liveClientID is this process's River client id: River's default form
// (host, start time; https://pkg.go.dev/github.com/riverqueue/river#Config,
// ID: unique per process, at most 100 bytes) after liveIDPrefix, with the
// process id so two processes started in one microsecond still differ.
func liveClientID(now time.Time) string {
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown_host"
	}
	host = strings.NewReplacer(".", "_", "-", "_", ":", "_").Replace(host)
	if len(host) > 50 {
		host = host[:50]
	}
	ts := strings.Replace(now.UTC().Format("2006_01_02T15_04_05.000000"), ".", "_", 1)
	return fmt.Sprintf("%s%s_%d_%s", liveIDPrefix, host, os.Getpid(), ts)
}

// livenessKey is the advisory lock key of a client id's liveness lock.
func livenessKey(clientID string) int64 { return lockKey("replica\x00" + clientID) }

// liveness is a replica's hold on its liveness lock (PostgreSQL).
type liveness struct {
	db   *sql.DB   // one connection, its own: the pool's may be recycled
	conn *sql.Conn // the session holding the lock; nil while it is lost
	// suspects are other clients whose lock was free, since when, all
	// within this replica's current session; swept is when the last sweep
	// ran. conn, suspects and swept belong to liveTick's goroutine.
	suspects map[string]time.Time
	swept    time.Time
}

// liveTick keeps this replica's liveness lock and, every
// deadReplicaEvery, sweeps for dead replicas, on one goroutine: a sweep
// judges others only while this replica's own session has lasted. A
// database that drops every session ends it too, and other replicas'
// locks then look free until each is back: suspicions from before are
// dropped, or a database dropping sessions every few seconds made live
// replicas look dead at two sweeps 15 s apart, each time between their
// reconnects (a fresh helper: 3–4 calls repeated by such a take-over, of
// 6 in flight).
func (s *Store) liveTick() {
	if !s.holdLiveness() {
		clear(s.live.suspects)
	}
	if time.Since(s.live.swept) >= deadReplicaEvery {
		s.live.swept = time.Now()
		s.sweepDeadReplicas()
	}
}

// holdLiveness takes this replica's liveness lock, or takes it again after
// its session was lost. Until it holds it, other replicas may take over
// its running jobs (after deadReplicaConfirm), which is why it is tried
// every livenessEvery. It reports whether the session that held the lock
// before is still the one holding it.
func (s *Store) holdLiveness() (lasted bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l := &s.live
	if l.conn != nil {
		if err := l.conn.PingContext(ctx); err == nil {
			return true
		}
		l.conn.Close() //nolint:errcheck // broken already
		l.conn = nil
	}
	c, err := l.db.Conn(ctx)
	if err != nil {
		s.logger.Warn("Could not open the liveness connection to PostgreSQL; other replicas may take over this one's running jobs until it is back", "err", err)
		return false
	}
	var held bool
	if err := c.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, livenessKey(s.client.ID())).Scan(&held); err != nil || !held {
		// Not held: the session before may still be closing on the
		// server. The next tick tries again.
		c.Close() //nolint:errcheck
		if err == nil {
			err = errors.New("held by a session that has not ended yet")
		}
		s.logger.Warn("Could not take this replica's liveness lock; trying again", "err", err)
		return false
	}
	l.conn = c
	return false
}

// sweepDeadReplicas makes available again the jobs running under alertfan
// client ids whose replica holds no session any more (see liveness).
func (s *Store) sweepDeadReplicas() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	own := s.client.ID()
	l := &s.live
	if l.conn == nil {
		return // this replica's own session is away: it judges nobody
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT DISTINCT attempted_by[array_length(attempted_by, 1)] FROM river_job
		WHERE state = 'running' AND attempted_by[array_length(attempted_by, 1)] LIKE $1`, strings.ReplaceAll(liveIDPrefix, "_", `\_`)+"%")
	if err != nil {
		return // the store is away: the next sweep looks again
	}
	var clients []string
	for rows.Next() {
		var c string
		if rows.Scan(&c) == nil && c != own {
			clients = append(clients, c)
		}
	}
	rows.Close()
	// Judged within this replica's own session: had it ended since the
	// tick's check, the database dropped sessions, and the others' locks
	// may be free for that reason only.
	if err := l.conn.PingContext(ctx); err != nil {
		clear(l.suspects)
		return
	}
	seen := map[string]bool{}
	for _, c := range clients {
		seen[c] = true
		if err := s.takeOverDead(ctx, c, l); err != nil {
			return
		}
	}
	for c := range l.suspects {
		if !seen[c] {
			delete(l.suspects, c)
		}
	}
}

// takeOverDead makes client's running jobs available again if its liveness
// lock has been free for deadReplicaConfirm.
func (s *Store) takeOverDead(ctx context.Context, client string, l *liveness) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck
	var free bool
	if err := tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock($1)`, livenessKey(client)).Scan(&free); err != nil {
		return err
	}
	if !free {
		delete(l.suspects, client) // alive
		return nil
	}
	since, ok := l.suspects[client]
	if !ok {
		l.suspects[client] = time.Now()
		return nil
	}
	if time.Since(since) < deadReplicaConfirm {
		return nil
	}
	res, err := tx.ExecContext(ctx, `UPDATE river_job SET state = 'available', scheduled_at = now()
		WHERE state = 'running' AND attempted_by[array_length(attempted_by, 1)] = $1`, client)
	if err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	delete(l.suspects, client)
	if n, _ := res.RowsAffected(); n > 0 {
		s.metrics.deadReplicaJobs.Add(float64(n))
		s.logger.Warn("A replica holds no PostgreSQL session any more (killed, crashed, or its host lost); its running jobs are available again rather than waiting for rescue_after. Their calls in flight may reach their targets again (same dedup key)",
			"replica", client, "jobs", n)
	}
	return nil
}
