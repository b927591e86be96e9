package queue

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/alertfan/alertfan/sinks"
)

// Phase is where one (target, key) stands in its destination's lifecycle:
// the phase the newest accepted state asks for (want) and the phase the
// target was last brought to. PagerDuty: none → triggered → acknowledged →
// resolved. Backlog maps triggered and acknowledged to an open issue and
// resolved to a closed one (the sink keeps reopen/new-issue itself).
type Phase = string

// Phases. PhaseNone is a target that has been sent nothing for the key.
const (
	PhaseNone         Phase = ""
	PhaseTriggered    Phase = "triggered"
	PhaseAcknowledged Phase = "acknowledged"
	PhaseResolved     Phase = "resolved"
	// PhaseEvent is a one-off (a change event, a Mackerel host event): sent
	// once per accepted version, never resolved.
	PhaseEvent Phase = "event"
)

// step is one call a worker makes to move a target toward the wanted phase.
type step struct {
	payload []byte
	to      Phase
	// closing: the resolve of an older occurrence the target may still
	// hold, sent before the new occurrence's calls.
	closing bool
}

// plan is the lifecycle rule shared by every sink: the calls that bring a
// target from the phase it is in to the phase the newest state wants, in
// the order the destination's API needs, each once.
//
//   - A repeat (same phase, same content digest) needs no call: Alertmanager
//     resends and HA replicas fold into what was already sent.
//   - An acknowledge for a target that never got the trigger sends the
//     trigger first (PagerDuty ignores an acknowledge for an unknown
//     dedup_key; a Backlog issue takes its content from the trigger).
//   - A resolve for a target whose trigger was never sent needs no call
//     (the alert came and went while the target was down or rate-limited).
//     Unless the trigger may have been sent unrecorded — its call was in
//     flight when the process died, was rescued or was cancelled — then
//     the resolve is sent (a target ignores a resolve of nothing).
//     A resolve for a key alertfan never saw firing is passed on: a relay
//     forwards what its sender said.
func plan(st *state) []step {
	// A resolve and a new occurrence that both arrived while the target
	// still holds the old one open: the target gets the resolve, then the
	// new trigger — a new PagerDuty incident, a reopened (or new) issue —
	// never the new occurrence folded into the old, perhaps acknowledged,
	// incident.
	//
	// The same holds for an older occurrence whose trigger failed without
	// its answer (uncertain, its key kept in ref): it may be open.
	if st.want != PhaseResolved && st.want != PhaseEvent && st.occ > st.sentOcc && len(st.closePayload) > 0 &&
		(st.phase == PhaseTriggered || st.phase == PhaseAcknowledged || ((st.phase == PhaseNone || st.phase == PhaseResolved) && st.uncertain && st.ref != "")) {
		next := *st
		next.phase, next.sentDigest = PhaseResolved, ""
		return append([]step{{payload: st.closePayload, to: PhaseResolved, closing: true}}, planPhase(&next)...)
	}
	return planPhase(st)
}

// planPhase is plan within one occurrence.
func planPhase(st *state) []step {
	fire := st.firePayload
	if st.want == PhaseTriggered {
		fire = st.payload
	}
	same := st.digest != "" && st.digest == st.sentDigest
	switch st.want {
	case PhaseTriggered:
		if (st.phase == PhaseTriggered || st.phase == PhaseAcknowledged) && same {
			return nil
		}
		to := PhaseTriggered
		if st.phase == PhaseAcknowledged {
			to = PhaseAcknowledged // a new trigger leaves an acknowledged incident acknowledged
		}
		return []step{{payload: st.payload, to: to}}
	case PhaseAcknowledged:
		if st.phase == PhaseAcknowledged && same {
			return nil
		}
		if (st.phase == PhaseNone || st.phase == PhaseResolved) && len(fire) == 0 {
			// An acknowledge of nothing the target holds (a sender's
			// acknowledge before any trigger) is passed on as it came,
			// once, and acknowledges nothing: the target stays where it
			// was, so a trigger after it is sent as a trigger (a fresh
			// helper: acknowledge, trigger, acknowledge reached PagerDuty
			// as acknowledge, acknowledge — no incident at all).
			if same {
				return nil
			}
			return []step{{payload: st.payload, to: st.phase}}
		}
		var steps []step
		if (st.phase == PhaseNone || st.phase == PhaseResolved) && len(fire) > 0 {
			steps = append(steps, step{payload: fire, to: PhaseTriggered})
		}
		return append(steps, step{payload: st.payload, to: PhaseAcknowledged})
	case PhaseResolved:
		switch {
		case st.phase == PhaseResolved && !st.uncertain:
			// Unless a later call (a new occurrence's trigger, a reopen)
			// may have reached the target unrecorded.
			return nil
		case st.phase == PhaseNone && len(fire) > 0 && !st.uncertain:
			return nil
		}
		return []step{{payload: st.payload, to: PhaseResolved}}
	default: // PhaseEvent, or a state written before phases existed
		return []step{{payload: st.payload, to: st.phase}}
	}
}

