package backlog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/alertmanager/template"

	"github.com/alertfan/alertfan/sinks"
)

// Issue record states.
const (
	StateCreating = "creating" // create was called; outcome not yet recorded
	StateOpen     = "open"
	StateResolved = "resolved" // alert resolved, issue left open (on_resolved comment|none)
	StateClosed   = "closed"
)

// IssueRecord is what alertfan remembers about an identity's issue.
type IssueRecord struct {
	IssueID  int64
	IssueKey string
	State    string
	// Gen counts issues made for the identity; it is part of the marker so
	// that a new issue after reopen_within is not mistaken for the old one.
	Gen      int64
	ClosedAt time.Time
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
}

const (
	maxLimiterWait = 10 * time.Second
	maxSummary     = 255
	resolveTimeout = 15 * time.Second
)

// Notifier keeps one Backlog issue per alert identity.
type Notifier struct {
	conf    *Config
	d       Deps
	client  *Client
	limiter *sinks.Limiter

	mu  sync.Mutex
	ids *resolved
}

// resolved holds names turned into ids.
type resolved struct {
	projectID    int64
	issueTypeID  int64
	closeStatus  int64
	reopenStatus int64
	resolution   int64
	priorities   map[string]int64
	customFields map[string]int64
	users        map[string]int64
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
		conf:    conf,
		d:       d,
		client:  NewClient(conf.APIURL, string(conf.APIKey), d.Transport, time.Duration(conf.Timeout), observe),
		limiter: d.Limiters.Get("backlog", conf.APIURL+"\x00"+string(conf.APIKey), conf.RateLimitPerMinute),
	}
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
func (n *Notifier) Admit(class int) time.Duration { return n.limiter.Admit(class, maxLimiterWait) }

// Pace waits for a call's turn under the rate limit (the queue's last look
// at the alert's state comes after it); a turn further off than maxWait is
// an error carrying the wait.
func (n *Notifier) Pace(ctx context.Context, maxWait time.Duration) error {
	_, err := n.limiter.Wait(ctx, maxWait)
	return err
}

// Schedule books calls for keys deliveries and says how long the job
// carrying them should wait before it runs.
func (n *Notifier) Schedule(keys, class int) time.Duration { return n.limiter.Schedule(keys, class, maxLimiterWait) }

// Grouped is false: Backlog issues are always per alert.
func (n *Notifier) Grouped() bool { return false }

func (n *Notifier) checkTemplates() error {
	sample := sinks.SampleNotification()
	data := sample.TemplateData()
	for field, text := range n.templateFields() {
		if _, err := n.d.Template.ExecuteTextString(text, data); err != nil {
			return fmt.Errorf("%s: template %q: %w", field, text, err)
		}
	}
	return nil
}

func (n *Notifier) templateFields() map[string]string {
	f := map[string]string{
		"summary":     n.conf.Summary,
		"description": n.conf.Description,
		"priority":    n.conf.Priority,
		"assignee":    n.conf.Assignee,
	}
	for k, v := range n.conf.CustomFields {
		f["custom_fields."+k] = v
	}
	return f
}

// resolve turns names into ids once; concurrent deliveries share the result.
func (n *Notifier) resolve(ctx context.Context) (*resolved, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ids != nil {
		return n.ids, nil
	}
	c, conf := n.client, n.conf
	asConfig := func(what string, err error) error {
		e := sinks.AsError(err)
		if !e.Retryable {
			return &ConfigError{fmt.Errorf("%s: %w", what, err)}
		}
		return err
	}
	proj, err := c.GetProject(ctx, conf.Project)
	if err != nil {
		return nil, asConfig(fmt.Sprintf("project %q", conf.Project), err)
	}
	r := &resolved{projectID: proj.ID, priorities: map[string]int64{}, customFields: map[string]int64{}, users: map[string]int64{}}
	types, err := c.IssueTypes(ctx, conf.Project)
	if err != nil {
		return nil, asConfig("issue types", err)
	}
	if r.issueTypeID, err = pick("issue_type", conf.IssueType, types); err != nil {
		return nil, err
	}
	statuses, err := c.Statuses(ctx, conf.Project)
	if err != nil {
		return nil, asConfig("statuses", err)
	}
	if conf.OnResolved == OnResolvedClose {
		if r.closeStatus, err = pick("close_status", conf.CloseStatus, statuses); err != nil {
			return nil, err
		}
	}
	if r.reopenStatus, err = pick("reopen_status", conf.ReopenStatus, statuses); err != nil {
		return nil, err
	}
	prios, err := c.Priorities(ctx)
	if err != nil {
		return nil, asConfig("priorities", err)
	}
	for _, p := range prios {
		r.priorities[p.Name] = p.ID
	}
	if !strings.Contains(conf.Priority, "{{") {
		if _, err := pick("priority", conf.Priority, prios); err != nil {
			return nil, err
		}
	}
	if conf.Resolution != "" {
		res, err := c.Resolutions(ctx)
		if err != nil {
			return nil, asConfig("resolutions", err)
		}
		if r.resolution, err = pick("resolution", conf.Resolution, res); err != nil {
			return nil, err
		}
	}
	if len(conf.CustomFields) > 0 {
		cfs, err := c.CustomFields(ctx, conf.Project)
		if err != nil {
			return nil, asConfig("custom fields", err)
		}
		for name := range conf.CustomFields {
			id, err := pick("custom_fields", name, cfs)
			if err != nil {
				return nil, err
			}
			r.customFields[name] = id
		}
	}
	if conf.Assignee != "" {
		users, err := c.Users(ctx, conf.Project)
		if err != nil {
			return nil, asConfig("project users", err)
		}
		for _, u := range users {
			r.users[u.UserID] = u.ID
			r.users[u.Name] = u.ID
			r.users[strconv.FormatInt(u.ID, 10)] = u.ID
		}
	}
	n.ids = r
	return r, nil
}

