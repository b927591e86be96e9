package backlog

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	// A date custom field's bounds are days in the space's time zone; the
	// zone database must be there on a minimal image too.
	_ "time/tzdata"

	"github.com/prometheus/alertmanager/template"

	"github.com/alertfan/alertfan/sinks"
)

// Issue record states.
const (
	StateCreating = "creating" // create was called; outcome not yet recorded
	StateOpen     = "open"
	StateResolved = "resolved" // alert resolved, issue left open (on_resolved comment|none)
	StateClosed   = "closed"
	// StatePersonClosed: a person closed (or deleted) the issue while
	// alertfan held it open. A new firing opens a new issue, unless the
	// person's resolution is in skip_reopen_resolutions.
	StatePersonClosed = "person_closed"
)

// IssueRecord is what alertfan remembers about an identity's issue.
type IssueRecord struct {
	IssueID  int64
	IssueKey string
	State    string
	// Gen counts issues made for the identity; it is part of the marker so
	// that a new issue after reopen_within is not mistaken for the old one.
	Gen int64
	// ClosedAt is when alertfan closed the issue (StateClosed, for
	// reopen_within), or, in StatePersonClosed, the startsAt of the
	// occurrence that was firing when the person's close was seen: a later
	// one is a new occurrence.
	ClosedAt time.Time
	// ContentHash is the hash of the description last written, so a
	// description update is sent only when it changes (group mode,
	// update_description) and never over a person's edit.
	ContentHash string
	// RecordedAt is when the record was last written (set by the store;
	// PutIssue ignores it): after each call on the issue alertfan made and
	// recorded, so a comment older than it is not one of a lost attempt's.
	RecordedAt time.Time
}

// IssueStore keeps identity → issue durably. The queue serializes work per
// identity, so calls for one identity never overlap.
type IssueStore interface {
	GetIssue(ctx context.Context, target, identity string) (IssueRecord, bool, error)
	PutIssue(ctx context.Context, target, identity string, rec IssueRecord) error
}

// Deps are what a Notifier needs besides its config.
type Deps struct {
	ID        string
	Template  *template.Template
	Limiters  *sinks.Limiters
	Transport http.RoundTripper
	Logger    *slog.Logger
	Issues    IssueStore
	Metrics   *Metrics
	Receiver  string
	// Offline skips name resolution at build time (check-config without
	// --online must not call Backlog).
	Offline bool
	// ClosedIssues is how long the store keeps the record of a closed
	// issue (storage.retention.closed_issues); 0 when unknown. A heal
	// tells by it an issue closed by a person since its create from one
	// of an earlier series whose record was pruned (heal).
	ClosedIssues time.Duration
}

const (
	maxLimiterWait = 10 * time.Second
	resolveTimeout = 15 * time.Second
)

// Notifier keeps one Backlog issue per alert identity.
type Notifier struct {
	conf   *Config
	d      Deps
	client *Client
	// limiter paces the writes of the API key's Backlog user: keyed by the
	// space and the key until name resolution learns the user, then by
	// the space and the user (Backlog counts per user: see userLimiter).
	limiter atomic.Pointer[sinks.Limiter]
	// dest names the space, project and mode; issue markers use it, so
	// they survive a rename, a reordering of the config or a new API key.
	dest string

	mu  sync.Mutex
	ids *resolved
	// reresolvedAt is when a 400 last made the names be resolved again.
	reresolvedAt time.Time
}

// resolved holds names turned into ids.
type resolved struct {
	projectID   int64
	rule        string
	issueTypeID int64
	// closeStatus is nil unless on_resolved is close.
	closeStatus  *int64
	reopenStatus int64
	// resolution is nil when none is configured: "Fixed" is id 0.
	resolution      *int64
	skipResolutions map[int64]bool
	priorities      *nameTable
	defaultPriority int64
	fields          map[string]*field
	users           map[string]int64
	// loc is the space's time zone when a date field's range needs it.
	loc *time.Location
}

// ConfigError is a config that the Backlog API shows cannot work: a name
// that does not exist, a key it refuses.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// New builds a Notifier and resolves its names. A name that does not exist
// is an error listing the valid ones; when Backlog cannot be reached the
// names are resolved on first delivery instead, so a Backlog outage does
// not stop alertfan from starting and paging through PagerDuty.
func New(ctx context.Context, conf *Config, d Deps) (*Notifier, error) {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Limiters == nil {
		d.Limiters = sinks.NewLimiters()
	}
	if d.Receiver == "" {
		if i := strings.Index(d.ID, "/"); i > 0 {
			d.Receiver = d.ID[:i]
		}
	}
	observe := func(endpoint string, code int) {
		if d.Metrics != nil {
			d.Metrics.requests.WithLabelValues(endpoint, strconv.Itoa(code)).Inc()
		}
	}
	n := &Notifier{
		conf:   conf,
		d:      d,
		client: NewClient(conf.APIURL, string(conf.APIKey), d.Transport, time.Duration(conf.Timeout), observe),
		// The space and project (not the API key, which a rotation changes).
		dest: sinks.DestinationID("backlog", strings.TrimRight(conf.APIURL, "/"), conf.Project, conf.Mode),
	}
	n.limiter.Store(d.Limiters.Get("backlog", conf.APIURL+"\x00"+string(conf.APIKey), conf.RateLimitPerMinute))
	// A write that spent the user's last call of the window (other tools
	// of the same user count too) holds the limiter until the window
	// resets, as a 429 would, without spending a call on the 429.
	n.client.exhausted = func(wait time.Duration) { n.lim().Hold(wait) }
	if err := n.checkTemplates(); err != nil {
		return nil, err
	}
	if d.Offline {
		return n, nil
	}
	rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	if _, err := n.resolve(rctx); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			return nil, err
		}
		d.Logger.Warn("Could not resolve Backlog names now; will retry on first delivery", "err", err)
	}
	return n, nil
}

// Check resolves every name now and fails on any problem; for
// `check-config --online`.
func (n *Notifier) Check(ctx context.Context) error {
	_, err := n.resolve(ctx)
	return err
}

// Admit says whether a delivery could start within the rate limiter's
// patience; otherwise how long to park it. It lets the queue skip parked
// work before loading or decoding anything.
func (n *Notifier) Admit(class int) time.Duration { return n.lim().Admit(class, maxLimiterWait) }

// Hold keeps every call of the key back for d (the target answered 429).
func (n *Notifier) Hold(d time.Duration) { n.lim().Hold(d) }

// HeldUntil is when the API key's hold by a 429 ends (zero: none).
func (n *Notifier) HeldUntil() time.Time { return n.lim().HeldUntil() }

// RateLimit is the space's limiter state, for the status API.
func (n *Notifier) RateLimit() sinks.LimiterState { return n.lim().State(time.Now()) }

// Pace waits for a call's turn under the rate limit (the queue's last look
// at the alert's state comes after it); a turn further off than maxWait is
// an error carrying the wait.
func (n *Notifier) Pace(ctx context.Context, maxWait time.Duration) (time.Duration, error) {
	return n.lim().Wait(ctx, maxWait)
}

