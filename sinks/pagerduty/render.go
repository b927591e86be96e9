package pagerduty

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/alertfan/alertfan/sinks"
)

// Paths of the Events API v2 calls; the configured URL stands for the
// first (see endpoint).
const (
	pathEvent  = "/v2/enqueue"
	pathChange = "/v2/change/enqueue"
)

// Rendered is the call Deliver makes for a notification.
type Rendered struct {
	// URL is where the body is POSTed: the configured url, or the change
	// endpoint next to it for a change event.
	URL string
	// Body is the JSON exactly as sent, routing key included; nil when no
	// call is made (Skip says why).
	Body json.RawMessage
	// Skip explains why nothing is sent, e.g. a resolve with
	// send_resolved: false.
	Skip string

	path   string
	secret string
	// action and ref are what the delivery history records: the event
	// action ("change" for a change event) and the dedup key.
	action, ref string
}

// Redacted is Body with the routing key replaced by "<secret>", for
// showing: the rest is byte for byte what is sent.
func (r *Rendered) Redacted() json.RawMessage {
	if r.Body == nil || r.secret == "" {
		return r.Body
	}
	k, _ := json.Marshal(r.secret)
	return bytes.ReplaceAll(r.Body, k, []byte(`"<secret>"`))
}

// Render builds the call Deliver would make for notif without making it,
// counting or logging anything: the same code renders both, so a preview
// cannot drift from what is sent. Errors are template errors naming the
// field (what Deliver turns into a dead letter with reason template).
func (n *Notifier) Render(notif *sinks.Notification) (*Rendered, error) {
	return n.render(notif, true, "")
}

func (n *Notifier) render(notif *sinks.Notification, quiet bool, pin string) (*Rendered, error) {
	u, err := url.Parse(n.conf.URL)
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	r := &Rendered{path: pathEvent, secret: string(n.conf.RoutingKey)}
	var v any
	switch {
	case isChange(notif) && notif.Alerts[0].PagerDuty != nil:
		r.path, r.action, v = pathChange, "change", n.ChangeEvent(notif.Alerts[0].PagerDuty)
	case isChange(notif):
		r.path, r.action, v = pathChange, "change", n.changeEvent(&notif.Alerts[0])
	default:
		ev, body, err := n.event(notif, quiet, pin)
		if err != nil {
			return nil, err
		}
		if ev == nil {
			r.URL = u.String()
			r.Skip = "resolved, and send_resolved is false"
			return r, nil
		}
		// body is nil when the details were replaced after the size check: encoded below.
		r.action, r.ref, v, r.Body = ev.Action, ev.DedupKey, ev, body
	}
	r.URL = endpoint(u, r.path).String()
	// json.Marshal, as go-pagerduty encodes events: no trailing newline,
	// HTML characters escaped.
	if r.Body == nil {
		if r.Body, err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("encode event: %w", err)
		}
	}
	return r, nil
}

// isChange reports whether notif is one PagerDuty change event.
func isChange(notif *sinks.Notification) bool {
	return len(notif.Alerts) == 1 && notif.Alerts[0].Action == sinks.ActionChange
}
