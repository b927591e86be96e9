package backlog

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/alertfan/alertfan/sinks"
)

// Rendered is the create call Deliver makes for a firing alert (or group)
// that has no issue yet.
type Rendered struct {
	Method string // POST
	// URL is the endpoint without the apiKey parameter.
	URL string
	// Form holds the form fields exactly as sent when Resolved; nil when
	// no create is made (Skip says why).
	Form url.Values
	// Resolved says the form holds Backlog's ids. Otherwise the names
	// were not resolved (offline): projectId, issueTypeId, priorityId,
	// assigneeId hold the configured or rendered names, custom fields are
	// customField_<name>, and the description is rendered for a markdown
	// project.
	Resolved bool
	Skip     string
}

// Render builds the create call for notif without calling Backlog, writing
// a record, counting or logging. With online, names are resolved through
// the API first (read-only calls, cached as at delivery); without, the ids
// this notifier has already resolved are used, else the names are shown.
// The issue is the key's first (the marker of generation 1); a key whose
// issues were closed and created again gets a later generation's marker.
// Errors name the template field; online, an unresolvable name is a
// *ConfigError.
func (n *Notifier) Render(ctx context.Context, notif *sinks.Notification, online bool) (*Rendered, error) {
	r := &Rendered{Method: http.MethodPost, URL: strings.TrimRight(n.conf.APIURL, "/") + "/api/v2/issues"}
	switch {
	case len(notif.Alerts) == 0 || (n.conf.Mode == ModeAlert && len(notif.Alerts) != 1):
		return nil, fmt.Errorf("backlog in %s mode got %d alerts", n.conf.Mode, len(notif.Alerts))
	case len(notif.Alerts) == 1 && notif.Alerts[0].Action == sinks.ActionChange:
		r.Skip = "a PagerDuty change event makes no Backlog issue"
		return r, nil
	case notif.Status() == sinks.StatusResolved:
		r.Skip = "resolved: an open issue is " + n.resolvedAction() + "; nothing is created"
		return r, nil
	}
	var ids *resolved
	if online {
		var err error
		if ids, err = n.resolve(ctx); err != nil {
			return nil, err
		}
	} else {
		n.mu.Lock()
		ids = n.ids
		n.mu.Unlock()
	}
	key := notif.Alerts[0].Identity
	if n.conf.Mode == ModeGroup {
		key = notif.Key
	}
	rule := RuleMarkdown
	if ids != nil {
		rule = ids.rule
	}
	w := &work{n: n, ids: ids, key: key, notif: notif, data: newData(notif, rule), quiet: true}
	if ids != nil {
		form, _, err := w.issueForm(1)
		if err != nil {
			return nil, err
		}
		r.Form, r.Resolved = form, true
		return r, nil
	}
	// Only the notation is needed to render the values; offline it is
	// the markdown default.
	w.ids = &resolved{rule: rule}
	v, err := w.issueValues(1)
	if err != nil {
		return nil, err
	}
	r.Form = url.Values{
		"projectId":   {n.conf.Project},
		"summary":     {v.summary},
		"issueTypeId": {n.conf.IssueType},
		"description": {v.description},
		"priorityId":  {v.priority},
	}
	if v.priority == "" {
		r.Form.Set("priorityId", n.conf.DefaultPriority)
	}
	if v.assignee != "" {
		r.Form.Set("assigneeId", v.assignee)
	}
	for _, name := range slices.Sorted(maps.Keys(v.custom)) {
		if v.custom[name] != "" {
			r.Form.Set("customField_"+name, v.custom[name])
		}
	}
	return r, nil
}

// resolvedAction says what a resolve does to an open issue.
func (n *Notifier) resolvedAction() string {
	switch n.conf.OnResolved {
	case OnResolvedClose:
		return "closed"
	case OnResolvedComment:
		return "commented on"
	}
	return "left as it is"
}