// Schedule books calls for keys deliveries and says how long the job
// carrying them should wait before it runs.
func (n *Notifier) Schedule(keys, class int) time.Duration {
	return n.lim().Schedule(keys, class, maxLimiterWait)
}

// Unschedule gives back keys deliveries Schedule booked that need no call.
func (n *Notifier) Unschedule(keys, class int) { n.lim().Release(keys, class) }

func (n *Notifier) lim() *sinks.Limiter { return n.limiter.Load() }

// userLimiter keys the limiter by the space and the API key's user.
// Backlog counts its limits per user, not per API key ("If a user creates
// API key 1 and API key 2, they will be subject to the same limitations",
// https://developer.nulab.com/docs/backlog/rate-limit/): configs with two
// keys of one user (a key per project, a rotation) share one budget, the
// lowest rate_limit_per_minute of them. The key is the same in every
// replica, so the PostgreSQL-shared budget (sinks.Budget) is the user's.
func (n *Notifier) userLimiter(u *User) {
	space := strings.ToLower(strings.TrimRight(n.conf.APIURL, "/"))
	key := "user\x00" + space + "\x00" + strconv.FormatInt(u.ID, 10)
	next := n.d.Limiters.Get("backlog", key, n.conf.RateLimitPerMinute)
	// Calls already waiting for the key's limiter (names resolved on a
	// delivery, after start) go first: the user's limiter starts after.
	n.limiter.Swap(next).HandOver(next)
}

// Grouped reports whether work is keyed by Alertmanager group (mode: group).
func (n *Notifier) Grouped() bool { return n.conf.Mode == ModeGroup }

func (n *Notifier) checkTemplates() error {
	sample := sinks.SampleNotification()
	for _, rule := range []string{RuleMarkdown, RuleBacklog} {
		data := newData(sample, rule)
		for field, text := range n.templateFields() {
			if _, err := sinks.ExecuteText(n.d.Template, text, data); err != nil {
				return fmt.Errorf("%s: template %q: %w", field, text, err)
			}
		}
	}
	return nil
}

func (n *Notifier) templateFields() map[string]string {
	f := map[string]string{
		"summary":          n.conf.Summary,
		"description":      n.conf.Description,
		"priority":         n.conf.Priority,
		"assignee":         n.conf.Assignee,
		"repeat_comment":   n.conf.RepeatComment,
		"ack_comment":      n.conf.AckComment,
		"resolved_comment": n.conf.ResolvedComment,
		"refire_comment":   n.conf.RefireComment,
	}
	for k, v := range n.conf.CustomFields {
		f["custom_fields."+k] = v
	}
	return f
}

// resolve turns names into ids once; concurrent deliveries share the result.
// Everything that could only fail alert by alert is checked here instead:
// each constant a priority, assignee or custom field template can render,
// custom fields the issue type requires.
func (n *Notifier) resolve(ctx context.Context) (*resolved, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ids != nil {
		return n.ids, nil
	}
	c, conf := n.client, n.conf
	// A refusal is a config error, and so is a key Backlog refuses
	// (unauthorized is retryable at run time, where it holds the target's
	// work, but at start and on reload it is the config's fault).
	asConfig := func(what string, err error) error {
		e := sinks.AsError(err)
		if !e.Retryable || e.Reason == sinks.ReasonUnauthorized {
			return &ConfigError{fmt.Errorf("%s: %w", what, err)}
		}
		return err
	}
	proj, err := c.GetProject(ctx, conf.Project)
	if err != nil {
		return nil, asConfig(fmt.Sprintf("project %q", conf.Project), err)
	}
	r := &resolved{projectID: proj.ID, rule: proj.TextFormattingRule, fields: map[string]*field{}, users: map[string]int64{}, skipResolutions: map[int64]bool{}}
	if r.rule != RuleBacklog {
		r.rule = RuleMarkdown
	}
	types, err := c.IssueTypes(ctx, conf.Project)
	if err != nil {
		return nil, asConfig("issue types", err)
	}
	if r.issueTypeID, err = newNameTable("issue_type", types, nil).must(conf.IssueType); err != nil {
		return nil, err
	}
	statuses, err := c.Statuses(ctx, conf.Project)
	if err != nil {
		return nil, asConfig("statuses", err)
	}
	st := newNameTable("close_status", statuses, builtinStatuses)
	if conf.OnResolved == OnResolvedClose {
		id, err := st.must(conf.CloseStatus)
		if err != nil {
			return nil, err
		}
		r.closeStatus = &id
	}
	st.field = "reopen_status"
	if r.reopenStatus, err = st.must(conf.ReopenStatus); err != nil {
		return nil, err
	}
	prios, err := c.Priorities(ctx)
	if err != nil {
		return nil, asConfig("priorities", err)
	}
	r.priorities = newNameTable("priority", prios, builtinPriorities)
	for _, v := range constantOutputs(conf.Priority) {
		if _, err := r.priorities.must(v); err != nil {
			return nil, err
		}
	}
	r.priorities.field = "default_priority"
	if r.defaultPriority, err = r.priorities.must(conf.DefaultPriority); err != nil {
		return nil, err
	}
	r.priorities.field = "priority"
	if conf.Resolution != "" || len(conf.SkipReopenResolutions) > 0 {
		res, err := c.Resolutions(ctx)
		if err != nil {
			return nil, asConfig("resolutions", err)
		}
		rt := newNameTable("resolution", res, builtinResolutions)
		if conf.Resolution != "" {
			id, err := rt.must(conf.Resolution)
			if err != nil {
				return nil, err
			}
			r.resolution = &id
		}
		rt.field = "skip_reopen_resolutions"
		for _, name := range conf.SkipReopenResolutions {
			id, err := rt.must(name)
			if err != nil {
				return nil, err
			}
			r.skipResolutions[id] = true
		}
	}
	cfs, err := c.CustomFields(ctx, conf.Project)
	if err != nil {
		return nil, asConfig("custom fields", err)
	}
	if r.loc, err = n.spaceZone(ctx, conf, cfs); err != nil {
		return nil, asConfig("space", err)
	}
	if err := r.resolveFields(conf, cfs); err != nil {
		return nil, err
	}
	if conf.Assignee != "" {
		users, err := c.Users(ctx, conf.Project)
		if err != nil {
			return nil, asConfig("project users", err)
		}
		var names []string
		for _, u := range users {
			r.users[u.UserID] = u.ID
			r.users[u.Name] = u.ID
			r.users[strconv.FormatInt(u.ID, 10)] = u.ID
			names = append(names, strconv.Quote(u.UserID))
		}
		sort.Strings(names)
		for _, v := range constantOutputs(conf.Assignee) {
			if _, ok := r.users[v]; !ok {
				return nil, &ConfigError{fmt.Errorf("assignee: %q is not a member of project %s; members: %s", v, conf.Project, strings.Join(names, ", "))}
			}
		}
	}
	me, err := c.Myself(ctx)
	if err != nil {
		return nil, asConfig("the API key's user", err)
	}
	if err := checkRole(conf, me); err != nil {
		return nil, err
	}
	n.userLimiter(me)
	n.ids = r
	return r, nil
}