func pick(field, name string, list []Named) (int64, error) {
	names := make([]string, 0, len(list))
	for _, it := range list {
		if it.Name == name {
			return it.ID, nil
		}
		names = append(names, strconv.Quote(it.Name))
	}
	sort.Strings(names)
	return 0, &ConfigError{fmt.Errorf("%s: %q does not exist in Backlog; valid names: %s", field, name, strings.Join(names, ", "))}
}

// Marker is the token put in every issue's description so that a create
// whose outcome was lost (crash, timeout) is found by search, not repeated.
func Marker(target, identity string, gen int64) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%d", target, identity, gen)))
	return "alertfan-" + hex.EncodeToString(sum[:12])
}

// Deliver brings the identity's issue in line with the alert's state.
func (n *Notifier) Deliver(ctx context.Context, notif *sinks.Notification) error {
	if len(notif.Alerts) != 1 {
		return sinks.Permanent(sinks.ReasonConfig, fmt.Errorf("backlog delivers one alert at a time, got %d", len(notif.Alerts)))
	}
	if notif.Alerts[0].Action == sinks.ActionChange {
		// A PagerDuty change event has no issue to belong to.
		n.d.Logger.Debug("Ignoring a change event; Backlog issues follow alerts")
		return nil
	}
	ids, err := n.resolve(ctx)
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			return sinks.Permanent(sinks.ReasonConfig, err)
		}
		return err
	}
	identity := notif.Alerts[0].Identity
	rec, found, err := n.d.Issues.GetIssue(ctx, n.d.ID, identity)
	if err != nil {
		return sinks.Retryable(sinks.ReasonOther, 0, fmt.Errorf("read issue record: %w", err))
	}
	a := notif.Alerts[0]
	if found && rec.State == StateCreating {
		if rec, err = n.heal(ctx, ids, identity, rec); err != nil {
			return err
		}
	}
	switch {
	case a.Status == sinks.StatusResolved:
		return n.resolved(ctx, ids, identity, rec, notif)
	case !found || rec.State == "" || rec.State == StateCreating:
		return n.create(ctx, ids, identity, rec, notif)
	case rec.State == StateOpen:
		return n.repeat(ctx, identity, rec, notif)
	case rec.State == StateResolved:
		return n.refire(ctx, identity, rec, notif, false)
	default: // closed
		if n.conf.ReopenWithin > 0 && time.Since(rec.ClosedAt) <= time.Duration(n.conf.ReopenWithin) {
			return n.refire(ctx, identity, rec, notif, true)
		}
		return n.create(ctx, ids, identity, IssueRecord{Gen: rec.Gen}, notif)
	}
}

// heal settles a create whose outcome was not recorded: if an issue with
// the marker exists it is adopted, else the record is cleared for a create.
func (n *Notifier) heal(ctx context.Context, ids *resolved, identity string, rec IssueRecord) (IssueRecord, error) {
	marker := Marker(n.d.ID, identity, rec.Gen)
	if err := n.wait(ctx); err != nil {
		return rec, err
	}
	issues, err := n.client.SearchIssues(ctx, ids.projectID, marker)
	if err != nil {
		return rec, err
	}
	for _, is := range issues {
		if strings.Contains(is.Description, marker) {
			rec.IssueID, rec.IssueKey, rec.State = is.ID, is.IssueKey, StateOpen
			if err := n.put(ctx, identity, rec); err != nil {
				return rec, err
			}
			n.count("adopted")
			n.d.Logger.Info("Found the issue of an unrecorded create; adopting it instead of creating another", "issue", is.IssueKey)
			return rec, nil
		}
	}
	// Not found: the create never happened. The next create reuses this
	// generation's marker, so a create that did happen but is not yet
	// searchable is still found by a later heal.
	return rec, nil
}

