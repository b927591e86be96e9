package queue

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/alertfan/alertfan/sinks"
)

// RetiredPrefix starts the id under which a destination that left the
// configuration keeps the alerts it holds open.
const RetiredPrefix = "retired/"

// SetTargets swaps the set of targets workers deliver to; start and every
// reload call it. Target ids are positions in the config
// ("<receiver>/<kind>/<index>"), so what an id sends to can change; each
// id's destination is kept in the store, and before the new set is used:
//
//   - when a destination moved to another id (a config inserted before it,
//     a receiver renamed), its alerts, issue records and dead letters move
//     with it, so its open incidents and issues are still its own;
//   - when a destination left the configuration (or its id now sends
//     elsewhere: another routing key, URL, Backlog space or project), its
//     alerts move to "retired/<destination>", where they can never reach
//     the new destination. Within this process the old sink keeps taking
//     their acknowledges and resolves; after a restart nothing can reach
//     the old destination (its key is gone from the config) and they are
//     reported (alertfan_orphaned_alerts, a warning at start);
//   - when a destination comes back (a reload or a restart whose config
//     has it again), what it held under its retired id is its own again.
//
// A target the new set lacks is kept in memory as retired for the same
// reason, so a reload that moves a route never strands an open incident.
func (s *Store) SetTargets(ctx context.Context, ts map[string]Target) error {
	// No delivery runs while stored work moves between ids and the new set
	// is swapped in, so none reaches a destination that is not its own.
	s.swap.Lock()
	defer s.swap.Unlock()
	prev := *s.targets.Load()
	destIDs := destinationIDs(ts)
	moves, orphans, err := s.moveDestinations(ctx, ts, destIDs)
	if err != nil {
		return err
	}
	retired := map[string]Target{}
	for id, t := range *s.retired.Load() {
		if _, back := ts[id]; !back {
			retired[id] = t
		}
	}
	// Health follows each destination to where it is now, from the sets
	// themselves: moves says what this reload moved in the shared store,
	// and on PostgreSQL the replica that reloads first moves it for all
	// (the others find nothing to move).
	healthTo := map[string]string{} // id → where its health goes
	for id, t := range prev {
		if nt, kept := ts[id]; kept && (nt.Destination == t.Destination || t.Destination == "") {
			continue
		}
		if ids := destIDs[t.Destination]; t.Destination != "" && len(ids) > 0 {
			healthTo[id] = ids[0] // where moveDestinations moves its work
		}
		if _, moved := moves[id]; moved {
			continue // its destination lives on under another id
		}
		// Gone, or its id now sends elsewhere: the old sink serves what
		// the old destination holds, under the retired id.
		rid := id
		if t.Destination != "" {
			rid = RetiredPrefix + t.Destination
		}
		t.ID = rid
		retired[rid] = t
		if _, set := healthTo[id]; !set {
			healthTo[id] = rid
		}
	}
	// Whether a destination is down goes with it: a target removed while
	// down was reported down until a restart, and an id that now sends to
	// another destination started held.
	s.health.reassign(healthTo)
	down := s.Down()
	for id := range prev {
		if _, kept := ts[id]; !kept {
			s.metrics.targetUp.DeleteLabelValues(id)
		}
	}
	cp := make(map[string]Target, len(ts))
	for k, v := range ts {
		cp[k] = v
		// Export the series a target will have from the start, so that
		// rates and alert rules see 0 rather than nothing.
		s.metrics.deliveries.WithLabelValues(v.Kind, v.Receiver, "success", "")
		up := 1.0
		if _, isDown := down[k]; isDown {
			up = 0
		}
		s.metrics.targetUp.WithLabelValues(k).Set(up)
	}
	s.retired.Store(&retired)
	s.targets.Store(&cp)
	s.warnOrphans(orphans)
	s.differWarned.Clear() // a disagreement after this load is news
	if destinationsChanged(prev, ts) {
		s.targetsGen.Add(1) // states read before are read again (deliver)
	}
	return nil
}