// checkRole refuses a config whose API key's user may not do what the
// config asks, which Backlog would otherwise refuse issue by issue (403,
// UnauthorizedOperationError): a Viewer adds no issue; a Reporter adds
// issues and comments but edits no issue, and closes, reopens and
// description updates are edits (update-issue). See the Role* constants.
func checkRole(conf *Config, u *User) error {
	switch u.RoleType {
	case RoleViewer, RoleGuestViewer:
		return &ConfigError{fmt.Errorf("api_key: user %q is a Viewer in Backlog, which may not add issues; use the key of a Normal User", u.UserID)}
	case RoleReporter, RoleGuestReporter:
		// Comments go by add-comment, which a Reporter may call (see
		// work.update); closing and reopening change the status.
		var edits []string
		if conf.OnResolved == OnResolvedClose {
			edits = append(edits, "on_resolved: close")
		}
		if conf.Mode == ModeGroup {
			edits = append(edits, "mode: group (the description follows the group)")
		}
		if conf.UpdateDescription {
			edits = append(edits, "update_description: true")
		}
		if len(edits) > 0 {
			return &ConfigError{fmt.Errorf("api_key: user %q is a Reporter in Backlog, which may add issues and comments but not edit issues (status, description), and this config edits them: %s; use the key of a Normal User, or set on_resolved: comment or none",
				u.UserID, strings.Join(edits, ", "))}
		}
	}
	return nil
}

// spaceZone reads the space's time zone (get-space's timezone) when a
// configured date custom field has a min or max, whose days are days
// there; otherwise it makes no call and returns nil. An unknown zone name
// is nil too: the range is then read as it could be anywhere (dayRange).
func (n *Notifier) spaceZone(ctx context.Context, conf *Config, cfs []CustomField) (*time.Location, error) {
	need := false
	for _, cf := range cfs {
		_, used := conf.CustomFields[cf.Name]
		need = need || (used && cf.TypeID == FieldDate && (cf.Min.Time != nil || cf.Max.Time != nil))
	}
	if !need {
		return nil, nil
	}
	sp, err := n.client.GetSpace(ctx)
	if err != nil {
		return nil, err
	}
	loc, err := time.LoadLocation(sp.Timezone)
	if err != nil || sp.Timezone == "" {
		n.d.Logger.Warn("The space's time zone is unknown; a date custom field's range is checked as if the space could be in any zone", "timezone", sp.Timezone)
		return nil, nil
	}
	return loc, nil
}

func (r *resolved) resolveFields(conf *Config, cfs []CustomField) error {
	applies := func(f CustomField) bool {
		return len(f.ApplicableIssueTypes) == 0 || slices.Contains(f.ApplicableIssueTypes, r.issueTypeID)
	}
	byName := map[string]CustomField{}
	var names []string
	for _, f := range cfs {
		// Same-named fields of other issue types: the configured type's wins.
		if prev, seen := byName[f.Name]; !seen || (!applies(prev) && applies(f)) {
			byName[f.Name] = f
		}
		names = append(names, strconv.Quote(f.Name))
	}
	sort.Strings(names)
	for name, text := range conf.CustomFields {
		cf, ok := byName[name]
		if !ok {
			return &ConfigError{fmt.Errorf("custom_fields: %q does not exist in Backlog; valid names: %s", name, strings.Join(names, ", "))}
		}
		if !applies(cf) {
			return &ConfigError{fmt.Errorf("custom_fields.%s: field %q does not apply to issue type %q in Backlog (it applies to issue type ids %v); Backlog would ignore or refuse it",
				name, cf.Name, conf.IssueType, cf.ApplicableIssueTypes)}
		}
		f := &field{CustomField: cf, conf: name, loc: r.loc}
		if _, known := fieldTypeNames[cf.TypeID]; !known {
			return &ConfigError{fmt.Errorf("custom_fields.%s: field %q has type %d, which alertfan does not know", name, cf.Name, cf.TypeID)}
		}
		f.required = cf.Required
		for _, v := range constantOutputs(text) {
			fv, err := f.convert(v)
			if err != nil {
				return &ConfigError{err}
			}
			if f.required && f.orElse.empty() {
				f.orElse = fv
			}
		}
		if f.required && f.orElse.empty() {
			// Backlog refuses a create without a required field, and
			// a value the field does not take: alert by alert, as
			// dead letters, unless there is a value to fall back on.
			return &ConfigError{fmt.Errorf("custom_fields.%s: issue type %q requires field %q, and its template has no constant value to send when an alert renders it empty or with a value the field does not take (Backlog would refuse that alert's issue); give it a constant or an `or` default, as in '{{ or .CommonLabels.env \"prod\" }}'%s",
				name, conf.IssueType, cf.Name, itemsHint(f))}
		}
		r.fields[name] = f
	}
	// A required field that is not configured makes every create fail.
	var missing []string
	for _, cf := range cfs {
		if !cf.Required || (len(cf.ApplicableIssueTypes) > 0 && !slices.Contains(cf.ApplicableIssueTypes, r.issueTypeID)) {
			continue
		}
		if _, ok := conf.CustomFields[cf.Name]; !ok {
			missing = append(missing, strconv.Quote(cf.Name))
		}
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return &ConfigError{fmt.Errorf("custom_fields: %s is required for issue type %q in Backlog; set it", missing[0], conf.IssueType)}
	}
	return &ConfigError{fmt.Errorf("custom_fields: %s are required for issue type %q in Backlog; set them", strings.Join(missing, ", "), conf.IssueType)}
}

// itemsHint names a list field's items for an error, "" for other fields.
func itemsHint(f *field) string {
	if len(f.Items) == 0 {
		return ""
	}
	return "; its items: " + f.items()
}

// Marker is the token put in every issue's description so that a create
// whose outcome was lost (crash, timeout) is found by search, not repeated.
func Marker(destination, identity string, gen int64) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%d", destination, identity, gen)))
	return "alertfan-" + hex.EncodeToString(sum[:12])
}