func (n *Notifier) put(ctx context.Context, identity string, rec IssueRecord) error {
	if err := n.d.Issues.PutIssue(ctx, n.d.ID, identity, rec); err != nil {
		return sinks.Retryable(sinks.ReasonOther, 0, fmt.Errorf("record issue: %w", err))
	}
	return nil
}

func (n *Notifier) wait(ctx context.Context) error {
	_, err := n.limiter.Wait(ctx, maxLimiterWait)
	return err
}

func (n *Notifier) count(action string) {
	if n.d.Metrics != nil {
		n.d.Metrics.issues.WithLabelValues(n.d.Receiver, action).Inc()
	}
}

func (n *Notifier) create(ctx context.Context, ids *resolved, identity string, rec IssueRecord, notif *sinks.Notification) error {
	form, err := n.issueForm(ids, notif)
	if err != nil {
		return sinks.Permanent(sinks.ReasonTemplate, err)
	}
	if rec.State != StateCreating {
		rec = IssueRecord{Gen: rec.Gen + 1, State: StateCreating}
	}
	marker := Marker(n.d.ID, identity, rec.Gen)
	form.Set("description", form.Get("description")+"\n\n---\n"+marker)
	if err := n.wait(ctx); err != nil {
		return err
	}
	// Recorded before the call: if the outcome is lost, the next attempt
	// searches for the marker instead of creating a second issue.
	if err := n.put(ctx, identity, rec); err != nil {
		return err
	}
	is, err := n.client.CreateIssue(ctx, form)
	if err != nil {
		return err
	}
	rec.IssueID, rec.IssueKey, rec.State = is.ID, is.IssueKey, StateOpen
	if err := n.put(ctx, identity, rec); err != nil {
		return err
	}
	n.count("created")
	n.d.Logger.Info("Created Backlog issue", "issue", is.IssueKey, "identity", identity)
	return nil
}

func (n *Notifier) issueForm(ids *resolved, notif *sinks.Notification) (url.Values, error) {
	data := notif.TemplateData()
	var tmplErr error
	tmpl := func(field, text string) string {
		if tmplErr != nil || text == "" {
			return ""
		}
		s, err := n.d.Template.ExecuteTextString(text, data)
		if err != nil {
			tmplErr = fmt.Errorf("%s: %w", field, err)
		}
		return strings.TrimSpace(s)
	}
	summary, _ := sinks.TruncateRunes(tmpl("summary", n.conf.Summary), maxSummary)
	form := url.Values{
		"projectId":   {strconv.FormatInt(ids.projectID, 10)},
		"summary":     {summary},
		"issueTypeId": {strconv.FormatInt(ids.issueTypeID, 10)},
		"description": {tmpl("description", n.conf.Description)},
	}
	prio := tmpl("priority", n.conf.Priority)
	assignee := tmpl("assignee", n.conf.Assignee)
	custom := map[string]string{}
	for name, text := range n.conf.CustomFields {
		custom[name] = tmpl("custom_fields."+name, text)
	}
	if tmplErr != nil {
		return nil, tmplErr
	}
	if summary == "" {
		return nil, errors.New("summary: rendered empty")
	}
	pid, ok := ids.priorities[prio]
	if !ok {
		names := make([]string, 0, len(ids.priorities))
		for k := range ids.priorities {
			names = append(names, strconv.Quote(k))
		}
		sort.Strings(names)
		return nil, fmt.Errorf("priority: rendered %q, which is not a Backlog priority; valid: %s", prio, strings.Join(names, ", "))
	}
	form.Set("priorityId", strconv.FormatInt(pid, 10))
	if assignee != "" {
		uid, ok := ids.users[assignee]
		if !ok {
			return nil, fmt.Errorf("assignee: %q is not a member of project %s", assignee, n.conf.Project)
		}
		form.Set("assigneeId", strconv.FormatInt(uid, 10))
	}
	for name, v := range custom {
		if v != "" {
			form.Set(fmt.Sprintf("customField_%d", ids.customFields[name]), v)
		}
	}
	return form, nil
}