// Update is one alert's newly accepted state and the work it makes.
type Update struct {
	// Identity is the alert's identity ("am:<fingerprint>", …).
	Identity string
	Input    string
	// Want is the phase the alert asks for: PhaseTriggered (firing),
	// PhaseAcknowledged, PhaseResolved, or PhaseEvent (no lifecycle).
	Want     Phase
	StartsAt time.Time
	EndsAt   time.Time
	// Ordered says the input carries occurrence times (Alertmanager's
	// startsAt/endsAt, Mackerel's openedAt/closedAt), so the update is
	// ordered by them rather than by arrival.
	Ordered bool
	// Labels is the JSON object of the alert's labels, remembered so that
	// an update without labels (a PagerDuty resolve) can be rendered.
	Labels []byte
	// Routes names, per receiver, the route the alert took to it
	// ("route.routes[1]"), for the delivery history.
	Routes map[string]string
	// Items are the alert-mode work items for the targets its labels route
	// to.
	Items []Item
	// Sticky builds the item for a target that holds this alert open (it
	// got, or has queued, the trigger) but that the labels no longer route
	// to. It returns false when it cannot (a target unknown to this config).
	Sticky func(target string) (Item, bool)

	// noDest is set by Accept for a changed update that reached no target
	// of its own; unless a group carries it, the history says so.
	noDest bool
	// changed is set by Accept when the update moved the alert's own state
	// (new, or another status): a group's history row names such members.
	changed bool
	// news is set by Accept when the update told something the alert's
	// row did not hold: a new alert, another status, or another
	// occurrence (startsAt). A held group message none of whose members
	// has news is a late copy (GroupItem.Held).
	news bool
	// aid is the alert row's rowid on SQLite (the history's aid), else 0.
	aid int64
}

// GroupItem is a work item made of several alerts (PagerDuty group mode).
type GroupItem struct {
	Item
	// Members index the Updates whose alerts the item carries.
	Members []int
	// Rebuild makes the item again from the members still fresh (keep[i]
	// for Members[i]); false means none is.
	Rebuild func(keep []bool) (Item, bool)
	// Held marks a message that left alerts out (truncatedAlerts) and
	// lists only resolved ones: it keeps an open group firing, and opens
	// a resolved one again only when it tells something new of an alert
	// (a new one, another occurrence): else it is a late copy of what
	// came before the group resolved (an HA peer's, a retry).
	Held bool
}

// Intake is what one request makes.
type Intake struct {
	Updates []Update
	Groups  []GroupItem
	// GroupKey is the Alertmanager group the request carries, if any, in
	// its StoreKey form (the key group-mode items are stored under);
	// StickyGroup builds the group's item for a group-mode target that
	// holds the group open but that its alerts no longer route to.
	GroupKey    string
	StickyGroup func(target string) (Item, bool)
}

// Accepted reports what Accept did.
type Accepted struct {
	// Stale counts updates older than what was accepted for their alert;
	// they changed nothing.
	Stale int
	// StaleByInput breaks Stale down by input.
	StaleByInput map[string]int
	// Sticky counts items added for targets that held an alert open.
	Sticky int
	Items  int
}

// alertRow is an identity's newest accepted state.
type alertRow struct {
	status           Phase
	startsAt, endsAt int64
}

// isStale is the ordering rule. An Alertmanager alert occurrence is
// (fingerprint, startsAt); Alertmanager HA replicas each send, so a firing
// from one replica can arrive after another replica's resolve
// (https://github.com/prometheus/alertmanager/issues/2447, #4008).
//
//   - While the alert is open, every firing or acknowledge belongs to the
//     open occurrence, even with another startsAt: replicas may disagree on
//     startsAt (each keeps the earliest it saw), and a new occurrence cannot
//     begin before the open one ends. A resolve is stale only when it ended
//     before the open occurrence began (an older occurrence's late resolve).
//   - Once resolved, a firing or acknowledge whose startsAt is not later
//     than the resolve's endsAt is stale (an HA replica's late copy); a
//     later startsAt is a new occurrence and fires again.
//   - For inputs without occurrence times (PagerDuty events), arrival order
//     rules, but an acknowledge after a resolve is stale: PagerDuty itself
//     ignores it, and it must not reopen anything.
func isStale(prev alertRow, u *Update) bool {
	if u.Want == PhaseEvent {
		return false
	}
	if !u.Ordered {
		return prev.status == PhaseResolved && u.Want == PhaseAcknowledged
	}
	starts := u.StartsAt.UnixNano()
	if prev.status != PhaseResolved {
		if u.Want != PhaseResolved {
			return false
		}
		ended := unixNano(u.EndsAt)
		if ended == 0 {
			ended = starts
		}
		return ended < prev.startsAt
	}
	if u.Want == PhaseResolved {
		return false // another copy of the resolve
	}
	return starts <= max(prev.endsAt, prev.startsAt)
}

