package pagerduty

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	pd "github.com/PagerDuty/go-pagerduty"
	"github.com/alecthomas/units"
	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/alertfan/alertfan/sinks"
)

var (
	severityFallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "alertfan_pagerduty_severity_replaced_total",
		Help: "Rendered PagerDuty severities that PagerDuty would refuse and were replaced (by an alias or severity_fallback), by target.",
	}, []string{"target"})
	dedupKeyFallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "alertfan_pagerduty_dedup_key_replaced_total",
		Help: "Rendered dedup_key templates that failed or were empty (default key used) or were over 255 characters (hashed), by target.",
	}, []string{"target"})
	fieldFallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "alertfan_pagerduty_field_replaced_total",
		Help: "Event fields whose template failed for the alert, or that rendered blank where PagerDuty requires a value (payload.summary, payload.source of a trigger), replaced by their default, by target and field.",
	}, []string{"target", "field"})
)

// Collectors are the PagerDuty sink's metrics, for the process registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{severityFallbacks, dedupKeyFallbacks, fieldFallbacks}
}

// Input names, as in sinks.Source.Input.
const (
	inputPagerDuty = "pagerduty"
	inputMackerel  = "mackerel"
)

// defaultKey is the incident key when dedup_key is not set. Group mode
// uses Alertmanager's: hex sha256 of the group key. Alert mode keeps a
// PagerDuty sender's own dedup_key so acknowledge and resolve reach the same
// incident, and hashes any other identity to a stable 64-character key.
func (n *Notifier) defaultKey(notif *sinks.Notification) string {
	if k, ok := strings.CutPrefix(notif.Key, "pd:"); ok && k != "" && (n.conf.Mode == ModeAlert || len(notif.Alerts) == 1) {
		// A PagerDuty sender's own key is the alert's fingerprint (its
		// identity also names the sender's routing key).
		if len(notif.Alerts) == 1 && notif.Alerts[0].Fingerprint != "" {
			k = notif.Alerts[0].Fingerprint
		}
		if utf8.RuneCountInString(k) <= maxDedupKeyLen {
			return k
		}
	}
	sum := sha256.Sum256([]byte(notif.Key))
	return hex.EncodeToString(sum[:])
}

// DedupKey is the incident key of a notification: the rendered dedup_key
// template when one is set, else defaultKey. A rendered key that is empty
// falls back to defaultKey; one over PagerDuty's 255 characters is
// replaced by its hex sha256, so the user's grouping still holds.
func (n *Notifier) DedupKey(notif *sinks.Notification) (string, error) {
	return n.dedupKey(notif, false)
}

// dedupKey is DedupKey; quiet (a preview) neither counts nor logs a
// replaced key.
//
// A dedup_key template that fails for this alert (the start-up check
// renders only a sample alert) also takes the default key: the page goes
// out, and its resolve, rendered from the same alert, fails the same way
// and finds the same incident.
func (n *Notifier) dedupKey(notif *sinks.Notification, quiet bool) (string, error) {
	if n.conf.DedupKey == "" {
		return n.defaultKey(notif), nil
	}
	k, err := sinks.ExecuteText(n.tmpl, n.conf.DedupKey, keyData(notif))
	if err != nil && n.checking {
		return "", fmt.Errorf("dedup_key: template %q: %w", n.conf.DedupKey, err)
	}
	if err != nil {
		n.replaced(dedupKeyFallbacks, quiet)
		n.warnOnce(quiet, "dedup_key:error", "dedup_key template failed for an alert; using the default key", "key", notif.Key, "err", err)
		return n.defaultKey(notif), nil
	}
	k = strings.TrimSpace(k)
	switch {
	case k == "":
		n.replaced(dedupKeyFallbacks, quiet)
		n.warnOnce(quiet, "dedup_key:empty", "dedup_key rendered empty; using the default key", "key", notif.Key)
		return n.defaultKey(notif), nil
	case utf8.RuneCountInString(k) > maxDedupKeyLen:
		n.replaced(dedupKeyFallbacks, quiet)
		n.warnOnce(quiet, "dedup_key:long", "dedup_key rendered longer than 255 characters; using its sha256", "length", len(k))
		sum := sha256.Sum256([]byte(k))
		return hex.EncodeToString(sum[:]), nil
	}
	return k, nil
}