// repeat handles a firing alert whose issue is open: nothing, or a comment.
func (n *Notifier) repeat(ctx context.Context, identity string, rec IssueRecord, notif *sinks.Notification) error {
	a := notif.Alerts[0]
	var msg string
	switch {
	case a.Action == sinks.ActionAcknowledge:
		msg = "Acknowledged by the sender at " + notif.AcceptedAt.UTC().Format(time.RFC3339) + "."
	case n.conf.OnRepeat == OnRepeatComment:
		msg = "Still firing at " + notif.AcceptedAt.UTC().Format(time.RFC3339) + "."
	default:
		return nil
	}
	return n.comment(ctx, identity, rec, msg, notif)
}

func (n *Notifier) comment(ctx context.Context, identity string, rec IssueRecord, msg string, notif *sinks.Notification) error {
	if err := n.wait(ctx); err != nil {
		return err
	}
	err := n.client.AddComment(ctx, rec.IssueKey, msg)
	if isNotFound(err) {
		return n.gone(ctx, identity, rec, notif)
	}
	if err != nil {
		return err
	}
	n.count("commented")
	return nil
}

// gone handles an issue deleted in Backlog: a firing alert gets a new one.
func (n *Notifier) gone(ctx context.Context, identity string, rec IssueRecord, notif *sinks.Notification) error {
	n.d.Logger.Warn("Backlog issue no longer exists", "issue", rec.IssueKey, "identity", identity)
	if notif.Alerts[0].Status == sinks.StatusResolved {
		rec.State, rec.ClosedAt = StateClosed, time.Now()
		return n.put(ctx, identity, rec)
	}
	ids, err := n.resolve(ctx)
	if err != nil {
		return err
	}
	return n.create(ctx, ids, identity, IssueRecord{Gen: rec.Gen}, notif)
}

func isNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound
}

// refire handles an alert firing again: reopen a closed issue, or comment
// on one left open at resolve.
func (n *Notifier) refire(ctx context.Context, identity string, rec IssueRecord, notif *sinks.Notification, reopen bool) error {
	msg := "Firing again at " + notif.Alerts[0].StartsAt.UTC().Format(time.RFC3339) + "."
	if !reopen {
		if err := n.comment(ctx, identity, rec, msg, notif); err != nil {
			return err
		}
		rec.State = StateOpen
		return n.put(ctx, identity, rec)
	}
	ids, err := n.resolve(ctx)
	if err != nil {
		return err
	}
	if err := n.wait(ctx); err != nil {
		return err
	}
	form := url.Values{"statusId": {strconv.FormatInt(ids.reopenStatus, 10)}, "comment": {msg}}
	_, err = n.client.UpdateIssue(ctx, rec.IssueKey, form)
	if isNotFound(err) {
		return n.gone(ctx, identity, rec, notif)
	}
	if err != nil {
		return err
	}
	rec.State, rec.ClosedAt = StateOpen, time.Time{}
	if err := n.put(ctx, identity, rec); err != nil {
		return err
	}
	n.count("reopened")
	return nil
}

func (n *Notifier) resolved(ctx context.Context, ids *resolved, identity string, rec IssueRecord, notif *sinks.Notification) error {
	if rec.State != StateOpen {
		return nil // never created, or already closed / resolved
	}
	a := notif.Alerts[0]
	ended := a.EndsAt
	if ended.IsZero() {
		ended = notif.AcceptedAt
	}
	msg := "Resolved at " + ended.UTC().Format(time.RFC3339) + "."
	switch n.conf.OnResolved {
	case OnResolvedNone:
		rec.State = StateResolved
		return n.put(ctx, identity, rec)
	case OnResolvedComment:
		if err := n.comment(ctx, identity, rec, msg, notif); err != nil {
			return err
		}
		rec.State = StateResolved
		return n.put(ctx, identity, rec)
	}
	if err := n.wait(ctx); err != nil {
		return err
	}
	form := url.Values{"statusId": {strconv.FormatInt(ids.closeStatus, 10)}, "comment": {msg}}
	if ids.resolution != 0 {
		form.Set("resolutionId", strconv.FormatInt(ids.resolution, 10))
	}
	_, err := n.client.UpdateIssue(ctx, rec.IssueKey, form)
	if isNotFound(err) {
		return n.gone(ctx, identity, rec, notif)
	}
	if err != nil {
		return err
	}
	rec.State, rec.ClosedAt = StateClosed, time.Now()
	if err := n.put(ctx, identity, rec); err != nil {
		return err
	}
	n.count("closed")
	return nil
}