// nextAlertRow is the alert's state after a fresh update: the occurrence's
// earliest startsAt while it is open, the latest endsAt of its resolves.
func nextAlertRow(prev alertRow, found bool, u *Update, now int64) alertRow {
	next := alertRow{status: u.Want, startsAt: u.StartsAt.UnixNano()}
	open := found && prev.status != PhaseResolved
	switch {
	case u.Want == PhaseResolved:
		next.endsAt = unixNano(u.EndsAt)
		if next.endsAt == 0 {
			next.endsAt = now
		}
		if open {
			next.startsAt = min(prev.startsAt, next.startsAt)
		} else if found {
			next.startsAt, next.endsAt = prev.startsAt, max(prev.endsAt, next.endsAt)
		}
	case open && u.Ordered:
		next.startsAt = min(prev.startsAt, next.startsAt)
	}
	return next
}

const (
	// The read gives the history's aid: on SQLite the alert row's rowid
	// (see migration 22), on PostgreSQL 0. The writes are Execs, whose
	// result gives a new row's (insertAlert).
	sqlGetAlert       = `SELECT status, starts_at, ends_at, 0 FROM alertfan_alert WHERE identity = ?`
	sqlGetAlertSQLite = `SELECT status, starts_at, ends_at, rowid FROM alertfan_alert WHERE identity = ?`
	sqlAlertValues    = `INSERT INTO alertfan_alert (identity, input, status, starts_at, ends_at, labels, seen_at) VALUES (?, ?, ?, ?, ?, ?, ?)`
	sqlUpsertAlert    = sqlAlertValues + `
		ON CONFLICT (identity) DO UPDATE SET input = excluded.input, status = excluded.status, starts_at = excluded.starts_at,
			ends_at = excluded.ends_at, labels = CASE WHEN excluded.labels = '{}' OR excluded.labels = '' THEN alertfan_alert.labels ELSE excluded.labels END,
			seen_at = excluded.seen_at`
	sqlInsertAlert = sqlAlertValues + ` ON CONFLICT (identity) DO NOTHING`
	sqlKeyTargets  = `SELECT target, resolved FROM alertfan_state WHERE key = ?`
)