// destinationsChanged reports whether an id of prev or next sends to
// another destination in the other (or is missing there).
func destinationsChanged(prev, next map[string]Target) bool {
	if len(prev) != len(next) {
		return true
	}
	for id, t := range prev {
		if n, ok := next[id]; !ok || n.Destination != t.Destination {
			return true
		}
	}
	return false
}

// destinationIDs maps each destination of ts to the ids that send to it,
// sorted: a destination that changed ids goes to the first.
func destinationIDs(ts map[string]Target) map[string][]string {
	destIDs := map[string][]string{}
	for id, t := range ts {
		if t.Destination != "" {
			destIDs[t.Destination] = append(destIDs[t.Destination], id)
		}
	}
	for _, ids := range destIDs {
		sort.Strings(ids)
	}
	return destIDs
}

// moveDestinations records each id's destination and moves the stored work
// of destinations that changed ids (destIDs: destinationIDs(ts)). It
// returns the ids whose destination moved to another id, and the open
// alerts of each retired destination (see warnOrphans).
func (s *Store) moveDestinations(ctx context.Context, ts map[string]Target, destIDs map[string][]string) (map[string]string, map[string]int, error) {
	newDest := map[string]string{} // id → destination
	for id, t := range ts {
		if t.Destination != "" {
			newDest[id] = t.Destination
		}
	}
	moves, restored := map[string]string{}, map[string]string{}
	var orphans map[string]int
	// Run as a batch of its own, not through the committer: at start the
	// committer is not running yet.
	o := &op{done: make(chan error, 1)}
	o.fn = func(ctx context.Context, b *batch) error {
		moves, restored, orphans = map[string]string{}, map[string]string{}, map[string]int{}
		if b.s.dialect == dialectPostgres {
			// Replicas starting together rewrite the table one at a time
			// (each deletes it and inserts its set; two at once collide on
			// the key). Released at commit.
			if _, err := b.tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, targetsLock); err != nil {
				return fmt.Errorf("queue: lock target destinations: %w", err)
			}
		}
		old, err := readDestinations(ctx, b.tx)
		if err != nil {
			return err
		}
		// Plan: every stored id whose destination is not at that id now.
		ids := make([]string, 0, len(old))
		for id := range old {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		type move struct{ from, to string }
		var plan []move
		for _, id := range ids {
			dest := old[id]
			if newDest[id] == dest {
				continue
			}
			to := RetiredPrefix + dest
			if cands := destIDs[dest]; len(cands) > 0 {
				to = cands[0]
				moves[id] = to
			}
			plan = append(plan, move{id, to})
		}
		// A destination put back in the config takes back what it held
		// while it was away ("retired/<destination>"): its open
		// incidents' and issues' resolves reach it again, also after a
		// restart, when no retired sink is left in memory to serve them.
		back, err := b.retiredDestinations(ctx)
		if err != nil {
			return err
		}
		for _, rid := range back {
			if cands := destIDs[strings.TrimPrefix(rid, RetiredPrefix)]; len(cands) > 0 {
				plan = append(plan, move{rid, cands[0]})
				restored[rid] = cands[0]
			}
		}
		// Two steps, so that destinations swapping ids do not collide.
		for i, m := range plan {
			if err := b.moveTarget(ctx, m.from, fmt.Sprintf("moving/%d", i)); err != nil {
				return err
			}
		}
		for i, m := range plan {
			if err := b.moveTarget(ctx, fmt.Sprintf("moving/%d", i), m.to); err != nil {
				return err
			}
		}
		// What a destination could not be sent while it was away, or
		// while a replica that had not loaded it yet ran its job (a
		// rolling reload on PostgreSQL), and was dead-lettered for that
		// alone (unknown_target), goes out now that a config has it: a
		// restored destination, and every destination configured. (A
		// moved id's dead letters moved with its states.)
		again := slices.Collect(maps.Values(restored))
		for id := range newDest {
			again = append(again, id)
		}
		slices.Sort(again)
		for _, to := range slices.Compact(again) {
			if err := b.retryAway(ctx, to); err != nil {
				return err
			}
		}
		if _, err := b.exec(ctx, `DELETE FROM alertfan_target`); err != nil {
			return err
		}
		for id, dest := range newDest {
			if _, err := b.exec(ctx, `INSERT INTO alertfan_target (id, dest, updated_at) VALUES (?, ?, ?)`, id, dest, b.now); err != nil {
				return fmt.Errorf("queue: record target destinations: %w", err)
			}
		}
		// Open alerts of destinations no longer configured.
		// Open alerts of destinations no longer configured, and those owed
		// an update (a resolve that came while the destination was away).
		orows, err := b.tx.QueryContext(ctx, sqlOrphans)
		if err != nil {
			return err
		}
		defer orows.Close()
		for orows.Next() {
			var t string
			var n int
			if err := orows.Scan(&t, &n); err != nil {
				return err
			}
			orphans[t] = n
		}
		return orows.Err()
	}
	if err := s.commit([]*op{o}); err != nil {
		return nil, nil, err
	}
	for from, to := range moves {
		s.logger.Info("A destination moved to another place in the config; its open alerts moved with it", "from", from, "to", to)
	}
	for from, to := range restored {
		s.logger.Info("A destination is back in the config; the alerts it held while it was away are its own again", "from", from, "to", to)
	}
	return moves, orphans, nil
}