// marshalPlain is json.Marshal without HTML escaping (<, >, & as they
// are), with no trailing newline.
func marshalPlain(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// keyData is the data a dedup_key template renders with: the
// notification's alerts as they fire, whatever the event. The key must be
// the trigger's for its acknowledge and resolve, and a template reading
// .Status or .Alerts.Firing (the first firing alert's instance, say) would
// give a resolve, whose alerts have resolved, another key or none: the
// incident would stay open.
func keyData(notif *sinks.Notification) *template.Data {
	if notif.Status() == sinks.StatusFiring && !slices.ContainsFunc(notif.Alerts, func(a sinks.Alert) bool { return a.Status != sinks.StatusFiring }) {
		return notif.TemplateData()
	}
	firing := *notif
	firing.Alerts = make([]sinks.Alert, len(notif.Alerts))
	for i, a := range notif.Alerts {
		a.Status, a.EndsAt = sinks.StatusFiring, time.Time{}
		firing.Alerts[i] = a
	}
	return firing.TemplateData()
}

// warnOnce logs a message once per target and topic (at most 32 topics).
// A quiet render (a preview) logs nothing.
func (n *Notifier) warnOnce(quiet bool, topic, msg string, args ...any) {
	if n.checking || quiet {
		return // the start-up render of a sample alert is not an alert
	}
	n.warnMu.Lock()
	first := !n.warned[topic] && len(n.warned) < 32
	if first {
		n.warned[topic] = true
	}
	n.warnMu.Unlock()
	if first {
		n.logger.Warn(msg+" (logged once per target)", args...)
	}
}

// severity maps a rendered severity onto one PagerDuty accepts. Only a
// trigger's replacement is counted and logged: PagerDuty reads the
// severity of triggers, and a resolve's "ok" is no news.
func (n *Notifier) severity(rendered, action string, quiet bool) string {
	sev, ok := NormalizeSeverity(rendered, n.conf.SeverityFallback)
	if !ok && action == ActionTrigger {
		n.replaced(severityFallbacks, quiet)
		n.warnOnce(quiet, "severity:"+sinks.Abbreviate(rendered, 64), "Rendered severity is not one PagerDuty accepts; replaced",
			"rendered", sinks.Abbreviate(rendered, 64), "sent", sev, "valid", strings.Join(Severities, ", "))
	}
	return sev
}

// inputDefaults are the values a field takes when the user's config does
// not set it, for alerts that did not come from Alertmanager. Each field
// falls back to Alertmanager's default template when absent here.
type inputDefaults struct {
	fields  map[string]string
	details any // nil: keep Alertmanager's default details
	links   []any
	images  []any
	// relay is set for an event that came from a PagerDuty sender: every
	// field the user left out is sent as it came, empty ones included.
	relay bool
}

// defaultsFor picks the defaults that fit the input the alert came from:
// Alertmanager's templates for Alertmanager groups, the event itself for a
// PagerDuty event, Mackerel's own wording for a Mackerel alert.
func defaultsFor(notif *sinks.Notification) *inputDefaults {
	if len(notif.Alerts) != 1 {
		return nil
	}
	a := &notif.Alerts[0]
	switch {
	case a.PagerDuty != nil:
		e := a.PagerDuty
		d := &inputDefaults{relay: true, fields: map[string]string{
			"description": e.Summary, "severity": e.Severity, "source": e.Source,
			"component": e.Component, "group": e.Group, "class": e.Class,
			"client": e.Client, "client_url": e.ClientURL, "timestamp": e.Timestamp,
		}}
		if len(e.CustomDetails) > 0 {
			d.details = json.RawMessage(e.CustomDetails)
		}
		for _, l := range e.Links {
			d.links = append(d.links, l)
		}
		for _, im := range e.Images {
			d.images = append(d.images, im)
		}
		return d
	case notif.Source.Input == inputMackerel:
		return mackerelDefaults(a)
	}
	return nil
}

// mackerelDefaults read like Mackerel's own notification: the title
// "[CRITICAL] monitor on host: message", Mackerel's status as severity,
// the alert's page as client URL and link, the graph as image.
func mackerelDefaults(a *sinks.Alert) *inputDefaults {
	ann, ls := a.Annotations, a.Labels
	source := ls["host"]
	if source == "" {
		source = ls["service"]
	}
	if source == "" {
		source = "Mackerel"
	}
	d := &inputDefaults{fields: map[string]string{
		"description": ann["title"],
		"severity":    ls["severity"],
		"source":      source,
		"class":       ls["type"],
		"component":   ls["role"],
		"group":       ls["service"],
		"client":      "Mackerel",
		// Events other than alerts (an alert group, a host's status) have
		// no alert page; never Alertmanager's relative default.
		"client_url": firstOf(ann["alert_url"], ann["alert_group_url"], ann["host_url"], "https://mackerel.io/"),
		"timestamp":  a.StartsAt.UTC().Format(time.RFC3339),
	}}
	if d.fields["description"] == "" {
		d.fields["description"] = ann["summary"]
	}
	details := map[string]any{}
	for k, v := range ann {
		if k != "title" && k != "summary" {
			details[k] = v
		}
	}
	for k, v := range ls {
		details[k] = v
	}
	d.details = details
	if u := ann["alert_url"]; u != "" {
		d.links = append(d.links, sinks.PDLink{Href: u, Text: "Mackerel alert"})
	}
	if u := ann["alert_group_url"]; u != "" {
		d.links = append(d.links, sinks.PDLink{Href: u, Text: "Mackerel alert group"})
	}
	if u := ann["host_url"]; u != "" {
		d.links = append(d.links, sinks.PDLink{Href: u, Text: "Host " + ls["host"]})
	}
	// PagerDuty shows only images served over HTTPS.
	if u := ann["image_url"]; strings.HasPrefix(u, "https://") {
		d.images = append(d.images, sinks.PDImage{Src: u, Href: ann["alert_url"], Alt: a.Labels["alertname"]})
	}
	return d
}

// Event renders the PagerDuty event for a notification; nil means nothing is
// to be sent. What the user's config sets is rendered from its templates;
// what it leaves out comes from the input the alert arrived by (see
// defaultsFor), and for Alertmanager alerts from Alertmanager's defaults.
func (n *Notifier) Event(notif *sinks.Notification) (*pd.V2Event, error) {
	ev, _, err := n.event(notif, false, "")
	return ev, err
}

// event is Event; quiet (a preview) counts and logs nothing. body is the
// event as json.Marshal encodes it (the size check encodes it anyway: a
// second encoding was 2% of a drain's CPU), nil when ev is nil or its
// details were replaced after encoding.
//
// pin is the dedup_key of the incident the target holds open for this key
// (sinks.Call.Pinned), "" when none: while an incident is open its
// updates, acknowledge and resolve carry the key it was opened with,
// whatever the dedup_key template renders for them now (a group member
// that left, a resolve whose sender sent no payload).
func (n *Notifier) event(notif *sinks.Notification, quiet bool, pin string) (ev *pd.V2Event, body []byte, err error) {
	action := ActionTrigger
	if notif.Status() == sinks.StatusResolved {
		action = ActionResolve
		if !n.conf.SendResolved {
			return nil, nil, nil
		}
	} else if len(notif.Alerts) == 1 && notif.Alerts[0].Action == sinks.ActionAcknowledge {
		action = ActionAcknowledge
	}
	dedupKey := pin
	if dedupKey == "" {
		if dedupKey, err = n.dedupKey(notif, quiet); err != nil {
			return nil, nil, err
		}
	}
	if n.conf.RoutingKey == "" {
		return nil, nil, errors.New("routing key is empty")
	}
	ev = &pd.V2Event{RoutingKey: string(n.conf.RoutingKey), Action: action, DedupKey: dedupKey}
	defs := defaultsFor(notif)
	// A PagerDuty sender's acknowledge or resolve without a payload is
	// passed on as it came: key, action, nothing else.
	if defs == nil && action != ActionTrigger && notif.Source.Input == inputPagerDuty && len(notif.Alerts) == 1 {
		return ev, nil, nil
	}
	data := notif.TemplateData()
	exec := func(text string) (string, error) {
		if f, ok := n.shipped[text]; ok {
			return f(data), nil
		}
		return sinks.ExecuteText(n.tmpl, text, data)
	}
	// A template that fails for this alert (the start-up check renders
	// only a sample alert, and refuses the config when that fails: checkErr)
	// gives the field its default (fieldDefault), counted and logged: one
	// cosmetic field must not cost the page.
	var checkErr error
	tmpl := func(field, text string) string {
		s, err := exec(text)
		if err == nil {
			return s
		}
		if n.checking {
			checkErr = cmp.Or(checkErr, fmt.Errorf("%s: template %q: %w", field, text, err))
			return ""
		}
		n.replaced(fieldFallbacks, quiet, field)
		n.warnOnce(quiet, "template:"+field, "A template failed for an alert; the field takes its default",
			"field", field, "key", notif.Key, "err", err)
		if def := fieldDefault(field); def != "" && def != text {
			if s, err := exec(def); err == nil {
				return s
			}
		}
		return ""
	}
	// required gives a field PagerDuty requires of a trigger its default
	// when the user's template rendered it blank, and Alertmanager's
	// subject or "alertfan" when that is blank too
	// (https://developer.pagerduty.com/docs/send-alert-event: summary and
	// source are required; PagerDuty answers 400 "'payload.summary' is
	// missing or blank").
	required := func(field, v, last string) string {
		if action != ActionTrigger || strings.TrimSpace(v) != "" {
			return v
		}
		n.replaced(fieldFallbacks, quiet, field)
		n.warnOnce(quiet, "blank:"+field, "A field PagerDuty requires rendered blank for an alert; it takes its default",
			"field", field, "key", notif.Key)
		if def := fieldDefault(field); def != "" {
			if s, err := exec(def); err == nil && strings.TrimSpace(s) != "" {
				return s
			}
		}
		return last
	}
	// field renders the user's template, or takes the input's default.
	field := func(key, text string) string {
		if defs != nil && !n.conf.Explicit(key) {
			if v, ok := defs.fields[key]; ok && (defs.relay || v != "") {
				return v
			}
		}
		return tmpl(key, text)
	}
	summary, _ := sinks.TruncateRunes(required("description", field("description", n.conf.Description), strings.TrimSpace(subject(data))), maxSummaryRunes)
	ev.Client = field("client", n.conf.Client)
	ev.ClientURL = field("client_url", n.conf.ClientURL)
	ev.Payload = &pd.V2Payload{
		Summary:   summary,
		Source:    required("source", field("source", n.conf.Source), "alertfan"),
		Severity:  n.severity(field("severity", n.conf.Severity), action, quiet),
		Class:     field("class", n.conf.Class),
		Component: field("component", n.conf.Component),
		Group:     field("group", n.conf.Group),
	}
	if defs != nil {
		ev.Payload.Timestamp = defs.fields["timestamp"]
	}
	if defs != nil && !n.conf.Explicit("details") {
		if defs.details != nil {
			ev.Payload.Details = defs.details
		}
	} else {
		ev.Payload.Details = n.renderDetails(data, func(key string, err error) {
			if n.checking {
				checkErr = cmp.Or(checkErr, fmt.Errorf("details.%s: %w", key, err))
				return
			}
			n.replaced(fieldFallbacks, quiet, "details."+key)
			n.warnOnce(quiet, "template:details."+key, "A details template failed for an alert; the detail holds the error instead",
				"field", "details."+key, "key", notif.Key, "err", err)
		})
	}
	if defs != nil && !n.conf.Explicit("images") {
		ev.Images = defs.images
	} else {
		for i, img := range n.conf.Images {
			im := map[string]string{
				"src":  tmpl(fmt.Sprintf("images[%d].src", i), img.Src),
				"alt":  tmpl(fmt.Sprintf("images[%d].alt", i), img.Alt),
				"href": tmpl(fmt.Sprintf("images[%d].href", i), img.Href),
			}
			if im["src"] != "" {
				ev.Images = append(ev.Images, im)
			}
		}
	}
	if defs != nil && !n.conf.Explicit("links") {
		ev.Links = defs.links
	} else {
		for i, l := range n.conf.Links {
			lk := map[string]string{
				"href": tmpl(fmt.Sprintf("links[%d].href", i), l.Href),
				"text": tmpl(fmt.Sprintf("links[%d].text", i), l.Text),
			}
			if lk["href"] != "" {
				ev.Links = append(ev.Links, lk)
			}
		}
	}
	if checkErr != nil {
		return nil, nil, checkErr
	}
	// As Alertmanager: an event over PagerDuty's size limit loses its custom
	// details rather than being refused.
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, nil, fmt.Errorf("encode event: %w", err)
	}
	if len(b)+1 > maxEventSize {
		// json.Marshal writes <, > and & as six bytes each: an event of
		// HTML that PagerDuty takes as sent may only look too big.
		if plain, err := marshalPlain(ev); err == nil && len(plain)+1 <= maxEventSize {
			return ev, plain, nil
		}
	}
	if len(b)+1 > maxEventSize {
		ev.Payload.Details = map[string]any{"error": fmt.Sprintf(
			"Custom details have been removed because the original event exceeds the maximum size of %s",
			units.MetricBytes(maxEventSize).String())}
		if !quiet {
			n.logger.Warn("Truncated details because the event exceeds PagerDuty's size limit",
				"size", units.MetricBytes(len(b)).String(), "key", notif.Key)
		}
		if b, err = json.Marshal(ev); err != nil {
			return nil, nil, fmt.Errorf("encode event: %w", err)
		}
		if len(b)+1 > maxEventSize {
			// Still too big: the free-text fields (a template that fills
			// class or source with every alert of a big group) are cut,
			// and the links and images left out, rather than PagerDuty
			// refusing the page with 413.
			p := ev.Payload
			for _, f := range []*string{&p.Source, &p.Class, &p.Component, &p.Group, &ev.Client, &ev.ClientURL} {
				*f, _ = sinks.TruncateRunes(*f, maxFieldRunes)
			}
			ev.Links, ev.Images = nil, nil
			if !quiet {
				n.logger.Warn("Cut source, class, component, group and client and left out links and images: the event still exceeded PagerDuty's size limit without its details",
					"key", notif.Key)
			}
		}
		return ev, nil, nil
	}
	return ev, b, nil
}

// fieldDefault is the text a field takes when its template fails or a
// required field renders blank: DefaultConfig's (source defaults to the
// client, as in Alertmanager), or "" for a field with no default (class,
// component, group, images, links: left out of the event; severity:
// severity_fallback).
func fieldDefault(field string) string {
	switch field {
	case "description":
		return DefaultConfig.Description
	case "client", "source":
		return DefaultConfig.Client
	case "client_url":
		return DefaultConfig.ClientURL
	}
	// severity too: its "" becomes severity_fallback (severity).
	return ""
}

// replaced counts a replaced value under the target (and the further
// labels c has, such as the field), except in the start-up render of a
// sample alert and in a preview (quiet).
func (n *Notifier) replaced(c *prometheus.CounterVec, quiet bool, labels ...string) {
	if !n.checking && !quiet {
		c.WithLabelValues(append([]string{n.target}, labels...)...).Inc()
	}
}

// firstOf is the first non-empty value.
func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