// Deliver brings the key's issue in line with the notification's state.
// It reads the issue before changing one it already has, so that what a
// person did to it wins (see ARCHITECTURE.md, Backlog state machine).
func (n *Notifier) Deliver(ctx context.Context, notif *sinks.Notification) error {
	if len(notif.Alerts) == 0 || (n.conf.Mode == ModeAlert && len(notif.Alerts) != 1) {
		return sinks.Permanent(sinks.ReasonConfig, fmt.Errorf("backlog in %s mode got %d alerts", n.conf.Mode, len(notif.Alerts)))
	}
	if len(notif.Alerts) == 1 && notif.Alerts[0].Action == sinks.ActionChange {
		// A PagerDuty change event has no issue to belong to.
		n.d.Logger.Debug("Ignoring a change event; Backlog issues follow alerts")
		return nil
	}
	ids, err := n.resolve(ctx)
	if err != nil {
		var ce *ConfigError
		var se *sinks.Error
		if errors.As(err, &se) && se.Reason == sinks.ReasonUnauthorized {
			// The key stopped working while alertfan ran: hold the work
			// (the queue takes the target as down) rather than
			// dead-letter it, as a target that is not ready at start.
			return &sinks.Error{Reason: se.Reason, Retryable: true, StatusCode: se.StatusCode, Err: err}
		}
		if errors.As(err, &ce) {
			// Backlog was unreachable at start (or its names changed
			// since): a config error found now holds the target's work,
			// as at start, until a reload fixes the config, rather than
			// dead-lettering alert by alert.
			return &sinks.Error{Reason: sinks.ReasonMisconfigured, Retryable: true, Err: err}
		}
		return err
	}
	key := notif.Alerts[0].Identity
	if n.conf.Mode == ModeGroup {
		key = notif.Key
	}
	rec, found, err := n.d.Issues.GetIssue(ctx, n.storeID(ctx), key)
	if err != nil {
		return sinks.Retryable(sinks.ReasonOther, 0, fmt.Errorf("read issue record: %w", err))
	}
	data := newData(notif, ids.rule)
	if found && rec.State == StateCreating {
		if rec, err = n.heal(ctx, ids, key, rec, data.FiringSince); err != nil {
			return err
		}
	}
	w := &work{n: n, ids: ids, key: key, rec: rec, found: found, notif: notif, data: data}
	err = w.apply(ctx)
	if call := sinks.CallFrom(ctx); w.rec.IssueKey != "" {
		call.Ref, call.URL = w.rec.IssueKey, n.Link(w.rec.IssueKey)
	}
	return n.recheckRoleOn403(ctx, n.reresolveOn400(err))
}

// recheckRoleOn403 looks again at the key's user when Backlog refuses one
// issue's change (403 UnauthorizedOperationError): a user demoted while
// alertfan runs (a Normal User made a Reporter) would otherwise
// dead-letter every close, alert by alert. When the role can no longer do
// the config's work (checkRole), the target's work is held as
// misconfigured; otherwise the refusal is that issue's own and stays
// permanent.
func (n *Notifier) recheckRoleOn403(ctx context.Context, err error) error {
	var ae *APIError
	if err == nil || !errors.As(err, &ae) || ae.StatusCode != http.StatusForbidden || ae.TargetWide() {
		return err
	}
	me, merr := n.client.Myself(ctx)
	if merr != nil {
		return err
	}
	if rerr := checkRole(n.conf, me); rerr != nil {
		n.d.Logger.Warn("Backlog refused a change, and the API key's user can no longer do this config's work; holding the target's deliveries until the role or the config is fixed", "err", rerr)
		return &sinks.Error{Reason: sinks.ReasonMisconfigured, Retryable: true, Err: fmt.Errorf("%w (after %s)", rerr, err.Error())}
	}
	return err
}

// Link is the web page of an issue: {api_url}/view/{issueKey} (the
// space's URL is the API's; https://support.nulab.com/hc/en-us/articles/8757779568409).
func (n *Notifier) Link(issueKey string) string {
	base := strings.TrimSuffix(n.conf.APIURL, "/")
	if u, err := url.Parse(base); err == nil && u.User != nil {
		u.User = nil // credentials never go into a link
		base = u.String()
	}
	return base + "/view/" + url.PathEscape(issueKey)
}

// Forget drops the space's names resolved so far, so that the next
// delivery reads them again: an operator who retries dead letters has
// usually just fixed the space (added a list item or a member, made a
// field optional), and names read before the fix would refuse the retry
// the same way for up to a minute (a fresh helper).
func (n *Notifier) Forget() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ids, n.reresolvedAt = nil, time.Time{}
}

// reresolveOn400 handles a 400 from Backlog: names resolved at start may
// no longer hold (an administrator deleted a list item or an issue type,
// made a field required, removed a member). The names are resolved again
// and the delivery retried once, so the documented fallbacks apply to the
// space as it is now; a second 400 within a minute is permanent.
func (n *Notifier) reresolveOn400(err error) error {
	var ae *APIError
	if err == nil || !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if time.Since(n.reresolvedAt) < time.Minute {
		return err
	}
	n.ids, n.reresolvedAt = nil, time.Now()
	n.d.Logger.Warn("Backlog refused a request; resolving the space's names again before one more try", "err", err)
	return sinks.Retryable(sinks.ReasonConfig, 0, err)
}

// apply makes the issue follow the notification.
func (w *work) apply(ctx context.Context) error {
	rec, found, notif := w.rec, w.found, w.notif
	switch {
	case notif.Status() == sinks.StatusResolved:
		return w.resolved(ctx)
	case (!found || rec.State == "") && len(notif.Alerts) == 1 && notif.Alerts[0].Action == sinks.ActionAcknowledge:
		// An acknowledge of an alert this target never opened an issue
		// for (a sender's acknowledge before any trigger): there is
		// nothing to acknowledge, as PagerDuty ignores it; an issue
		// opened from it would never close (a fresh helper). An
		// acknowledge after a trigger this target never got comes after
		// that trigger, which opens the issue (the queue's plan).
		return nil
	case !found || rec.State == "" || rec.State == StateCreating:
		return w.create(ctx)
	case rec.State == StateOpen:
		return w.repeat(ctx)
	case rec.State == StateResolved:
		return w.refire(ctx, false)
	case rec.State == StatePersonClosed:
		return w.afterPersonClosed(ctx)
	default: // closed by alertfan
		if w.n.conf.ReopenWithin > 0 && time.Since(rec.ClosedAt) <= time.Duration(w.n.conf.ReopenWithin) {
			return w.refire(ctx, true)
		}
		return w.createNew(ctx)
	}
}

// A heal reads, besides its keyword search, the project's newest issues a
// page of healPage (get-issue-list's largest) at a time, back to
// healSkew before the create was recorded as under way, at most
// healPages pages. One page was not enough: with more than 100 issues
// created in the project between a create whose answer was lost and its
// retry (a high rate limit, other writers, a long back-off) and a search
// index that lagged, the retry opened a second issue (a fresh helper:
// 5 of 5 such creates). healSkew covers a clock of Backlog's behind ours.
const (
	healPage  = 100
	healPages = 20
	healSkew  = 10 * time.Minute
)