// Accept durably stores what one request makes, in one group-committed
// transaction: each alert's newest state (stale ones are dropped), the
// state of every (target, key) it reaches — the targets its labels route
// to plus every target that holds it open (sticky destinations) — and the
// jobs that deliver them. It returns nil only once all is committed.
func (s *Store) Accept(ctx context.Context, in *Intake) (Accepted, error) {
	defer s.intake.enter()()
	var res Accepted
	ups := make([]int, len(in.Updates))
	for i := range ups {
		ups[i] = i
	}
	// One lock order in every transaction keeps concurrent PostgreSQL
	// committers and replicas from deadlocking.
	sort.SliceStable(ups, func(a, b int) bool { return in.Updates[ups[a]].Identity < in.Updates[ups[b]].Identity })
	// The batch may run again (a PostgreSQL deadlock, another request's
	// write refused: see commit), and each run starts from the updates as
	// they came: acceptUpdate drops the items of targets with nothing to
	// resolve and adds those of the targets holding the alert open, into
	// copies (else a second run would find the sticky targets routed and
	// count none).
	type given struct {
		items  []Item
		routes map[string]string
	}
	as := make([]given, len(in.Updates))
	for i, u := range in.Updates {
		as[i] = given{u.Items, u.Routes}
	}
	var locks []string // SQLite's one writer needs none (sqlLockKeys)
	if s.dialect == dialectPostgres {
		locks = in.lockNames()
	}
	err := s.submitLocking(ctx, locks, func(ctx context.Context, b *batch) error {
		res = Accepted{}
		for i, g := range as {
			in.Updates[i].Items, in.Updates[i].Routes = g.items, g.routes
		}
		if err := b.checkTargets(ctx); err != nil {
			return err
		}
		fresh := make([]bool, len(in.Updates))
		for _, i := range ups {
			u := &in.Updates[i]
			ok, err := b.acceptUpdate(ctx, u, &res)
			if err != nil {
				return err
			}
			fresh[i] = ok
		}
		for _, g := range in.Groups {
			it, keep := g.Item, true
			if !allFresh(fresh, g.Members) && g.Rebuild != nil {
				k := make([]bool, len(g.Members))
				for j, m := range g.Members {
					k[j] = fresh[m]
				}
				it, keep = g.Rebuild(k)
			}
			if !keep {
				continue
			}
			if g.Held && !anyNews(in.Updates, fresh, g.Members) {
				closed, err := b.groupResolved(ctx, it.Target, it.Key, it.Payload)
				if err != nil {
					return err
				}
				if closed {
					input := ""
					for _, m := range g.Members {
						if u := &in.Updates[m]; fresh[m] {
							input = u.Input
							b.record(histRow{aid: u.aid, identity: u.Identity, target: it.Target, key: it.Key, event: EventStale, input: u.Input, status: string(u.Want), labels: string(u.Labels)})
						}
					}
					res.Stale++
					if res.StaleByInput == nil {
						res.StaleByInput = map[string]int{}
					}
					res.StaleByInput[input]++
					continue
				}
			}
			wrote, err := b.putItem(ctx, it)
			if err != nil {
				return err
			}
			if wrote {
				// The members whose own state moved; if none did (the group
				// changed otherwise: annotations, a member left), all.
				moved := false
				for _, m := range g.Members {
					moved = moved || (fresh[m] && in.Updates[m].changed)
				}
				for _, m := range g.Members {
					if fresh[m] && (in.Updates[m].changed || !moved) {
						b.recordAccepted(&in.Updates[m], &it, "")
					}
				}
			}
			res.Items++
		}
		if err := b.stickyGroup(ctx, in, fresh, &res); err != nil {
			return err
		}
		grouped := map[int]bool{}
		for _, g := range in.Groups {
			for _, m := range g.Members {
				grouped[m] = true
			}
		}
		for i := range in.Updates {
			if u := &in.Updates[i]; u.noDest && !grouped[i] && (in.GroupKey == "" || res.Sticky == 0) {
				// Accepted, but no destination: the history says so ("Why not?").
				b.record(histRow{aid: u.aid, identity: u.Identity, event: EventAccepted, input: u.Input, status: string(u.Want), labels: string(u.Labels)})
			}
		}
		return nil
	})
	if err == nil {
		s.metrics.itemsCommitted.Add(float64(res.Items))
	}
	return res, err
}

// lockNames names what Accept reads to decide its writes (see
// sqlLockKeys): each alert's identity, for its row, and each key its
// items and groups write, for its states at every target (those a sticky
// destination adds too).
func (in *Intake) lockNames() []string {
	var names []string
	for i := range in.Updates {
		u := &in.Updates[i]
		if u.Identity != "" {
			names = append(names, u.Identity)
		}
		for _, it := range u.Items {
			names = append(names, it.Key)
		}
	}
	for _, g := range in.Groups {
		names = append(names, g.Item.Key)
	}
	return names
}

// digestExpired is the content digest of a resolve by resolve_after.
const digestExpired = "expired"

// groupResolved reports whether target's state of the group key is
// resolved (false when it has none) and held, the payload of a held
// message (GroupItem.Held), tells no more alerts than that state and held
// list together: the message says truncatedAlerts more alerts exist than
// it lists, and if those are not among the alerts the resolved state
// lists, an alert alertfan has not seen is in the group (the message came
// after the resolve, an alert fired meanwhile), and it is not a late copy.
func (b *batch) groupResolved(ctx context.Context, target, key string, held []byte) (bool, error) {
	var resolved int
	var payload, digest string
	err := b.queryRow(ctx, b.s.rebind(`SELECT resolved, payload, digest FROM alertfan_state WHERE target = ? AND key = ?`), target, key).Scan(&resolved, &payload, &digest)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("queue: read group state: %w", err)
	}
	if resolved != 1 {
		return false, nil
	}
	if digest == digestExpired {
		// Resolved by resolve_after: the sender's own resolve of the
		// same alerts, however truncated, is no news.
		return true, nil
	}
	was, now := listed([]byte(payload)), listed(held)
	known := map[string]bool{}
	for _, a := range append(was.Alerts, now.Alerts...) {
		known[a.Identity] = true
	}
	return len(now.Alerts)+now.Truncated <= len(known), nil
}

// payloadList is what a state's payload (a sinks.Notification) lists:
// its alerts' identities and the count of alerts it left out.
type payloadList struct {
	Alerts []struct {
		Identity string `json:"identity"`
	} `json:"alerts"`
	Truncated int `json:"truncated"`
}

