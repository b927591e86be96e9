package queue

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
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
// its own that waits on the server (pg_sleep) so that a dropped session is
// seen, and the lock taken again, at once (holdLive). The server releases
// it as soon as the replica's session ends — a kill, a crash, an exit —
// and, for a host gone without closing its connections, once TCP
// keepalives give up on them (River's rescue_after stays the bound then). Every deadReplicaEvery, each
// replica looks at the jobs running under other alertfan client ids
// (liveIDPrefix: an alertfan from before this holds no such lock and is
// left to River's rescuer, so a rolling upgrade takes over nothing still
// running). A client whose lock it can take, in a transaction that
// releases it at once, has no session; once that has held at
// deadReplicaSweeps sweeps in a row spanning deadReplicaConfirm or more,
// all within the judging replica's own session, its running jobs are made
// available again in that transaction. A database that drops every
// session drops the judge's too, and each replica's lock is free until it
// is back; a replica whose own sessions alone keep dropping takes its lock
// back within milliseconds each time, so that sweeps seconds apart do not
// all find it free (two fresh helpers: sweeps that kept their suspicions
// across drops, or that caught a replica in the seconds before its next
// check, took live replicas' jobs over and repeated 3–8 calls). The
// jobs' next attempt finds no outcome recorded for the one taken over and
// treats its calls as maybe made (callsUnrecorded): the repeats are those
// of any kill, the calls in flight at it.
//
// Variables for the tests, which set them before a store starts.
var (
	// livenessEvery is the longest wait on the lock's session between
	// checks, and the longest pause between attempts to take it back.
	livenessEvery      = 5 * time.Second
	deadReplicaEvery   = 10 * time.Second
	deadReplicaConfirm = 15 * time.Second
)

// deadReplicaSweeps is how many sweeps in a row must find a replica's
// lock free.
const deadReplicaSweeps = 3

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
	db *sql.DB // one connection, its own: the pool's may be recycled
	// held says the lock is held; sessions counts the sessions that took
	// it, so a sweep tells whether this replica's session lasted.
	held     atomic.Bool
	sessions atomic.Int64
	// suspects are other clients whose lock sweeps found free (the
	// sweep's goroutine only).
	suspects map[string]suspect
}

// suspect is a client whose liveness lock was found free: since when, at
// how many sweeps in a row, within which of this replica's sessions.
type suspect struct {
	since   time.Time
	sweeps  int
	session int64
}

// holdLive holds this replica's liveness lock until ctx ends (the store
// closing): it takes the lock on a connection of its own (first, if not
// nil, holds it already) and waits on the server there, so that a
// session the database ended is seen at once and the lock taken again on
// a new one.
func (s *Store) holdLive(ctx context.Context, first *sql.Conn) {
	defer s.wg.Done()
	l := &s.live
	pause := 100 * time.Millisecond
	failing := false
	for ctx.Err() == nil {
		c, err := first, error(nil)
		if first == nil {
			c, err = s.takeLiveness(ctx)
		}
		first = nil
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !failing {
				s.logger.Warn("Could not take this replica's liveness lock on PostgreSQL; other replicas may take over its running jobs until it has it again; trying again", "err", err)
			}
			failing = true
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, livenessEvery)
			continue
		}
		if failing {
			s.logger.Info("This replica holds its liveness lock again")
		}
		failing, pause = false, 100*time.Millisecond
		l.sessions.Add(1)
		l.held.Store(true)
		for ctx.Err() == nil {
			if _, err := c.ExecContext(ctx, `SELECT pg_sleep($1)`, livenessEvery.Seconds()); err != nil {
				break
			}
		}
		l.held.Store(false)
		c.Close() //nolint:errcheck // broken, or the store closing
	}
}

// takeLiveness opens a session and takes this replica's liveness lock on
// it.
func (s *Store) takeLiveness(ctx context.Context) (*sql.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, livenessEvery)
	defer cancel()
	c, err := s.live.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	var held bool
	if err := c.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, livenessKey(s.client.ID())).Scan(&held); err != nil || !held {
		c.Close() //nolint:errcheck
		if err == nil {
			// The session before may still be ending on the server.
			err = errors.New("held by a session that has not ended yet")
		}
		return nil, err
	}
	return c, nil
}

// sweepDeadReplicas makes available again the jobs running under alertfan
// client ids whose replica holds no session any more (see liveness).
func (s *Store) sweepDeadReplicas() {
	l := &s.live
	session := l.sessions.Load()
	if !l.held.Load() {
		clear(l.suspects) // this replica's own session is away: it judges nobody
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	own := s.client.ID()
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
	seen := map[string]bool{}
	for _, c := range clients {
		seen[c] = true
		if err := s.takeOverDead(ctx, c, session); err != nil {
			return
		}
	}
	for c := range l.suspects {
		if !seen[c] {
			delete(l.suspects, c)
		}
	}
}

// takeOverDead makes client's running jobs available again once its
// liveness lock was free at deadReplicaSweeps sweeps in a row spanning
// deadReplicaConfirm, all within this replica's session.
func (s *Store) takeOverDead(ctx context.Context, client string, session int64) error {
	l := &s.live
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck
	var free bool
	if err := tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock($1)`, livenessKey(client)).Scan(&free); err != nil {
		return err
	}
	// Judged within this replica's session: had it ended since the
	// sweep began, the database dropped sessions, and the lock may be
	// free for that reason only.
	if !free || !l.held.Load() || l.sessions.Load() != session {
		delete(l.suspects, client)
		return nil
	}
	sus, ok := l.suspects[client]
	if !ok || sus.session != session {
		sus = suspect{since: time.Now(), session: session}
	}
	sus.sweeps++
	l.suspects[client] = sus
	if sus.sweeps < deadReplicaSweeps || time.Since(sus.since) < deadReplicaConfirm {
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