// heal settles a create whose outcome was not recorded: if an issue with
// the marker exists it is adopted, else the record is cleared for a create.
//
// firingSince is the notification's newest firing occurrence (Data's
// FiringSince): an issue a person closed is recorded against it.
func (n *Notifier) heal(ctx context.Context, ids *resolved, key string, rec IssueRecord, firingSince time.Time) (IssueRecord, error) {
	marker := Marker(n.dest, key, rec.Gen)
	issues, err := n.client.SearchIssues(ctx, ids.projectID, marker)
	if err != nil {
		return rec, err
	}
	// A keyword search reads Backlog's search index, which may not have
	// the issue of a create that timed out a moment ago: the project's
	// issues created since the create began are read too, so that a retry
	// after such a timeout adopts the issue instead of opening a second one.
	var since time.Time
	if !rec.RecordedAt.IsZero() {
		since = rec.RecordedAt.Add(-healSkew)
	}
	recent, err := n.issuesSince(ctx, ids.projectID, since)
	if err != nil {
		return rec, err
	}
	for _, is := range append(issues, recent...) {
		if !strings.Contains(is.Description, marker) {
			continue
		}
		state, closedAt := StateOpen, rec.ClosedAt
		msg := "Found the issue of an unrecorded create; adopting it instead of creating another"
		if is.Status.ID == statusClosed || (ids.closeStatus != nil && is.Status.ID == *ids.closeStatus) {
			// A closed issue with this marker is either an earlier
			// series' (its record was pruned, closed_issues after its
			// last write, and the generations started over: a create
			// makes an open issue) or this create's, closed by a person
			// before its outcome was recorded. An issue created less than
			// closed_issues ago cannot be the first: people win, and the
			// same occurrence opens nothing more.
			if created := is.CreatedAt(); n.d.ClosedIssues <= 0 || created.IsZero() || time.Since(created) >= n.d.ClosedIssues {
				continue
			}
			state, closedAt = StatePersonClosed, firingSince
			msg = "Found the issue of an unrecorded create, closed by a person since; adopting it and opening no other for this occurrence"
		}
		rec.IssueID, rec.IssueKey, rec.State, rec.ClosedAt = is.ID, is.IssueKey, state, closedAt
		if err := n.put(ctx, key, rec); err != nil {
			return rec, err
		}
		n.count(ctx, "adopted")
		n.d.Logger.Info(msg, "issue", is.IssueKey)
		return rec, nil
	}
	// Not found: the create never happened (or happened more than
	// healPages pages of issues ago and is not searchable yet). The next
	// create reuses this generation's marker, so a later heal finds either.
	return rec, nil
}

// issuesSince reads a project's newest issues, newest first, until a page
// reaches one created before since, the project's first issue, or
// healPages pages; one page when since is zero (a record from before
// RecordedAt was kept). Issues created meanwhile shift the pages: an
// issue may be read twice, none is skipped.
func (n *Notifier) issuesSince(ctx context.Context, projectID int64, since time.Time) ([]Issue, error) {
	var out []Issue
	for page := 0; page < healPages; page++ {
		issues, err := n.client.RecentIssues(ctx, projectID, page*healPage, healPage)
		if err != nil {
			return nil, err
		}
		out = append(out, issues...)
		if len(issues) < healPage || since.IsZero() || !issues[len(issues)-1].CreatedAt().After(since) {
			break
		}
	}
	return out, nil
}

// storeID is the target the issue records are kept under: the queue's
// (a destination retired by a reload keeps its own), else the config's.
func (n *Notifier) storeID(ctx context.Context) string {
	if id, ok := sinks.TargetFrom(ctx); ok {
		return id
	}
	return n.d.ID
}

// Destination names the Backlog space, project and mode this config writes
// to (sinks.DestinationID).
func (n *Notifier) Destination() string { return n.dest }

func (n *Notifier) put(ctx context.Context, key string, rec IssueRecord) error {
	if err := n.d.Issues.PutIssue(ctx, n.storeID(ctx), key, rec); err != nil {
		// Most puts follow a call Backlog took: its retry must look
		// before posting a comment again (see update).
		return sinks.Retryable(sinks.ReasonUnrecorded, 0, fmt.Errorf("record issue: %w", err))
	}
	return nil
}

// Settle is how long a retry of a call whose answer was lost (cut by
// timeout, or by the queue's job_timeout) waits before it looks for that
// call's issue or comment: the request may still be served after alertfan
// gave up on it, and found too early it is made twice. It is the call's
// timeout (default 10 s), by which a request Backlog was still working on
// has normally landed.
func (n *Notifier) Settle() time.Duration { return time.Duration(n.conf.Timeout) }

func (n *Notifier) wait(ctx context.Context) error {
	_, err := n.lim().Wait(ctx, maxLimiterWait)
	return err
}

func (n *Notifier) count(ctx context.Context, action string) {
	// The delivery history names the step as the metric does.
	sinks.CallFrom(ctx).Action = action
	if n.d.Metrics != nil {
		n.d.Metrics.issues.WithLabelValues(n.d.Receiver, action).Inc()
	}
}

// fallback logs (msg) and counts a field that took its fallback.
func (n *Notifier) fallback(msg, field string, err error) {
	n.d.Logger.Warn(msg, "field", field, "err", err)
	if n.d.Metrics != nil {
		n.d.Metrics.fallbacks.WithLabelValues(n.d.Receiver, field).Inc()
	}
}

// work is one delivery.
type work struct {
	found bool // rec was read from the store
	n     *Notifier
	ids   *resolved
	key   string
	rec   IssueRecord
	notif *sinks.Notification
	data  *Data
	// quiet is set for a preview (Render): nothing is counted or logged.
	quiet bool
}

// render executes a template whose output Backlog renders in the project's
// notation (description, comments): escaped values are escaped for it.
func (w *work) render(field, text string) (string, error) {
	return w.exec(field, text, w.ids.rule)
}

// renderPlain executes a template whose output Backlog shows as typed
// (summary, priority, assignee, custom fields): escaped values stay as
// they are.
func (w *work) renderPlain(field, text string) (string, error) {
	return w.exec(field, text, RulePlain)
}

// exec renders one field. A template that fails for this alert (the
// start-up check, checkTemplates, renders only a sample alert) gives the
// field its default (fieldDefault), counted and logged: one field's
// template must not cost the ticket. An error is left only when the
// default fails too.
func (w *work) exec(field, text, rule string) (string, error) {
	if text == "" {
		return "", nil
	}
	s, err := sinks.ExecuteText(w.n.d.Template, text, w.data)
	if err != nil {
		def := fieldDefault(field)
		w.templateFallback(field, err)
		if def == "" || def == text {
			return "", nil
		}
		if s, err = sinks.ExecuteText(w.n.d.Template, def, w.data); err != nil {
			return "", fmt.Errorf("%s: the default template failed too: %w", field, err)
		}
	}
	return strings.TrimSpace(readable(applyRule(s, rule))), nil
}

// fieldDefault is the text a field takes when its template fails for an
// alert: DefaultConfig's for the summary, description and comments. The
// others fall back to nothing: an empty priority takes default_priority,
// an empty assignee leaves the issue unassigned, an empty custom field is
// not sent.
func fieldDefault(field string) string {
	d := DefaultConfig
	return map[string]string{
		"summary": d.Summary, "description": d.Description,
		"repeat_comment": d.RepeatComment, "ack_comment": d.AckComment,
		"resolved_comment": d.ResolvedComment, "refire_comment": d.RefireComment,
	}[field]
}

