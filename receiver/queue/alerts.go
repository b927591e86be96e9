package queue

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// Destination states as GET /api/v1/alerts reports them.
const (
	DestQueued    = "queued"    // a delivery is owed and has not failed yet
	DestRetrying  = "retrying"  // a delivery is owed and has failed at least once
	DestDelivered = "delivered" // the destination has the newest state
	DestDead      = "dead"      // the newest state was dead-lettered
)

// AlertView is one alert identity as the status API shows it: its newest
// accepted state and, per destination, how delivery stands.
type AlertView struct {
	Identity     string            `json:"identity"`
	Input        string            `json:"input,omitempty"`
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	StartsAt     *time.Time        `json:"starts_at,omitempty"`
	EndsAt       *time.Time        `json:"ends_at,omitempty"`
	LastSeen     *time.Time        `json:"last_seen,omitempty"`
	Destinations []Destination     `json:"destinations"`
	// History is filled by Alert only, oldest first.
	History []HistoryEvent `json:"history,omitempty"`
}

// Destination is how one (target, key) of an alert stands.
type Destination struct {
	Target   string `json:"target"`
	Receiver string `json:"receiver"`
	Kind     string `json:"kind"`
	// Key is the state's key: the identity, or the group key in group mode.
	Key         string     `json:"key"`
	State       string     `json:"state"`
	Want        string     `json:"want"`
	Phase       string     `json:"phase"`
	Attempt     int        `json:"attempt,omitempty"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastReason  string     `json:"last_reason,omitempty"`
	DeadLetter  int64      `json:"dead_letter_id,omitempty"`
	// Ref is the PagerDuty dedup_key or the Backlog issue key of the last
	// call that had one; Link where a person sees it, when known.
	Ref       string    `json:"ref,omitempty"`
	Link      string    `json:"link,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// HistoryEvent is one alertfan_history row.
type HistoryEvent struct {
	At         time.Time         `json:"at"`
	Event      string            `json:"event"`
	Target     string            `json:"target,omitempty"`
	Receiver   string            `json:"receiver,omitempty"`
	Key        string            `json:"key,omitempty"`
	Input      string            `json:"input,omitempty"`
	Status     string            `json:"status,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Route      string            `json:"route,omitempty"`
	Action     string            `json:"action,omitempty"`
	Outcome    string            `json:"outcome,omitempty"`
	HTTPStatus int               `json:"http_status,omitempty"`
	Reason     string            `json:"reason,omitempty"`
	Error      string            `json:"error,omitempty"`
	Attempt    int               `json:"attempt,omitempty"`
	Ref        string            `json:"ref,omitempty"`
}

// AlertQuery selects alerts for ListAlerts.
type AlertQuery struct {
	// Match keeps alerts whose labels it accepts; nil keeps all.
	Match func(labels map[string]string) bool
	// Receiver keeps alerts with a destination of that receiver.
	Receiver string
	// State keeps alerts with a destination in that state (DestQueued …,
	// or "none" for alerts that reached no destination), or whose own
	// status is that ("firing", "acknowledged", "resolved").
	State string
	// Limit is the page size: 1–1000, default 100.
	Limit int
	// Page is the cursor a previous page returned in Next.
	Page string
}

// AlertPage is one page of ListAlerts, newest seen first.
type AlertPage struct {
	Alerts []AlertView `json:"alerts"`
	// Next continues the listing; "" at the end.
	Next string `json:"next_page,omitempty"`
}

// ErrBadCursor is a page cursor ListAlerts did not make.
var ErrBadCursor = errors.New("page: not a cursor this server returned")

// ErrUnknownAlert is an identity with neither a state nor a history.
var ErrUnknownAlert = errors.New("no such alert")

const (
	// maxScanned bounds the rows one ListAlerts call reads when the filters
	// are selective; the page then ends early with a cursor to go on from.
	maxScanned = 20000
	scanChunk  = 500
	// maxHistory bounds the events Alert returns (the newest are kept).
	maxHistory = 2000
)

// ListAlerts lists alert identities, newest seen first, with each
// destination's state. A filter that matches few of many alerts may give
// a short (even empty) page with a Next cursor: the listing reads at most
// 20,000 alerts per call.
func (s *Store) ListAlerts(ctx context.Context, q AlertQuery) (AlertPage, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	seen, ident, err := decodeCursor(q.Page)
	if err != nil {
		return AlertPage{}, err
	}
	retrying, err := s.retryingKeys(ctx)
	if err != nil {
		return AlertPage{}, err
	}
	page := AlertPage{Alerts: []AlertView{}}
	hc := s.historyConds()
	scanned := 0
	for {
		rows, err := s.rdb.QueryContext(ctx, s.rebind(`SELECT identity, input, status, starts_at, ends_at, labels, seen_at FROM alertfan_alert
			WHERE seen_at < ? OR (seen_at = ? AND identity < ?) ORDER BY seen_at DESC, identity DESC LIMIT ?`), seen, seen, ident, scanChunk)
		if err != nil {
			return AlertPage{}, fmt.Errorf("queue: list alerts: %w", err)
		}
		var batch []AlertView
		var seenAts []int64
		for rows.Next() {
			a, at, err := scanAlert(rows)
			if err != nil {
				rows.Close()
				return AlertPage{}, err
			}
			batch, seenAts = append(batch, a), append(seenAts, at)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return AlertPage{}, err
		}
		for i := range batch {
			a := &batch[i]
			seen, ident = seenAts[i], a.Identity
			scanned++
			if q.Match != nil && !q.Match(a.Labels) {
				continue
			}
			if a.Destinations, err = s.destinations(ctx, a.Identity, retrying, hc); err != nil {
				return AlertPage{}, err
			}
			settled(a)
			if !keep(a, q) {
				continue
			}
			page.Alerts = append(page.Alerts, *a)
			if len(page.Alerts) == limit {
				if i < len(batch)-1 || len(batch) == scanChunk {
					page.Next = encodeCursor(seen, ident)
				}
				return page, nil
			}
		}
		if len(batch) < scanChunk {
			return page, nil
		}
		if scanned >= maxScanned {
			page.Next = encodeCursor(seen, ident)
			return page, nil
		}
	}
}

// settled shows a firing alert that alertfan resolved everywhere itself
// (resolve_after: its sender stopped refreshing it) as resolved. Its own
// row stays firing on purpose: a refresh with the same startsAt must fire
// it again rather than count as a stale copy.
func settled(a *AlertView) {
	if a.Status != "firing" || len(a.Destinations) == 0 {
		return
	}
	for _, d := range a.Destinations {
		if d.Want != string(PhaseResolved) {
			return
		}
	}
	a.Status = "resolved"
}

// keep applies the receiver and state filters.
func keep(a *AlertView, q AlertQuery) bool {
	if q.Receiver != "" {
		found := false
		for _, d := range a.Destinations {
			found = found || d.Receiver == q.Receiver
		}
		if !found {
			return false
		}
	}
	switch q.State {
	case "":
		return true
	case "firing", "acknowledged", "resolved":
		return a.Status == q.State
	case "none":
		return len(a.Destinations) == 0
	}
	for _, d := range a.Destinations {
		if d.State == q.State && (q.Receiver == "" || d.Receiver == q.Receiver) {
			return true
		}
	}
	return false
}

// Alert is one alert identity with its destinations and its history.
func (s *Store) Alert(ctx context.Context, identity string) (*AlertView, error) {
	if storableText(identity) != identity {
		// Invalid UTF-8 or a NUL: no identity holds either (intake refuses
		// them), and PostgreSQL would refuse the query itself.
		return nil, ErrUnknownAlert
	}
	row := s.rdb.QueryRowContext(ctx, s.rebind(`SELECT identity, input, status, starts_at, ends_at, labels, seen_at FROM alertfan_alert WHERE identity = ?`), identity)
	a, _, err := scanAlert(row)
	found := err == nil
	switch {
	case errors.Is(err, sql.ErrNoRows):
		// Events (PagerDuty change events) and alerts from before the
		// history keep no alert row; their history may still be there.
		a = AlertView{Identity: identity, Labels: map[string]string{}}
	case err != nil:
		return nil, fmt.Errorf("queue: read alert: %w", err)
	}
	retrying, err := s.retryingKeys(ctx)
	if err != nil {
		return nil, err
	}
	hc := s.historyConds()
	if a.Destinations, err = s.destinations(ctx, identity, retrying, hc); err != nil {
		return nil, err
	}
	settled(&a)
	if a.History, err = s.history(ctx, identity, a.Destinations, hc); err != nil {
		return nil, err
	}
	if !found && len(a.Destinations) == 0 && len(a.History) == 0 {
		return nil, ErrUnknownAlert
	}
	if !found {
		a.Status = "unknown"
		for _, h := range a.History {
			if len(h.Labels) > 0 {
				a.Labels, a.Input = h.Labels, h.Input
			}
		}
	}
	return &a, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanAlert(r scanner) (AlertView, int64, error) {
	var a AlertView
	var status, labels string
	var starts, ends, seen int64
	if err := r.Scan(&a.Identity, &a.Input, &status, &starts, &ends, &labels, &seen); err != nil {
		return a, 0, err
	}
	switch Phase(status) {
	case PhaseResolved:
		a.Status = "resolved"
	case PhaseAcknowledged:
		a.Status = "acknowledged"
	default:
		a.Status = "firing"
	}
	a.Labels = map[string]string{}
	json.Unmarshal([]byte(labels), &a.Labels) //nolint:errcheck // labels were written by Accept as JSON
	a.StartsAt, a.EndsAt, a.LastSeen = nanoTime(starts), nanoTime(ends), nanoTime(seen)
	a.Destinations = []Destination{}
	return a, seen, nil
}

func nanoTime(ns int64) *time.Time {
	if ns <= 0 {
		return nil
	}
	t := time.Unix(0, ns).UTC()
	return &t
}

// destinations reads the (target, key) states of an identity: its own key,
// and the group keys its history says it was accepted under.
func (s *Store) destinations(ctx context.Context, identity string, retrying map[[2]string]retryInfo, hc *historyConds) ([]Destination, error) {
	pairs := map[[2]string]bool{}
	src, args, err := hc.source(ctx, identity)
	if err != nil {
		return nil, err
	}
	rows, err := s.rdb.QueryContext(ctx, s.rebind(`SELECT DISTINCT target, key FROM `+src+` AND event = ? AND key <> ? AND key <> ''`), append(args, EventAccepted, identity)...)
	if err != nil {
		return nil, fmt.Errorf("queue: read alert groups: %w", err)
	}
	for rows.Next() {
		var t, k string
		if err := rows.Scan(&t, &k); err != nil {
			rows.Close()
			return nil, err
		}
		pairs[[2]string{t, k}] = true
	}
	rows.Close()
	out := []Destination{}
	read := func(q string, args ...any) error {
		rows, err := s.rdb.QueryContext(ctx, s.rebind(q), args...)
		if err != nil {
			return fmt.Errorf("queue: read destinations: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var d Destination
			var version, delivered, updated int64
			var pending, attempts int
			var lastError string
			if err := rows.Scan(&d.Target, &d.Key, &version, &delivered, &pending, &d.Want, &d.Phase, &updated, &attempts, &lastError); err != nil {
				return err
			}
			d.UpdatedAt = time.Unix(0, updated).UTC()
			switch {
			case pending == 1:
				d.State = DestQueued
				if attempts > 0 { // the key's own failed calls (as queue list says)
					d.State, d.Attempt, d.LastError = DestRetrying, attempts, lastError
				}
				if r, ok := retrying[[2]string{d.Target, d.Key}]; ok {
					// Its job has failed: when it runs again, and, when
					// the key itself failed, how (else the key waits, held
					// while another key of the job probes a down target).
					next := r.next
					d.NextAttempt = &next
					if attempts > 0 && d.LastError == "" {
						d.LastError = r.lastError
					}
				}
			default:
				d.State = DestDelivered
			}
			d.DeadLetter = version // resolved below
			out = append(out, d)
		}
		return rows.Err()
	}
	const cols = `SELECT target, key, version, delivered, pending, want, phase, updated_at,
		CASE WHEN attempts_seq = seq THEN attempts ELSE 0 END, CASE WHEN attempts_seq = seq THEN last_error ELSE '' END FROM alertfan_state`
	if err := read(cols+` WHERE key = ?`, identity); err != nil {
		return nil, err
	}
	for p := range pairs {
		if err := read(cols+` WHERE target = ? AND key = ?`, p[0], p[1]); err != nil {
			return nil, err
		}
	}
	for i := range out {
		if err := s.describeDestination(ctx, &out[i], hc); err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target+out[i].Key < out[j].Target+out[j].Key })
	return out, nil
}

// describeDestination adds the dead letter, the last call's reference and
// error, the receiver, the kind and the link.
func (s *Store) describeDestination(ctx context.Context, d *Destination, hc *historyConds) error {
	version := d.DeadLetter
	d.DeadLetter = 0
	d.Receiver = s.receiverOfTarget(d.Target)
	d.Kind, _ = s.kindOf(d.Target) // "" for a target id no config knows
	if d.State == DestDelivered {
		var id int64
		var reason, errText string
		err := s.rdb.QueryRowContext(ctx, s.rebind(`SELECT id, reason, error FROM alertfan_dead WHERE target = ? AND key = ? AND version = ? ORDER BY id DESC LIMIT 1`),
			d.Target, d.Key, version).Scan(&id, &reason, &errText)
		switch {
		case err == nil:
			d.State, d.DeadLetter, d.LastReason, d.LastError = DestDead, id, reason, errText
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("queue: read dead letter: %w", err)
		}
	}
	src, args, err := hc.source(ctx, d.Key)
	if err != nil {
		return err
	}
	rows, err := s.rdb.QueryContext(ctx, s.rebind(`SELECT outcome, reason, error, attempt, ref FROM `+src+`
		AND target = ? AND event = ? ORDER BY id DESC LIMIT 20`), append(args, d.Target, EventCall)...)
	if err != nil {
		return fmt.Errorf("queue: read calls: %w", err)
	}
	defer rows.Close()
	first := true
	for rows.Next() {
		var outcome, reason, errText, ref string
		var attempt int
		if err := rows.Scan(&outcome, &reason, &errText, &attempt, &ref); err != nil {
			return err
		}
		if first && outcome != OutcomeSuccess && d.State != DestDelivered {
			if d.LastError == "" {
				d.LastError = errText
			}
			if d.LastReason == "" {
				d.LastReason = reason
			}
			if d.Attempt == 0 {
				d.Attempt = attempt
			}
			if d.State == DestQueued && outcome == OutcomeRetry {
				d.State = DestRetrying
			}
		}
		first = false
		if ref != "" {
			d.Ref = ref
			break
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if d.Ref != "" {
		if t, ok := s.target(d.Target); ok {
			if l, ok := t.Sink.(linker); ok {
				d.Link = l.Link(d.Ref)
			}
		}
	}
	return nil
}

// linker is a sink that can tell where a person sees a call's result.
type linker interface {
	// Link is the web page of ref (a Backlog issue key, a PagerDuty dedup
	// key), "" when the sink cannot tell.
	Link(ref string) string
}

type retryInfo struct {
	lastError string
	next      time.Time
}

// retryingKeys maps the (target, key) of every job that has failed at
// least once to its last error and next attempt. The attempts are the
// key's own (alertfan_state.attempts).
func (s *Store) retryingKeys(ctx context.Context) (map[[2]string]retryInfo, error) {
	out := map[[2]string]retryInfo{}
	if s.client == nil {
		return out, nil
	}
	res, err := s.client.JobList(ctx, river.NewJobListParams().
		Kinds(deliverArgs{}.Kind()).
		States(rivertype.JobStateRetryable, rivertype.JobStateAvailable, rivertype.JobStateScheduled, rivertype.JobStateRunning).
		First(maxListed))
	if err != nil {
		return nil, fmt.Errorf("queue: list jobs: %w", err)
	}
	for _, j := range res.Jobs {
		if len(j.Errors) == 0 {
			continue
		}
		var a deliverArgs
		if json.Unmarshal(j.EncodedArgs, &a) != nil {
			continue
		}
		last := j.Errors[len(j.Errors)-1]
		for _, k := range a.Keys {
			out[[2]string{a.Target, k.Key}] = retryInfo{lastError: last.Error, next: j.ScheduledAt.UTC()}
		}
	}
	return out, nil
}

// history reads an identity's events: its own rows, and the calls and
// operator actions on the group keys it was delivered under.
func (s *Store) history(ctx context.Context, identity string, dests []Destination, hc *historyConds) ([]HistoryEvent, error) {
	type row struct {
		id int64 // grows as rows are written: it orders the rows one commit wrote, which share their time
		e  HistoryEvent
	}
	var rs []row
	read := func(q string, args ...any) error {
		rows, err := s.rdb.QueryContext(ctx, s.rebind(q), args...)
		if err != nil {
			return fmt.Errorf("queue: read history: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var e HistoryEvent
			var id, at int64
			var labels string
			if err := rows.Scan(&id, &at, &e.Event, &e.Target, &e.Receiver, &e.Key, &e.Input, &e.Status, &labels, &e.Route,
				&e.Action, &e.Outcome, &e.HTTPStatus, &e.Reason, &e.Error, &e.Attempt, &e.Ref); err != nil {
				return err
			}
			e.At = time.Unix(0, at).UTC()
			if labels != "" && labels != "{}" {
				json.Unmarshal([]byte(labels), &e.Labels) //nolint:errcheck // written by Accept as JSON
			}
			rs = append(rs, row{id, e})
		}
		return rows.Err()
	}
	const cols = `SELECT id, at, event, target, receiver, key, input, status, labels, route, action, outcome, http_status, reason, error, attempt, ref FROM `
	src, args, err := hc.source(ctx, identity)
	if err != nil {
		return nil, err
	}
	if err := read(cols+src+` ORDER BY id DESC LIMIT ?`, append(args, maxHistory)...); err != nil {
		return nil, err
	}
	for _, d := range dests {
		if d.Key == identity {
			continue
		}
		src, args, err := hc.source(ctx, d.Key)
		if err != nil {
			return nil, err
		}
		if err := read(cols+src+` AND target = ? AND event <> ? ORDER BY id DESC LIMIT ?`, append(args, d.Target, EventAccepted, maxHistory)...); err != nil {
			return nil, err
		}
	}
	// Oldest first; the rows one commit wrote (a trigger and its resolve
	// group-committed together, an expiry and a re-fire) in the order
	// they were written.
	slices.SortFunc(rs, func(a, b row) int {
		if c := a.e.At.Compare(b.e.At); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	out := make([]HistoryEvent, len(rs))
	for i, r := range rs {
		out[i] = r.e
	}
	if len(out) > maxHistory {
		out = out[len(out)-maxHistory:]
	}
	return out, nil
}

// historyConds hands out, for one API call, the rows of alertfan_history
// that belong to an identity (or to a group key), reading each identity's
// aid once however many destinations ask.
type historyConds struct {
	s *Store
	m map[string]historyCond
}

type historyCond struct {
	src  string
	args []any
}

func (s *Store) historyConds() *historyConds {
	return &historyConds{s: s, m: map[string]historyCond{}}
}

// sqlHistoryUnlinked selects the rows kept without an alert row (aid 0):
// group keys, alerts whose row was pruned (migration 37), and every row on
// PostgreSQL. On SQLite it names the partial index on the identity: the
// planner otherwise takes the (aid, id) index, which gives ORDER BY id for
// free, and walks every aid-0 row of every identity (280 ms against 0.3 ms
// for one alert among 500,000 unlinked rows).
func (d dialect) sqlHistoryUnlinked() string {
	return d.pick(`alertfan_history WHERE (aid = 0 AND identity = ?)`,
		`alertfan_history INDEXED BY alertfan_history_identity WHERE (aid = 0 AND identity = ?)`)
}

// source is "alertfan_history … WHERE <the identity's rows>", to be
// followed by more conditions: on SQLite by aid, the rowid of the alert
// row (see migration 22), and by identity for rows kept without one.
// identity is checked on both, so a rowid SQLite hands out again after the
// alert row was pruned never mixes two alerts. The args are a fresh slice
// the caller may append to.
func (hc *historyConds) source(ctx context.Context, identity string) (string, []any, error) {
	c, ok := hc.m[identity]
	if !ok {
		c = historyCond{hc.s.dialect.sqlHistoryUnlinked(), []any{identity}}
		if hc.s.dialect == dialectSQLite {
			var aid int64
			err := hc.s.rdb.QueryRowContext(ctx, sqlAlertRowid, identity).Scan(&aid)
			switch {
			case err == nil:
				c = historyCond{`alertfan_history WHERE ((aid = ? AND identity = ?) OR (aid = 0 AND identity = ?))`, []any{aid, identity, identity}}
			case !errors.Is(err, sql.ErrNoRows):
				return "", nil, fmt.Errorf("queue: read alert: %w", err)
			}
		}
		hc.m[identity] = c
	}
	return c.src, slices.Clone(c.args), nil
}

func encodeCursor(seen int64, identity string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(seen, 10) + ":" + identity))
}

// decodeCursor reads a page cursor; "" starts from the newest.
func decodeCursor(c string) (int64, string, error) {
	if c == "" {
		return 1<<63 - 1, "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", ErrBadCursor
	}
	at, ident, ok := strings.Cut(string(b), ":")
	n, err := strconv.ParseInt(at, 10, 64)
	if !ok || err != nil {
		return 0, "", ErrBadCursor
	}
	return n, ident, nil
}

// PendingByTarget counts, per target, the keys with a delivery owed.
func (s *Store) PendingByTarget(ctx context.Context) (map[string]int, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT target, COUNT(*) FROM alertfan_state WHERE pending = 1 GROUP BY target`)
	if err != nil {
		return nil, fmt.Errorf("queue: count pending: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var t string
		var n int
		if err := rows.Scan(&t, &n); err != nil {
			return nil, err
		}
		out[t] = n
	}
	return out, rows.Err()
}
