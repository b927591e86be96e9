package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/alertfan/alertfan/receiver/intake"
	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/backlog"
	"github.com/alertfan/alertfan/sinks/pagerduty"
)

// PreviewItem is what one target would get for an alert (or, in group
// mode, for the alerts of a group): the call the sink would make, rendered
// by the sink's own code, and never made.
type PreviewItem struct {
	Target   string `json:"target"`
	Receiver string `json:"receiver"`
	Kind     string `json:"kind"`
	// Key is the work item's key: the alert identity, or the group key.
	Key    string `json:"key"`
	Method string `json:"method,omitempty"`
	// URL is the endpoint, without credentials.
	URL string `json:"url,omitempty"`
	// Payload is, for PagerDuty, the event JSON as POSTed with the routing
	// key shown as "<secret>"; for Backlog, the create call's form fields
	// (name → values).
	Payload any `json:"payload,omitempty"`
	// NamesResolved (Backlog) is false when the form shows names where
	// Backlog gets ids: the names were not resolved (offline).
	NamesResolved *bool `json:"names_resolved,omitempty"`
	// Skip says why no call is made (a resolve with send_resolved false).
	Skip string `json:"skip,omitempty"`
	// Error is why the payload cannot be rendered (a template error, a
	// Backlog name that does not exist): the delivery would be a dead
	// letter.
	Error string `json:"error,omitempty"`
}

// previewRequest is the short form of a preview body; a body with
// "alerts" is an Alertmanager webhook instead.
type previewRequest struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Status      string            `json:"status"`
}

// decodePreview reads a preview body: {"labels","annotations","status"}
// or an Alertmanager webhook (version 4, alerts). A short-form alert
// starts at now (and, resolved, ends at now). Errors are intake.Errors
// naming the field.
func decodePreview(body []byte, now time.Time) (sinks.Source, []sinks.Alert, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err != nil {
		// Decode again for the field-naming error.
		_, _, derr := intake.DecodeAlertmanager(body)
		if derr == nil {
			derr = err
		}
		return sinks.Source{}, nil, derr
	}
	if _, ok := probe["alerts"]; ok {
		return intake.DecodeAlertmanager(body)
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	var req previewRequest
	if err := dec.Decode(&req); err != nil {
		msg := err.Error()
		if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
			return sinks.Source{}, nil, intake.Errors{{Field: strings.Trim(f, `"`), Message: `unknown field; give "labels", "annotations" and "status", or an Alertmanager webhook with "alerts"`}}
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return sinks.Source{}, nil, intake.Errors{{Field: te.Field, Message: "must be " + map[bool]string{true: "a string", false: "an object of strings"}[te.Field == "status"] + ", got JSON " + te.Value}}
		}
		return sinks.Source{}, nil, intake.Errors{{Message: "invalid JSON: " + msg}}
	}
	return synthesize(req.Labels, req.Annotations, req.Status, now, "")
}

// synthesize makes the Alertmanager webhook a label set would arrive in and
// decodes it as intake does, so the alert (identity, fingerprint) is the
// one alertfan would have. field prefixes error field names ("" for the
// HTTP body's top level).
func synthesize(labels, annotations map[string]string, status string, now time.Time, field string) (sinks.Source, []sinks.Alert, error) {
	if status == "" {
		status = sinks.StatusFiring
	}
	var errs intake.Errors
	if status != sinks.StatusFiring && status != sinks.StatusResolved {
		errs = append(errs, &intake.FieldError{Field: field + "status", Message: `must be "firing" or "resolved", got ` + quote(status)})
	}
	if len(labels) == 0 {
		errs = append(errs, &intake.FieldError{Field: field + "labels", Message: "at least one label is required"})
	}
	if len(errs) > 0 {
		return sinks.Source{}, nil, errs
	}
	a := map[string]any{"status": status, "labels": labels, "annotations": annotations, "startsAt": now.UTC().Format(time.RFC3339Nano)}
	if status == sinks.StatusResolved {
		a["endsAt"] = now.UTC().Format(time.RFC3339Nano)
	}
	b, err := json.Marshal(map[string]any{"version": "4", "status": status, "alerts": []any{a}})
	if err != nil {
		return sinks.Source{}, nil, err
	}
	src, alerts, err := intake.DecodeAlertmanager(b)
	var fes intake.Errors
	if errors.As(err, &fes) {
		for _, fe := range fes {
			fe.Field = field + strings.TrimPrefix(fe.Field, "alerts[0].")
		}
	}
	return src, alerts, err
}