// listed reads what payload lists (nothing, if it does not read).
func listed(payload []byte) payloadList {
	var l payloadList
	json.Unmarshal(payload, &l) //nolint:errcheck // unreadable: lists nothing
	return l
}

func (l payloadList) identities() []string {
	ids := make([]string, 0, len(l.Alerts))
	for _, a := range l.Alerts {
		if a.Identity != "" {
			ids = append(ids, a.Identity)
		}
	}
	return ids
}

// stickyGroup sends the group's state to every group-mode target that
// holds the group open but got no item from this request's routing.
func (b *batch) stickyGroup(ctx context.Context, in *Intake, fresh []bool, res *Accepted) error {
	if in.GroupKey == "" || in.StickyGroup == nil {
		return nil
	}
	held, err := b.targetsHolding(ctx, in.GroupKey)
	if err != nil {
		return err
	}
	routed := map[string]bool{}
	for _, g := range in.Groups {
		routed[g.Target] = true
	}
	for _, t := range sortedOpen(held) {
		if routed[t] {
			continue
		}
		if it, ok := in.StickyGroup(t); ok {
			wrote, err := b.putItem(ctx, it)
			if err != nil {
				return err
			}
			if wrote {
				for m := range in.Updates {
					if fresh[m] {
						b.recordAccepted(&in.Updates[m], &it, routeSticky)
					}
				}
			}
			res.Sticky++
			res.Items++
		}
	}
	return nil
}

// anyNews reports whether a fresh member's update told something its
// alert's row did not hold (Update.news).
func anyNews(ups []Update, fresh []bool, members []int) bool {
	for _, m := range members {
		if fresh[m] && (ups[m].news || ups[m].Identity == "") {
			return true
		}
	}
	return false
}

func allFresh(fresh []bool, members []int) bool {
	for _, m := range members {
		if !fresh[m] {
			return false
		}
	}
	return true
}