// sqlOrphans counts, per retired destination, the alerts open there or
// owed an update (the warning at a load, alertfan_orphaned_alerts at each
// scrape). The range on target ('0' follows '/') uses the index on
// target, where LIKE would not (SQLite's LIKE is case-insensitive).
const sqlOrphans = `SELECT target, COUNT(*) FROM alertfan_state
	WHERE target >= 'retired/' AND target < 'retired0' AND (resolved = 0 OR pending = 1) GROUP BY target`

// warnOrphans warns of each retired destination of orphans (id → open
// alerts) that no sink of this process serves any more: after a restart,
// not after the reload that retired it, whose old sink still takes their
// acknowledges and resolves (SetTargets keeps it as retired).
func (s *Store) warnOrphans(orphans map[string]int) {
	for t, n := range orphans {
		if _, live := s.target(t); !live {
			s.logger.Warn("Alerts are open at a destination that is no longer configured; their acknowledges and resolves cannot be delivered. Put the destination back in the config (any receiver, the same mode) and they are its own again; or resolve them by hand.",
				"destination", t, "open_alerts", n)
		}
	}
}

// retryAway queues again the dead letters of target whose only fault was
// that the destination was not configured (sinks.ReasonUnknownTarget).
func (b *batch) retryAway(ctx context.Context, target string) error {
	rows, err := b.tx.QueryContext(ctx, b.s.rebind(`SELECT id, key, version FROM alertfan_dead WHERE target = ? AND reason = ? ORDER BY id`), target, sinks.ReasonUnknownTarget)
	if err != nil {
		return fmt.Errorf("queue: read dead letters of %s: %w", target, err)
	}
	type dead struct {
		id      int64
		key     string
		version int64
	}
	var ds []dead
	for rows.Next() {
		var d dead
		if err := rows.Scan(&d.id, &d.key, &d.version); err != nil {
			rows.Close()
			return err
		}
		ds = append(ds, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, d := range ds {
		if _, err := b.retryDead(ctx, d.id, target, d.key, d.version); err != nil {
			return err
		}
	}
	return nil
}

// retiredDestinations lists the retired ids ("retired/<destination>")
// that still hold states, issue records or dead letters, sorted.
func (b *batch) retiredDestinations(ctx context.Context) ([]string, error) {
	rows, err := b.tx.QueryContext(ctx, `SELECT target FROM alertfan_state WHERE target LIKE 'retired/%'
		UNION SELECT target FROM alertfan_backlog_issue WHERE target LIKE 'retired/%'
		UNION SELECT target FROM alertfan_dead WHERE target LIKE 'retired/%'`)
	if err != nil {
		return nil, fmt.Errorf("queue: read retired destinations: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	sort.Strings(out)
	return out, rows.Err()
}

// moveTarget moves a target's stored work to another id: states (pending
// ones get a new job under the new id), issue records, dead letters. A key
// the destination already holds under the new id keeps that state.
func (b *batch) moveTarget(ctx context.Context, from, to string) error {
	for _, q := range []string{
		`UPDATE alertfan_state SET target = ? WHERE target = ? AND key NOT IN (SELECT key FROM alertfan_state WHERE target = ?)`,
		`UPDATE alertfan_backlog_issue SET target = ? WHERE target = ? AND identity NOT IN (SELECT identity FROM alertfan_backlog_issue WHERE target = ?)`,
	} {
		if _, err := b.tx.ExecContext(ctx, b.s.rebind(q), to, from, to); err != nil {
			return fmt.Errorf("queue: move %s to %s: %w", from, to, err)
		}
	}
	for _, q := range []string{
		`DELETE FROM alertfan_state WHERE target = ?`,
		`DELETE FROM alertfan_backlog_issue WHERE target = ?`,
	} {
		if _, err := b.tx.ExecContext(ctx, b.s.rebind(q), from); err != nil {
			return fmt.Errorf("queue: move %s to %s: %w", from, to, err)
		}
	}
	if _, err := b.tx.ExecContext(ctx, b.s.rebind(`UPDATE alertfan_dead SET target = ? WHERE target = ?`), to, from); err != nil {
		return fmt.Errorf("queue: move %s to %s: %w", from, to, err)
	}
	// Jobs queued under the old id find nothing there now: give the moved
	// pending keys a job of their own.
	rows, err := b.tx.QueryContext(ctx, b.s.rebind(`SELECT key FROM alertfan_state WHERE target = ? AND pending = 1`), to)
	if err != nil {
		return err
	}
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return err
		}
		keys = append(keys, k)
	}
	rows.Close()
	if len(keys) == 0 || strings.HasPrefix(to, "moving/") {
		return nil
	}
	kind, err := b.s.kindOf(to)
	if err != nil {
		kind, err = b.s.kindOf(from)
	}
	if err != nil {
		return nil // a destination with no kind known yet: its keys wait for a retry command
	}
	// The old jobs' attempts may have left calls unrecorded, which the
	// new jobs cannot know: the row says so (a resolve too many is
	// harmless, a missing one leaves an incident open).
	if _, err := b.tx.ExecContext(ctx, b.s.rebind(`UPDATE alertfan_state SET pending = 0, uncertain = 1 WHERE target = ? AND pending = 1`), to); err != nil {
		return err
	}
	for _, k := range keys {
		if err := b.markPending(ctx, to, k, kind, sinks.PriorityWarning); err != nil {
			return err
		}
	}
	return nil
}

// ErrTargetsDiffer is the error of an intake request at a replica whose
// configuration has other destinations, or puts them at other target ids,
// than the configuration a replica of the deployment loaded last (the
// store's record of each id's destination): replicas on PostgreSQL during
// a rolling reload that changes destinations. Taken there, the request
// would be written under ids that mean other destinations to the other
// replicas, or miss a destination the deployment has now. It is answered
// 503, and the sender retries it — at another replica, or here once this
// one has loaded the same configuration.
var ErrTargetsDiffer = errors.New("this replica's destinations differ from those of the configuration a replica of this deployment loaded last (a rolling reload under way); reload this replica with the same configuration")

// targetsLock is the PostgreSQL advisory lock SetTargets takes exclusively
// to rewrite the destinations of target ids (moveDestinations); intake
// takes it shared while it checks them (checkTargets), so no batch writes
// under the ids of a configuration being replaced.
const targetsLock = 72616375

// checkTargets refuses, as the op's own error (it has written nothing
// yet), intake at a process whose destinations differ from the store's
// record of them (ErrTargetsDiffer). Only on PostgreSQL: one SQLite file
// has one process, whose own load wrote the record. The record is read
// once per batch.
func (b *batch) checkTargets(ctx context.Context) error {
	if b.s.dialect != dialectPostgres {
		return nil
	}
	if !b.targetsChecked {
		if _, err := b.tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock_shared($1)`, targetsLock); err != nil {
			return fmt.Errorf("queue: lock target destinations: %w", err)
		}
		stored, err := readDestinations(ctx, b.tx)
		if err != nil {
			return err
		}
		b.targetsChecked, b.targetsDiffer = true, b.s.destinationsDiffer(stored, "intake")
	}
	if b.targetsDiffer != "" {
		return &OpError{Err: fmt.Errorf("%w: %s", ErrTargetsDiffer, b.targetsDiffer)}
	}
	return nil
}

// destinationsDiffer compares this process's destinations with stored
// (the store's record: id → destination) and says how they differ, first
// id first ("" when they do not).
func (s *Store) destinationsDiffer(stored map[string]string, where string) string {
	local := *s.targets.Load()
	var diffs []string
	for id, t := range local {
		if t.Destination != "" && stored[id] != t.Destination {
			diffs = append(diffs, id)
		}
	}
	for id := range stored {
		if t, ok := local[id]; !ok || t.Destination == "" {
			diffs = append(diffs, id)
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	slices.Sort(diffs)
	id := diffs[0]
	s.warnTargetsDiffer(id, local[id].Destination, stored[id], where)
	return fmt.Sprintf("%s is %s here and %s in the configuration loaded last", id, cmp.Or(local[id].Destination, "not configured"), cmp.Or(stored[id], "not configured"))
}

// readDestinations reads the store's record of each target id's destination.
func readDestinations(ctx context.Context, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}) (map[string]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, dest FROM alertfan_target`)
	if err != nil {
		return nil, fmt.Errorf("queue: read target destinations: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, dest string
		if err := rows.Scan(&id, &dest); err != nil {
			return nil, err
		}
		out[id] = dest
	}
	return out, rows.Err()
}

// targetDiffers reports, on PostgreSQL, whether the store gives target id
// another destination than this process's configuration does: a job of
// id is then another configuration's, and this process hands it back
// without a call rather than send it to the destination it has at id.
// An id this process does not configure but the store records is another
// configuration's too: another replica has loaded one that adds the id,
// this one not yet (a rolling reload). Dead-lettered here as an unknown
// target, its alert would wait for the reload's retry of such dead
// letters, which may run before the dead letter is written.
func (s *Store) targetDiffers(ctx context.Context, id string) (bool, error) {
	if s.dialect != dialectPostgres {
		return false, nil
	}
	// A retired id ("retired/<destination>") names its destination itself
	// and has no record; nor has a configured id without a destination.
	t, ok := (*s.targets.Load())[id]
	if ok && t.Destination == "" || strings.HasPrefix(id, RetiredPrefix) {
		return false, nil
	}
	var dest string
	err := s.rdb.QueryRowContext(ctx, s.rebind(`SELECT dest FROM alertfan_target WHERE id = ?`), id).Scan(&dest)
	if errors.Is(err, sql.ErrNoRows) {
		dest, err = "", nil
	}
	if err != nil {
		return false, fmt.Errorf("queue: read the destination of %s: %w", id, err)
	}
	if !ok && dest == "" {
		return false, nil // configured nowhere: an unknown target
	}
	if dest != t.Destination {
		s.warnTargetsDiffer(id, t.Destination, dest, "delivery")
		return true, nil
	}
	return false, nil
}

// warnTargetsDiffer logs, once per id and load, that this process's
// configuration and the store's record disagree on id's destination.
func (s *Store) warnTargetsDiffer(id, here, there, where string) {
	if _, seen := s.differWarned.LoadOrStore(id, true); seen {
		return
	}
	s.metrics.targetsDiffer.Inc()
	s.logger.Warn("This replica's destinations differ from those of the configuration a replica of this deployment loaded last; its intake is answered 503, and the deliveries of ids whose destination differs are left to a replica with that configuration, until this one loads the same (a rolling reload under way?)",
		"target", id, "destination_here", cmp.Or(here, "none"), "destination_in_store", cmp.Or(there, "none"), "seen_at", where)
}