// templateFallback reports a field whose template failed, or rendered
// blank where Backlog needs a value, except in a preview (quiet).
func (w *work) templateFallback(field string, err error) {
	if !w.quiet {
		w.n.fallback("A template failed or rendered blank for an alert; the field takes its default", field, fmt.Errorf("key %s: %w", w.key, err))
	}
}

// description renders the description with the marker, cut to the limit,
// and its hash.
func (w *work) description(gen int64) (string, string, error) {
	d, err := w.render("description", w.n.conf.Description)
	if err != nil {
		return "", "", err
	}
	tail := "\n\n---\n" + Marker(w.n.dest, w.key, gen)
	d, _ = truncate(d, maxBody-len([]rune(tail)))
	return d + tail, hashBody(d), nil
}

// hashBody hashes a description without its marker, as written or as
// read back (line endings and surrounding space normalized).
func hashBody(s string) string {
	sum := sha256.Sum256([]byte(strings.TrimSpace(strings.ReplaceAll(s, "\r\n", "\n"))))
	return hex.EncodeToString(sum[:8])
}

// personEdited reports whether the issue's description is no longer the
// one alertfan wrote last: a person edited it, and alertfan leaves it be.
func (w *work) personEdited(is *Issue) bool {
	if w.rec.ContentHash == "" {
		return false // written before hashes were kept, or adopted
	}
	marker := Marker(w.n.dest, w.key, w.rec.Gen)
	i := strings.LastIndex(is.Description, marker)
	if i < 0 {
		return true
	}
	body := strings.TrimSuffix(strings.TrimSpace(is.Description[:i]), "---")
	return hashBody(body) != w.rec.ContentHash
}

// keepPersonEdits drops a description update from form when a person has
// edited the description since alertfan wrote it.
func (w *work) keepPersonEdits(form url.Values, is *Issue, hash *string) {
	if form.Get("description") == "" || !w.personEdited(is) {
		return
	}
	w.n.d.Logger.Info("The issue's description was edited by a person; not rewriting it", "issue", w.rec.IssueKey)
	form.Del("description")
	*hash = ""
}

func (w *work) comment(field, text string) (string, error) {
	c, err := w.render(field, text)
	if err != nil {
		return "", err
	}
	c, _ = truncate(c, maxComment)
	return c, nil
}

// createNew opens a new issue (a new generation) for the key.
func (w *work) createNew(ctx context.Context) error {
	w.rec = IssueRecord{Gen: w.rec.Gen}
	return w.create(ctx)
}

func (w *work) create(ctx context.Context) error {
	n := w.n
	rec := w.rec
	if rec.State != StateCreating {
		rec = IssueRecord{Gen: rec.Gen + 1, State: StateCreating}
	}
	form, hash, err := w.issueForm(rec.Gen)
	if err != nil {
		return sinks.Permanent(sinks.ReasonTemplate, err)
	}
	rec.ContentHash = hash
	if err := n.wait(ctx); err != nil {
		return err
	}
	// Recorded before the call: if the outcome is lost, the next attempt
	// searches for the marker instead of creating a second issue.
	if err := n.put(ctx, w.key, rec); err != nil {
		return err
	}
	is, err := n.client.CreateIssue(ctx, form)
	if err != nil {
		return err
	}
	rec.IssueID, rec.IssueKey, rec.State = is.ID, is.IssueKey, StateOpen
	if err := n.put(ctx, w.key, rec); err != nil {
		return err
	}
	w.rec = rec
	n.count(ctx, "created")
	n.d.Logger.Info("Created Backlog issue", "issue", is.IssueKey, "key", w.key)
	return nil
}