// acceptUpdate applies one alert's update inside the batch; false means it
// was stale.
func (b *batch) acceptUpdate(ctx context.Context, u *Update, res *Accepted) (bool, error) {
	known, changed := false, u.Identity == "" || u.Want == PhaseEvent
	tracked, inserted := u.Identity != "" && u.Want != PhaseEvent, false
	u.news = !tracked
	if tracked && !b.s.seen.maybe(u.Identity) {
		// Most likely a new alert (seen.go): insert its row, and read it
		// only if one was there after all.
		var err error
		if inserted, err = b.insertAlert(ctx, u); err != nil {
			return false, err
		}
		changed = inserted
		u.news = inserted
	}
	if tracked {
		b.s.seen.add(u.Identity)
	}
	if tracked && !inserted {
		var prev alertRow
		err := b.queryRow(ctx, b.s.dialect.pick(sqlGetAlert, sqlGetAlertSQLite), u.Identity).Scan(&prev.status, &prev.startsAt, &prev.endsAt, &u.aid)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return false, fmt.Errorf("queue: read alert state: %w", err)
		default:
			known = true
			if isStale(prev, u) {
				b.record(histRow{aid: u.aid, identity: u.Identity, event: EventStale, input: u.Input, status: string(u.Want), labels: string(u.Labels)})
				res.Stale++
				if res.StaleByInput == nil {
					res.StaleByInput = map[string]int{}
				}
				res.StaleByInput[u.Input]++
				return false, nil
			}
		}
		next := nextAlertRow(prev, known, u, b.now)
		changed = !known || next.status != prev.status
		// (A resolve of a later occurrence leaves the row's startsAt, so
		// the update's own is compared.)
		// A later occurrence than any the row holds: one that started
		// after the row's last start and end. (A resolve of an occurrence
		// first seen resolved leaves the row's startsAt but moves its
		// endsAt, so a copy of it is no news the second time.) A status
		// change of a known occurrence is none: it says nothing of what
		// fired since.
		u.news = !known || (u.StartsAt.UnixNano() > prev.startsAt && u.StartsAt.UnixNano() > prev.endsAt)
		// An Exec, as in insertAlert: a known row's aid was just read. A
		// row the upsert inserts (pruned since this process saw it) leaves
		// aid 0, and its history rows find its rowid by identity (see
		// sqliteHistRow).
		if _, err := b.exec(ctx, sqlUpsertAlert, u.Identity, u.Input, next.status, next.startsAt, next.endsAt, u.labelsOrEmpty(), b.now); err != nil {
			return false, fmt.Errorf("queue: write alert state: %w", err)
		}
	}
	// An alert seen for the first time has no target state yet: nothing
	// holds it, nothing to look up (the common case in a storm).
	if u.Identity != "" && u.Want != PhaseEvent && known {
		held, err := b.targetsHolding(ctx, u.Identity)
		if err != nil {
			return false, err
		}
		// An acknowledge or resolve of an alert alertfan knows goes only to
		// targets that got (or have queued) something for it: a target
		// added by a reload, or one whose route the alert never took, has
		// nothing to acknowledge or resolve. (A resolve for an alert never
		// seen at all is passed on as it came.)
		// (A copy, never the items in place: Accept's batch may run again
		// from the update as it came.)
		if known && (u.Want == PhaseResolved || u.Want == PhaseAcknowledged) {
			notHeld := func(it Item) bool { _, ok := held[it.Target]; return !ok }
			if slices.ContainsFunc(u.Items, notHeld) {
				u.Items = slices.DeleteFunc(slices.Clone(u.Items), notHeld)
			}
		}
		// Targets holding the alert open hear about every later update,
		// whatever its labels route to now.
		if u.Sticky != nil {
			routed := make(map[string]bool, len(u.Items))
			for _, it := range u.Items {
				routed[it.Target] = true
			}
			for _, t := range sortedOpen(held) {
				if routed[t] {
					continue
				}
				if it, ok := u.Sticky(t); ok {
					if recv := b.s.receiverOfTarget(t); u.Routes[recv] == "" {
						u.Routes = maps.Clone(u.Routes) // not the caller's: see Accept
						if u.Routes == nil {
							u.Routes = map[string]string{}
						}
						u.Routes[recv] = routeSticky
					}
					u.Items = append(slices.Clip(u.Items), it)
					res.Sticky++
				}
			}
		}
	}
	if tracked && !known && u.Want == PhaseResolved && len(u.Items) > 0 {
		// A resolve of an alert this store never saw fire is passed on
		// (plan), but it ends nothing alertfan paged anyone for: on a
		// rate-limited target it goes after every trigger, not before
		// them as the resolve of a page does (1,000 such resolves held a
		// critical page back 16 minutes: a fresh helper). A copy, as above.
		items := slices.Clone(u.Items)
		for i := range items {
			items[i].Priority = sinks.PriorityInfo
		}
		u.Items = items
	}
	sort.SliceStable(u.Items, func(i, j int) bool { return u.Items[i].Target < u.Items[j].Target })
	recorded := false
	for i := range u.Items {
		it := &u.Items[i]
		put := b.putItem
		if inserted {
			put = b.putNewItem
		}
		wrote, err := put(ctx, *it)
		if err != nil {
			return false, err
		}
		if wrote {
			b.recordAccepted(u, it, "")
			recorded = true
		}
		res.Items++
	}
	u.noDest, u.changed = changed && !recorded && len(u.Items) == 0, changed
	return true, nil
}

// labelsOrEmpty is the alert row's labels: an update without any (a
// PagerDuty resolve) stores "{}", which the upsert keeps the old ones for.
func (u *Update) labelsOrEmpty() string {
	if len(u.Labels) == 0 {
		return "{}"
	}
	return string(u.Labels)
}

// insertAlert writes the row of an alert seen for the first time, and
// reports false (writing nothing) when the alert has a row already.
//
// An Exec, not a RETURNING query: the statement's result has what a
// RETURNING row would (the rows written, and on SQLite the new rowid, the
// history's aid), without the rows a query opens and closes around it
// and SQLite's buffer of RETURNING rows — about half of this statement's
// time on intake's writer (pprof of the ingest benchmark, BENCHMARKS.md).
func (b *batch) insertAlert(ctx context.Context, u *Update) (bool, error) {
	next := nextAlertRow(alertRow{}, false, u, b.now)
	res, wrote, err := b.insertNew(ctx, sqlInsertAlert, u.Identity, u.Input, next.status, next.startsAt, next.endsAt, u.labelsOrEmpty(), b.now)
	if err != nil {
		return false, fmt.Errorf("queue: write alert state: %w", err)
	}
	if !wrote {
		return false, nil // a row was there
	}
	u.aid = 0
	if b.s.dialect == dialectSQLite {
		if u.aid, err = res.LastInsertId(); err != nil {
			return false, fmt.Errorf("queue: write alert state: %w", err)
		}
	}
	return true, nil
}

// routeSticky is the route recorded for a destination that got an update
// because it holds the alert open, not because the labels route there.
const routeSticky = "(sticky: holds the alert open)"