// previewWork is one target's notification, as accept builds it.
type previewWork struct {
	t     target
	notif *sinks.Notification
}

// plan routes alerts as accept does — each alert to the targets its
// receivers have; group-mode targets get one notification per target with
// every alert of the group that reaches it — in the order targets are
// first reached. Sticky targets (ones an earlier alert holds open) are
// not known to a preview.
func (rt *runtime) plan(src sinks.Source, alerts []sinks.Alert, now time.Time) []previewWork {
	var out []previewWork
	groups := map[string]int{}
	for _, a := range alerts {
		for _, recv := range rt.router.Match(a.Labels) {
			for _, t := range rt.receivers[recv] {
				if t.grouped && src.GroupKey != "" {
					if i, ok := groups[t.ID]; ok {
						out[i].notif.Alerts = append(out[i].notif.Alerts, a)
						continue
					}
					groups[t.ID] = len(out)
					out = append(out, previewWork{t: t, notif: groupNotification(src, []sinks.Alert{a}, now)})
					continue
				}
				out = append(out, previewWork{t: t, notif: &sinks.Notification{Key: a.Identity, Source: src, Alerts: []sinks.Alert{a}, AcceptedAt: now}})
			}
		}
	}
	return out
}

// preview renders what every target reached would get. online resolves
// Backlog names through the API (read-only); otherwise names already
// resolved by the sink are used, else shown as names.
func (rt *runtime) preview(ctx context.Context, src sinks.Source, alerts []sinks.Alert, now time.Time, online bool) []PreviewItem {
	items := []PreviewItem{}
	for _, pw := range rt.plan(src, alerts, now) {
		items = append(items, renderItem(ctx, pw, online))
	}
	return items
}

func renderItem(ctx context.Context, pw previewWork, online bool) PreviewItem {
	it := PreviewItem{Target: pw.t.ID, Receiver: pw.t.Receiver, Kind: pw.t.Kind, Key: pw.notif.Key}
	s := pw.t.Sink
	if g, ok := s.(*gatedSink); ok {
		s = g.notifier
	}
	switch n := s.(type) {
	case *pagerduty.Notifier:
		r, err := n.Render(pw.notif)
		if err != nil {
			it.Error = err.Error()
			return it
		}
		it.Method, it.URL, it.Skip = http.MethodPost, redactURL(r.URL), r.Skip
		if r.Body != nil {
			it.Payload = r.Redacted()
		}
	case *backlog.Notifier:
		r, err := n.Render(ctx, pw.notif, online)
		if err != nil {
			it.Error = err.Error()
			return it
		}
		it.Method, it.URL, it.Skip = r.Method, redactURL(r.URL), r.Skip
		if r.Form != nil {
			it.Payload = r.Form
			it.NamesResolved = &r.Resolved
		}
	default:
		it.Error = "this target cannot be previewed"
	}
	return it
}

// handlePreview answers POST /api/v1/preview: per target reached, the
// payload it would get. It sends nothing and writes nothing; it uses the
// running config and the Backlog ids its sinks already resolved.
func (s *server) handlePreview(w http.ResponseWriter, r *http.Request) {
	rt := s.rt.Load()
	body, err := readBody(w, r, rt.cfg.Intake.MaxBodyBytes)
	if errors.Is(err, errTooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, "request body is larger than intake.max_body_bytes", nil)
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "could not read request body", nil)
		return
	}
	now := time.Now()
	src, alerts, err := decodePreview(body, now)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid preview request", asFieldErrors(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": rt.preview(r.Context(), src, alerts, now, false)})
}

// asFieldErrors keeps intake errors as they are and makes anything else
// a body-level field error, so the answer always says what is wrong.
func asFieldErrors(err error) error {
	var fes intake.Errors
	var fe *intake.FieldError
	if errors.As(err, &fes) || errors.As(err, &fe) {
		return err
	}
	return &intake.FieldError{Message: err.Error()}
}