// issueForm is the create call's form: issueValues with names turned into
// ids. Render shows the same form (see render.go).
func (w *work) issueForm(gen int64) (url.Values, string, error) {
	v, err := w.issueValues(gen)
	if err != nil {
		return nil, "", err
	}
	n, ids := w.n, w.ids
	form := url.Values{
		"projectId":   {strconv.FormatInt(ids.projectID, 10)},
		"summary":     {v.summary},
		"issueTypeId": {strconv.FormatInt(ids.issueTypeID, 10)},
		"description": {v.description},
	}
	pid, ok := ids.priorities.lookup(v.priority)
	if !ok {
		w.fallback("priority", ids.priorities.errorFor(v.priority))
		pid = ids.defaultPriority
	}
	form.Set("priorityId", strconv.FormatInt(pid, 10))
	if v.assignee != "" {
		if uid, ok := ids.users[v.assignee]; ok {
			form.Set("assigneeId", strconv.FormatInt(uid, 10))
		} else {
			w.fallback("assignee", fmt.Errorf("assignee: %q is not a member of project %s; leaving the issue unassigned", v.assignee, n.conf.Project))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(v.custom)) {
		f := ids.fields[name]
		fv, err := f.convert(v.custom[name])
		switch {
		case err != nil && f.required:
			w.fallback("custom_fields."+name, fmt.Errorf("%w; the issue type requires the field: its template's default is sent", err))
			fv = f.orElse
		case err != nil:
			w.fallback("custom_fields."+name, fmt.Errorf("%w; the field is left empty", err))
			continue
		case f.required && fv.empty():
			w.fallback("custom_fields."+name, fmt.Errorf("custom_fields.%s: rendered empty; the issue type requires the field: its template's default is sent", name))
			fv = f.orElse
		}
		k := fmt.Sprintf("customField_%d", f.ID)
		for _, val := range fv.values {
			form.Add(k, val)
		}
		if fv.other != "" {
			form.Set(k+"_otherValue", fv.other)
		}
	}
	return form, v.hash, nil
}

// issueValues are a create call's fields as the templates render them,
// before names (priority, assignee, custom field values) become ids.
type issueValues struct {
	summary, description, hash string
	priority, assignee         string
	// custom maps a custom_fields key to its rendered value.
	custom map[string]string
}

func (w *work) issueValues(gen int64) (*issueValues, error) {
	n := w.n
	summary, err := w.renderPlain("summary", n.conf.Summary)
	if err != nil {
		return nil, err
	}
	summary, _ = truncate(oneLine(summary), maxSummary)
	if summary == "" {
		// Backlog refuses an issue without a summary: the default
		// template's, else the status and alert name.
		w.templateFallback("summary", errors.New("rendered blank"))
		if n.conf.Summary != DefaultConfig.Summary {
			if summary, err = w.renderPlain("summary", DefaultConfig.Summary); err != nil {
				return nil, err
			}
			summary, _ = truncate(oneLine(summary), maxSummary)
		}
		if summary == "" {
			summary, _ = truncate(oneLine(fmt.Sprintf("[%s] %s", strings.ToUpper(w.data.Status), cmp.Or(w.data.CommonLabels["alertname"], w.key))), maxSummary)
		}
	}
	v := &issueValues{summary: summary, custom: make(map[string]string, len(n.conf.CustomFields))}
	if v.description, v.hash, err = w.description(gen); err != nil {
		return nil, err
	}
	if v.priority, err = w.renderPlain("priority", n.conf.Priority); err != nil {
		return nil, err
	}
	if v.assignee, err = w.renderPlain("assignee", n.conf.Assignee); err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(n.conf.CustomFields)) {
		if v.custom[name], err = w.renderPlain("custom_fields."+name, n.conf.CustomFields[name]); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// fallback reports a rendered value Backlog does not have, except in a
// preview (quiet), which counts and logs nothing.
func (w *work) fallback(field string, err error) {
	if !w.quiet {
		w.n.fallback("A rendered value does not exist in Backlog; using the fallback", field, err)
	}
}

// current reads the issue before alertfan changes it. It returns nil, nil
// when the issue no longer exists in Backlog. Reads do not take from the
// write budget that rate_limit_per_minute paces.
func (w *work) current(ctx context.Context) (*Issue, error) {
	is, err := w.n.client.GetIssue(ctx, w.rec.IssueKey)
	if isNotFound(err) {
		w.n.d.Logger.Warn("Backlog issue no longer exists", "issue", w.rec.IssueKey, "key", w.key)
		return nil, nil
	}
	return is, err
}

func (w *work) isClosed(is *Issue) bool {
	return is.Status.ID == statusClosed || (w.ids.closeStatus != nil && is.Status.ID == *w.ids.closeStatus)
}

// personClosed applies the policy for a firing alert whose issue a person
// closed (is != nil) or deleted (is == nil):
//   - deleted: a new issue;
//   - closed, and this is a new occurrence (an alert that fired again after
//     resolving, or an alert joining the group): a new issue, unless the
//     person's resolution is one of skip_reopen_resolutions;
//   - closed, same occurrence still firing, or a skip resolution: nothing
//     is sent; the record remembers the person's close and the occurrence
//     (in ClosedAt) so later repeats stay quiet.
func (w *work) personClosed(ctx context.Context, is *Issue, newOccurrence bool) error {
	if is == nil {
		return w.createNew(ctx)
	}
	skip := is.Resolution != nil && w.ids.skipResolutions[is.Resolution.ID]
	if newOccurrence && !skip {
		return w.createNew(ctx)
	}
	if skip {
		w.n.d.Logger.Info("A person closed the issue with a resolution listed in skip_reopen_resolutions; not opening another", "issue", w.rec.IssueKey, "resolution", is.Resolution.Name)
	}
	return w.markPersonClosed(ctx)
}

func (w *work) markPersonClosed(ctx context.Context) error {
	since := w.data.FiringSince
	if w.rec.State == StatePersonClosed && !since.After(w.rec.ClosedAt) {
		return nil
	}
	w.rec.State, w.rec.ClosedAt = StatePersonClosed, since
	return w.n.put(ctx, w.key, w.rec)
}

// afterPersonClosed handles a firing notification for an issue a person
// closed earlier: read it again, since the person may have reopened it.
func (w *work) afterPersonClosed(ctx context.Context) error {
	is, err := w.current(ctx)
	if err != nil {
		return err
	}
	if is != nil && !w.isClosed(is) {
		// Reopened by a person: a new occurrence is reported like any
		// firing again, the same one like a repeat.
		if w.data.FiringSince.After(w.rec.ClosedAt) {
			return w.refireOn(ctx, is, false)
		}
		w.rec.State, w.rec.ClosedAt = StateOpen, time.Time{}
		if err := w.n.put(ctx, w.key, w.rec); err != nil {
			return err
		}
		return w.repeat(ctx)
	}
	return w.personClosed(ctx, is, w.data.FiringSince.After(w.rec.ClosedAt))
}

// repeat handles a firing notification whose issue is open: nothing, a
// comment (on_repeat: comment, or an acknowledge), and in group mode or
// with update_description a description rewrite when it changed.
func (w *work) repeat(ctx context.Context) error {
	n := w.n
	var msg string
	var err error
	switch {
	case len(w.notif.Alerts) == 1 && w.notif.Alerts[0].Action == sinks.ActionAcknowledge:
		msg, err = w.comment("ack_comment", n.conf.AckComment)
	case n.conf.OnRepeat == OnRepeatComment:
		msg, err = w.comment("repeat_comment", n.conf.RepeatComment)
	}
	if err != nil {
		return sinks.Permanent(sinks.ReasonTemplate, err)
	}
	form := url.Values{}
	hash, err := w.descriptionUpdate(form)
	if err != nil {
		return err
	}
	// The issue is read even when nothing would be written to it: a
	// firing reaches the sink only when it changed something (repeats
	// fold before the queue), and one a person deleted is opened again,
	// as the README's table says, whatever on_repeat is (a read takes
	// nothing from the write budget).
	is, err := w.current(ctx)
	if err != nil {
		return err
	}
	if is == nil || w.isClosed(is) {
		// Still the same occurrence: a person closed the issue while the
		// alert fires. Nothing goes into a closed issue.
		return w.personClosed(ctx, is, false)
	}
	w.keepPersonEdits(form, is, &hash)
	if msg != "" {
		form.Set("comment", msg)
	}
	if len(form) == 0 {
		return nil
	}
	return w.update(ctx, form, "commented", func(rec *IssueRecord) {
		if hash != "" {
			rec.ContentHash = hash
		}
	})
}

// descriptionUpdate adds the description to form when it is kept up to
// date and changed since last written; it returns the new hash.
func (w *work) descriptionUpdate(form url.Values) (string, error) {
	if w.n.conf.Mode != ModeGroup && !w.n.conf.UpdateDescription {
		return "", nil
	}
	d, hash, err := w.description(w.rec.Gen)
	if err != nil {
		return "", sinks.Permanent(sinks.ReasonTemplate, err)
	}
	if hash == w.rec.ContentHash {
		return "", nil
	}
	form.Set("description", d)
	return hash, nil
}

// update PATCHes the issue and records the outcome.
func (w *work) update(ctx context.Context, form url.Values, action string, change func(*IssueRecord)) error {
	n := w.n
	if err := n.wait(ctx); err != nil {
		return err
	}
	// An earlier attempt may have posted this comment and lost the answer
	// (a timeout): a comment is not idempotent, so look first.
	if c := form.Get("comment"); c != "" && sinks.CallFrom(ctx).Uncertain {
		posted, err := w.commented(ctx, c)
		if err != nil {
			return err
		}
		if posted {
			form.Del("comment")
		}
	}
	var err error
	switch {
	case len(form) == 0:
		n.d.Logger.Info("The comment of an attempt whose answer was lost is on the issue already; not posting it again", "issue", w.rec.IssueKey)
	case len(form) == 1 && form.Has("comment"):
		// A comment alone goes by add-comment, which a Reporter's key may
		// call; update-issue is for Normal Users and Administrators
		// (https://developer.nulab.com/docs/backlog/api/2/add-comment/,
		// https://developer.nulab.com/docs/backlog/api/2/update-issue/).
		err = n.client.AddComment(ctx, w.rec.IssueKey, form.Get("comment"))
	default:
		_, err = n.client.UpdateIssue(ctx, w.rec.IssueKey, form)
	}
	if isNotFound(err) {
		n.d.Logger.Warn("Backlog issue no longer exists", "issue", w.rec.IssueKey, "key", w.key)
		if w.notif.Status() == sinks.StatusResolved {
			return w.markPersonClosed(ctx)
		}
		return w.personClosed(ctx, nil, true)
	}
	if err != nil {
		return err
	}
	change(&w.rec)
	if err := n.put(ctx, w.key, w.rec); err != nil {
		return err
	}
	n.count(ctx, action)
	return nil
}

// commented reports whether one of the issue's newest comments is
// content (as Backlog stores it: line endings normalized), made by the
// attempt whose answer was lost: since the key's first failed attempt
// began (its start is at most the call's timeout before it failed), or,
// when no failure is recorded, since the notification was accepted. An
// earlier, identical comment (a fixed resolved_comment of an earlier
// occurrence, which came before the last call recorded on the issue) is
// another comment; a copy of the update accepted after the lost attempt
// (an HA replica's) does not move the bound. Backlog's times are whole
// seconds, compared with alertfan's clock (keep it synchronized).
func (w *work) commented(ctx context.Context, content string) (bool, error) {
	recent, err := w.n.client.RecentComments(ctx, w.rec.IssueKey, 100)
	if isNotFound(err) {
		return false, nil // the update's own 404 handles a deleted issue
	}
	if err != nil {
		return false, err
	}
	since := w.notif.AcceptedAt.Truncate(time.Second)
	if fs := sinks.CallFrom(ctx).FailingSince; !fs.IsZero() {
		since = fs.Add(-time.Duration(w.n.conf.Timeout) - time.Second).Truncate(time.Second)
	}
	// Nor before the last call alertfan recorded on the issue: an
	// identical comment from then (a fixed resolved_comment of the
	// occurrence before) is not the lost one, however short the cycle.
	if r := w.rec.RecordedAt.Truncate(time.Second); r.After(since) {
		since = r
	}
	norm := func(s string) string { return strings.TrimSpace(strings.ReplaceAll(s, "\r\n", "\n")) }
	for _, c := range recent {
		if at := c.CreatedAt(); norm(c.Content) == norm(content) && (since.IsZero() || !at.Before(since)) {
			return true, nil
		}
	}
	return false, nil
}

func isNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound
}

// refire handles an alert firing again after a resolve: reopen the issue
// alertfan closed (reopen), or comment on one left open at resolve. A
// person's close or delete in between is honoured (personClosed).
func (w *work) refire(ctx context.Context, reopen bool) error {
	is, err := w.current(ctx)
	if err != nil {
		return err
	}
	return w.refireOn(ctx, is, reopen)
}

// refireOn is refire once the issue has been read.
func (w *work) refireOn(ctx context.Context, is *Issue, reopen bool) error {
	n := w.n
	closed := is != nil && w.isClosed(is)
	switch {
	case is == nil:
		return w.createNew(ctx)
	case !reopen && closed:
		// Left open by alertfan at resolve, closed since by a person; this
		// firing is a new occurrence.
		return w.personClosed(ctx, is, true)
	case closed && w.ids.closeStatus != nil && *w.ids.closeStatus != statusClosed && is.Status.ID == statusClosed:
		// alertfan closed it to its close_status (確認待ち, "awaiting
		// confirmation"), and a person has since moved it on to Closed:
		// they confirmed it done, and their close stands, as any
		// person's close does (helper 78).
		return w.personClosed(ctx, is, true)
	case closed && is.Resolution != nil && w.ids.skipResolutions[is.Resolution.ID] &&
		(w.ids.resolution == nil || *w.ids.resolution != is.Resolution.ID):
		// alertfan closed it, and a person has since set a resolution
		// listed in skip_reopen_resolutions: theirs is the last word.
		return w.personClosed(ctx, is, true)
	}
	msg, err := w.comment("refire_comment", n.conf.RefireComment)
	if err != nil {
		return sinks.Permanent(sinks.ReasonTemplate, err)
	}
	form := url.Values{}
	if msg != "" {
		form.Set("comment", msg)
	}
	hash, err := w.descriptionUpdate(form)
	if err != nil {
		return err
	}
	w.keepPersonEdits(form, is, &hash)
	action := "commented"
	if closed {
		// Closed by alertfan within reopen_within: reopen it.
		form.Set("statusId", strconv.FormatInt(w.ids.reopenStatus, 10))
		action = "reopened"
	}
	if len(form) == 0 {
		w.rec.State, w.rec.ClosedAt = StateOpen, time.Time{}
		return n.put(ctx, w.key, w.rec)
	}
	return w.update(ctx, form, action, func(rec *IssueRecord) {
		rec.State, rec.ClosedAt = StateOpen, time.Time{}
		if hash != "" {
			rec.ContentHash = hash
		}
	})
}

// resolved handles a resolve: close (status + resolution) or comment or
// nothing, as configured. An issue a person already closed or deleted is
// left alone.
func (w *work) resolved(ctx context.Context) error {
	n := w.n
	if w.rec.State != StateOpen {
		return nil // never created, or already closed / resolved
	}
	if n.conf.OnResolved == OnResolvedNone {
		w.rec.State = StateResolved
		return n.put(ctx, w.key, w.rec)
	}
	msg, err := w.comment("resolved_comment", n.conf.ResolvedComment)
	if err != nil {
		return sinks.Permanent(sinks.ReasonTemplate, err)
	}
	is, err := w.current(ctx)
	if err != nil {
		return err
	}
	if is == nil || w.isClosed(is) {
		n.d.Logger.Info("The issue was closed or deleted by a person; the resolve changes nothing", "issue", w.rec.IssueKey)
		return w.markPersonClosed(ctx)
	}
	form := url.Values{}
	if msg != "" {
		form.Set("comment", msg)
	}
	hash, err := w.descriptionUpdate(form)
	if err != nil {
		return err
	}
	w.keepPersonEdits(form, is, &hash)
	if n.conf.OnResolved == OnResolvedComment {
		if len(form) == 0 {
			w.rec.State = StateResolved
			return n.put(ctx, w.key, w.rec)
		}
		return w.update(ctx, form, "commented", func(rec *IssueRecord) {
			rec.State = StateResolved
			if hash != "" {
				rec.ContentHash = hash
			}
		})
	}
	form.Set("statusId", strconv.FormatInt(*w.ids.closeStatus, 10))
	if w.ids.resolution != nil {
		form.Set("resolutionId", strconv.FormatInt(*w.ids.resolution, 10))
	}
	return w.update(ctx, form, "closed", func(rec *IssueRecord) {
		rec.State, rec.ClosedAt = StateClosed, time.Now()
		if hash != "" {
			rec.ContentHash = hash
		}
	})
}