// recordAccepted adds the history row of an update stored for a target.
func (b *batch) recordAccepted(u *Update, it *Item, route string) {
	if u.Identity == "" {
		return
	}
	recv := b.s.receiverOfTarget(it.Target)
	if route == "" {
		route = u.Routes[recv]
	}
	b.record(histRow{aid: u.aid, identity: u.Identity, target: it.Target, key: it.Key, event: EventAccepted, input: u.Input,
		status: string(u.Want), labels: string(u.Labels), receiver: recv, route: route})
}

// targetsHolding maps each target that has a state for key to whether it
// holds it open (its newest state is not a resolve).
func (b *batch) targetsHolding(ctx context.Context, key string) (map[string]bool, error) {
	st, err := b.stmt(ctx, sqlKeyTargets)
	if err != nil {
		return nil, fmt.Errorf("queue: targets of a key: %w", err)
	}
	rows, err := st.QueryContext(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("queue: targets of a key: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var t string
		var resolved int
		if err := rows.Scan(&t, &resolved); err != nil {
			return nil, err
		}
		out[t] = resolved == 0
	}
	return out, rows.Err()
}

func sortedOpen(held map[string]bool) []string {
	var out []string
	for t, open := range held {
		if open {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// RecallLabels returns the labels last accepted for an identity (a JSON
// object), so that an update that carries none (a PagerDuty resolve or
// acknowledge without payload) is rendered with the trigger's labels.
func (s *Store) RecallLabels(ctx context.Context, identity string) ([]byte, bool, error) {
	var labels string
	err := s.rdb.QueryRowContext(ctx, s.rebind(`SELECT labels FROM alertfan_alert WHERE identity = ?`), identity).Scan(&labels)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("queue: recall labels: %w", err)
	}
	return []byte(labels), true, nil
}

// AlertStatus is the status last accepted for an identity ("" when it has
// no row: never seen, or pruned after it resolved).
func (s *Store) AlertStatus(ctx context.Context, identity string) (Phase, error) {
	var status string
	err := s.rdb.QueryRowContext(ctx, s.rebind(`SELECT status FROM alertfan_alert WHERE identity = ?`), identity).Scan(&status)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("queue: read alert status: %w", err)
	}
	return Phase(status), nil
}

// Refire is what Expire needs to turn a stored firing state into the
// resolve it sends: the new payload, or false to leave the key alone.
type Refire func(key string, payload []byte) ([]byte, bool)

// Expire resolves, at target, every alert it holds open whose sender has
// not refreshed it since cutoff (resolve_after). The alert's own state is
// not changed: a later refresh by the sender fires it again.
func (s *Store) Expire(ctx context.Context, target, kind string, cutoff time.Time, resolve Refire) (int, error) {
	const unrefreshed = `SELECT st.key, st.payload FROM alertfan_state st JOIN alertfan_alert a ON a.identity = st.key
		WHERE st.target = ? AND st.resolved = 0 AND st.want <> ? AND a.seen_at < ? ORDER BY st.key`
	// On PostgreSQL the alerts found are locked first (sqlLockKeys) and
	// found again under the lock: a refresh committing meanwhile on
	// another committer or replica is then seen, not resolved over.
	var locks []string
	var locked map[string]bool
	if s.dialect == dialectPostgres {
		rows, err := s.rdb.QueryContext(ctx, s.rebind(unrefreshed), target, PhaseEvent, cutoff.UnixNano())
		if err != nil {
			return 0, fmt.Errorf("queue: find unrefreshed alerts: %w", err)
		}
		for rows.Next() {
			var key, payload string
			if err := rows.Scan(&key, &payload); err != nil {
				rows.Close()
				return 0, err
			}
			locks = append(locks, key)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, err
		}
		if len(locks) == 0 {
			return 0, nil
		}
		locked = make(map[string]bool, len(locks))
		for _, k := range locks {
			locked[k] = true
		}
	}
	n := 0
	err := s.submitLocking(ctx, locks, func(ctx context.Context, b *batch) error {
		n = 0
		rows, err := b.tx.QueryContext(ctx, s.rebind(unrefreshed), target, PhaseEvent, cutoff.UnixNano())
		if err != nil {
			return fmt.Errorf("queue: find unrefreshed alerts: %w", err)
		}
		var items []Item
		for rows.Next() {
			var key, payload string
			if err := rows.Scan(&key, &payload); err != nil {
				rows.Close()
				return err
			}
			if locked != nil && !locked[key] {
				continue // found since: not locked, the next run's
			}
			if p, ok := resolve(key, []byte(payload)); ok {
				items = append(items, Item{Target: target, Kind: kind, Key: key, Want: PhaseResolved, Payload: p, Digest: digestExpired})
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, it := range items {
			wrote, err := b.putItem(ctx, it)
			if err != nil {
				return err
			}
			if wrote {
				b.record(histRow{identity: it.Key, target: it.Target, key: it.Key, event: EventExpired, status: string(PhaseResolved),
					receiver: b.s.receiverOfTarget(it.Target), reason: "resolve_after"})
			}
			n++
		}
		return nil
	})
	return n, err
}

// ExpireGroups resolves, at a group-mode target, every group it holds open
// that no message has refreshed since cutoff (resolve_after). A message
// refreshes a group when it changes the group's state (updated_at) or lists
// any of its alerts (their alertfan_alert.seen_at, written by every
// message, repeats included): Alertmanager sends a firing group again at
// every repeat_interval, so a group it has not mentioned for longer has
// resolved there, or Alertmanager lost it.
//
// The groups are found on the read connection and only those found are
// checked again, and resolved, in the writer's transaction: a pass over
// every firing group never holds intake up.
func (s *Store) ExpireGroups(ctx context.Context, target, kind string, cutoff time.Time, resolve Refire) (int, error) {
	rows, err := s.rdb.QueryContext(ctx, s.rebind(`SELECT key, payload FROM alertfan_state
		WHERE target = ? AND resolved = 0 AND want <> ? AND updated_at < ? ORDER BY key`), target, PhaseEvent, cutoff.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("queue: find unrefreshed groups: %w", err)
	}
	type group struct {
		key string
		ids []string
	}
	var found []group
	for rows.Next() {
		var key, payload string
		if err := rows.Scan(&key, &payload); err != nil {
			rows.Close()
			return 0, err
		}
		found = append(found, group{key, listed([]byte(payload)).identities()})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	// A group still firing at its sender is mentioned at every
	// repeat_interval without a change of state: most found are such, and
	// are let go here, on the read connection.
	stale := found[:0]
	for _, g := range found {
		seen, err := lastSeen(ctx, s.rdb, s.rebind, g.ids)
		if err != nil {
			return 0, err
		}
		if seen < cutoff.UnixNano() {
			stale = append(stale, g)
		}
	}
	if len(stale) == 0 {
		return 0, nil
	}
	// Locked on PostgreSQL as Expire's are (a message of the group
	// committing meanwhile is seen).
	locks := make([]string, len(stale))
	for i, g := range stale {
		locks[i] = g.key
	}
	n := 0
	err = s.submitLocking(ctx, locks, func(ctx context.Context, b *batch) error {
		n = 0
		for _, g := range stale {
			// Again in the writer's transaction: a message may have come
			// since.
			var payload string
			var updated int64
			err := b.queryRow(ctx, s.rebind(`SELECT payload, updated_at FROM alertfan_state
				WHERE target = ? AND key = ? AND resolved = 0 AND want <> ?`), target, g.key, PhaseEvent).Scan(&payload, &updated)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return fmt.Errorf("queue: read group state: %w", err)
			}
			if updated >= cutoff.UnixNano() {
				continue
			}
			ids := listed([]byte(payload)).identities()
			seen, err := lastSeen(ctx, b.tx, s.rebind, ids)
			if err != nil {
				return err
			}
			if seen >= cutoff.UnixNano() {
				continue
			}
			p, ok := resolve(g.key, []byte(payload))
			if !ok {
				continue
			}
			it := Item{Target: target, Kind: kind, Key: g.key, Want: PhaseResolved, Payload: p, Digest: digestExpired}
			wrote, err := b.putItem(ctx, it)
			if err != nil {
				return err
			}
			if wrote {
				// Each listed alert's history shows why its group resolved.
				for _, id := range ids {
					b.record(histRow{identity: id, target: target, key: g.key, event: EventExpired, status: string(PhaseResolved),
						receiver: b.s.receiverOfTarget(target), reason: "resolve_after"})
				}
			}
			n++
		}
		return nil
	})
	return n, err
}

// lastSeen is the newest alertfan_alert.seen_at of the alerts identities
// names (Unix nanoseconds), 0 when none has a row (never seen, or pruned
// after it resolved).
func lastSeen(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, rebind func(string) string, identities []string) (int64, error) {
	var last int64
	for chunk := range slices.Chunk(identities, 100) {
		query := `SELECT COALESCE(MAX(seen_at), 0) FROM alertfan_alert WHERE identity IN (` + placeholders(len(chunk)) + `)`
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		var seen int64
		if err := q.QueryRowContext(ctx, rebind(query), args...).Scan(&seen); err != nil {
			return 0, fmt.Errorf("queue: read when a group's alerts were last seen: %w", err)
		}
		last = max(last, seen)
	}
	return last, nil
}
