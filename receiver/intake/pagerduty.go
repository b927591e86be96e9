package intake

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/alertfan/alertfan/sinks"
)

// PagerDuty Events API v2 limits, as PagerDuty documents them.
const (
	pdRoutingKeyLen = 32
	pdMaxDedupKey   = 255
	pdMaxSummary    = 1024
	// PDMaxEventSize is PagerDuty's limit on one event ("Events API
	// payloads are limited to 512 KB",
	// https://developer.pagerduty.com/docs/events-api-v2-overview), counted
	// as Alertmanager counts it.
	PDMaxEventSize = 512000
)

// PDEvent is a PagerDuty Events API v2 alert event, as
// https://developer.pagerduty.com/docs/send-alert-event documents it.
type PDEvent struct {
	RoutingKey  string          `json:"routing_key"`
	EventAction string          `json:"event_action"`
	DedupKey    string          `json:"dedup_key"`
	Payload     *PDPayload      `json:"payload"`
	Images      []sinks.PDImage `json:"images"`
	Links       []sinks.PDLink  `json:"links"`
	Client      string          `json:"client"`
	ClientURL   string          `json:"client_url"`
}

// PDPayload is an event's payload. custom_details may be any JSON value:
// PagerDuty documents an object, but accepts (and shows) a string or a
// number as well, and well-known senders send strings.
type PDPayload struct {
	Summary       string          `json:"summary"`
	Source        string          `json:"source"`
	Severity      string          `json:"severity"`
	Timestamp     string          `json:"timestamp"`
	Component     string          `json:"component"`
	Group         string          `json:"group"`
	Class         string          `json:"class"`
	CustomDetails json.RawMessage `json:"custom_details"`
}

// PDResult is a decoded event: the alert and the routing key it came with.
type PDResult struct {
	RoutingKey string
	DedupKey   string
	Alert      sinks.Alert
	// HasPayload is false for acknowledge/resolve events without one; the
	// receiver then routes by the labels remembered from the trigger.
	HasPayload bool
}

var pdSeverities = map[string]bool{"critical": true, "error": true, "warning": true, "info": true}

// DecodePagerDuty decodes and validates an Events API v2 alert event. Its
// error texts follow PagerDuty's ("… is missing or blank"), one per field.
func DecodePagerDuty(body []byte, now time.Time) (*PDResult, error) {
	if len(body) > PDMaxEventSize {
		return nil, Errors{fieldErr("", "Event object is too large (PagerDuty's limit is 512 KB)")}
	}
	var ev PDEvent
	if err := decodeJSON(body, &ev); err != nil {
		return nil, err
	}
	errs := checkRoutingKey(ev.RoutingKey)
	action := ev.EventAction
	switch action {
	case "trigger", "acknowledge", "resolve":
	case "":
		errs = append(errs, fieldErr("event_action", "'event_action' is missing or blank"))
	default:
		errs = append(errs, fieldErr("event_action", "'event_action' is invalid (must be one of: trigger, acknowledge, resolve)"))
	}
	if utf8.RuneCountInString(ev.DedupKey) > pdMaxDedupKey {
		errs = append(errs, fieldErr("dedup_key", "'dedup_key' is too long (maximum %d characters)", pdMaxDedupKey))
	}
	if action != "trigger" && action != "" && ev.DedupKey == "" {
		errs = append(errs, fieldErr("dedup_key", "'dedup_key' is missing or blank (required for %s)", action))
	}
	var startsAt time.Time
	if action == "trigger" {
		errs = append(errs, checkPayload(ev.Payload, &startsAt)...)
	} else if ev.Payload != nil && ev.Payload.Timestamp != "" {
		if t, err := parsePDTime(ev.Payload.Timestamp); err == nil {
			startsAt = t
		}
	}
	if !utf8.ValidString(ev.DedupKey) {
		errs = append(errs, fieldErr("dedup_key", "'dedup_key' is not valid UTF-8"))
	}
	errs = append(errs, checkKeyText("dedup_key", ev.DedupKey, 0)...)
	if len(errs) > 0 {
		return nil, errs
	}
	if ev.DedupKey == "" {
		ev.DedupKey = newDedupKey()
	}
	if startsAt.IsZero() {
		startsAt = now
	}
	res := &PDResult{RoutingKey: ev.RoutingKey, DedupKey: ev.DedupKey, HasPayload: ev.Payload != nil && ev.Payload.Summary != ""}
	a := sinks.Alert{
		Identity:     pdIdentity(ev.RoutingKey, ev.DedupKey),
		Status:       sinks.StatusFiring,
		Labels:       map[string]string{"alertname": "PagerDutyEvent"},
		Annotations:  map[string]string{},
		StartsAt:     startsAt,
		GeneratorURL: ev.ClientURL,
		Fingerprint:  ev.DedupKey,
	}
	switch action {
	case "resolve":
		a.Status = sinks.StatusResolved
		a.EndsAt = now
	case "acknowledge":
		a.Action = sinks.ActionAcknowledge
	}
	if p := ev.Payload; p != nil {
		setIf(a.Labels, "severity", p.Severity)
		setIf(a.Labels, "source", p.Source)
		setIf(a.Labels, "component", p.Component)
		setIf(a.Labels, "group", p.Group)
		setIf(a.Labels, "class", p.Class)
		// PagerDuty's source is "the unique location of the affected
		// system": Prometheus's instance. The alert's name is its class,
		// else the sending tool, so titles read "[CRITICAL] Grafana on
		// grafana-host: …" rather than a placeholder.
		setIf(a.Labels, "instance", p.Source)
		switch {
		// Grafana sends class "default" when its contact point sets none
		// (grafana/alerting: DefaultPagerDutyClass): a placeholder, not a
		// name.
		case p.Class != "" && p.Class != "default":
			a.Labels["alertname"] = p.Class
		case ev.Client != "":
			a.Labels["alertname"] = ev.Client
		}
		// custom_details first: the event's own summary wins over a
		// detail that happens to be called "summary".
		detailAnnotations(a.Annotations, p.CustomDetails)
		setIf(a.Annotations, "summary", p.Summary)
	}
	setIf(a.Annotations, "client", ev.Client)
	setIf(a.Annotations, "client_url", ev.ClientURL)
	links, images := pdContext(ev.Links, ev.Images)
	for i, l := range links {
		a.Annotations[fmt.Sprintf("link_%d", i)] = l.Href
		setIf(a.Annotations, fmt.Sprintf("link_%d_text", i), l.Text)
	}
	for i, im := range images {
		a.Annotations[fmt.Sprintf("image_%d", i)] = im.Src
	}
	if res.HasPayload {
		p := ev.Payload
		a.PagerDuty = &sinks.PDEvent{
			DedupKey: ev.DedupKey, Summary: p.Summary, Source: p.Source, Severity: p.Severity,
			Timestamp: p.Timestamp, Component: p.Component, Group: p.Group, Class: p.Class,
			Images: images, Links: links, Client: ev.Client, ClientURL: ev.ClientURL,
		}
		if !isJSONNull(p.CustomDetails) {
			a.PagerDuty.CustomDetails = compactJSON(p.CustomDetails)
		}
	}
	res.Alert = a
	return res, nil
}

func checkRoutingKey(k string) Errors {
	switch {
	case k == "":
		return Errors{fieldErr("routing_key", "'routing_key' is missing or blank")}
	case len(k) != pdRoutingKeyLen:
		return Errors{fieldErr("routing_key", "Length of 'routing_key' is incorrect (should be %d characters)", pdRoutingKeyLen)}
	}
	return nil
}

func checkPayload(p *PDPayload, startsAt *time.Time) Errors {
	if p == nil {
		return Errors{fieldErr("payload", "'payload' is missing or blank")}
	}
	var errs Errors
	switch {
	case strings.TrimSpace(p.Summary) == "":
		errs = append(errs, fieldErr("payload.summary", "'payload.summary' is missing or blank"))
	case utf8.RuneCountInString(p.Summary) > pdMaxSummary:
		errs = append(errs, fieldErr("payload.summary", "'payload.summary' is too long (maximum %d characters)", pdMaxSummary))
	}
	if strings.TrimSpace(p.Source) == "" {
		errs = append(errs, fieldErr("payload.source", "'payload.source' is missing or blank"))
	}
	switch {
	case p.Severity == "":
		errs = append(errs, fieldErr("payload.severity", "'payload.severity' is missing or blank"))
	case !pdSeverities[p.Severity]:
		errs = append(errs, fieldErr("payload.severity", "'payload.severity' is invalid (must be one of: critical, error, warning, info)"))
	}
	if p.Timestamp != "" {
		t, err := parsePDTime(p.Timestamp)
		if err != nil {
			errs = append(errs, fieldErr("payload.timestamp", "'payload.timestamp' is not a valid ISO 8601 date-time"))
		}
		*startsAt = t
	}
	for _, f := range []struct{ name, v string }{{"summary", p.Summary}, {"source", p.Source}, {"component", p.Component}, {"group", p.Group}, {"class", p.Class}} {
		if !utf8.ValidString(f.v) {
			errs = append(errs, fieldErr("payload."+f.name, "not valid UTF-8"))
		}
	}
	return errs
}

// pdTimeLayouts are the ISO 8601 date-times PagerDuty takes in
// payload.timestamp (https://developer.pagerduty.com/docs/send-alert-event;
// its own example is "2015-07-17T08:42:58.315+0000"): "T" or a space
// between date and time, optional fractional seconds, and a zone of "Z",
// "±hh:mm", "±hhmm" or "±hh". A time without a zone is taken as UTC.
var pdTimeLayouts = []string{
	"2006-01-02T15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02T15:04:05.999999999Z07",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02T15:04Z07:00",
	"2006-01-02T15:04Z0700",
	"2006-01-02T15:04",
}

func parsePDTime(s string) (time.Time, error) {
	v := strings.TrimSpace(s)
	if len(v) > 10 && v[10] == ' ' {
		v = v[:10] + "T" + v[11:]
	}
	if n := len(v); n > 0 && v[n-1] == 'z' {
		v = v[:n-1] + "Z"
	}
	for _, layout := range pdTimeLayouts {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("bad time %q", s)
}

// pdContext keeps the links and images PagerDuty would show: a link needs
// an href and an image a src (the other fields are optional); entries
// without them are dropped rather than refusing the event.
func pdContext(links []sinks.PDLink, images []sinks.PDImage) ([]sinks.PDLink, []sinks.PDImage) {
	var ls []sinks.PDLink
	for _, l := range links {
		if strings.TrimSpace(l.Href) != "" {
			ls = append(ls, l)
		}
	}
	var is []sinks.PDImage
	for _, im := range images {
		if strings.TrimSpace(im.Src) != "" {
			is = append(is, im)
		}
	}
	return ls, is
}

// detailAnnotations turns custom_details into annotations: each key of an
// object becomes one; any other value becomes the annotation
// "custom_details" (a string as it is, other JSON as the sender wrote it,
// compacted). Values are never decoded into Go numbers: an id such as
// 1234567890123456789 (Datadog's, Sentry's) is beyond float64's 2^53 and
// would reach the ticket as 1234567890123456800.
func detailAnnotations(ann map[string]string, raw json.RawMessage) {
	if isJSONNull(raw) {
		return
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) == nil {
		for k, v := range obj {
			ann[k] = detailString(v)
		}
		return
	}
	if json.Valid(raw) {
		ann["custom_details"] = detailString(raw)
	}
}

func isJSONNull(raw json.RawMessage) bool {
	t := strings.TrimSpace(string(raw))
	return t == "" || t == "null"
}

func compactJSON(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}

func setIf(m map[string]string, k, v string) {
	if v != "" {
		m[k] = v
	}
}

// detailString is one custom_details value as an annotation: a JSON
// string unquoted, anything else compacted as it came.
func detailString(raw json.RawMessage) string {
	var s string
	if !isJSONNull(raw) && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(compactJSON(raw))
}

// pdIdentity is a PagerDuty event's alert identity. PagerDuty keeps one
// incident per dedup_key within one integration (routing key), so two
// senders that happen to use the same dedup_key with different routing
// keys are two alerts (an Alertmanager config shared by two clusters sends
// the same sha256 group keys). The routing key appears only as a hash, of
// 128 bits: one of 32 bits (LegacyPDIdentity) let a sender who may post
// any routing key find, in minutes, a key whose events act on another
// sender's incident.
func pdIdentity(routingKey, dedupKey string) string {
	sum := sha256.Sum256([]byte(routingKey))
	return "pd:" + hex.EncodeToString(sum[:16]) + ":" + dedupKey
}

// LegacyPDIdentity is the identity releases before 128-bit hashes gave a
// PagerDuty event (a 32-bit hash of the routing key). An alert still open
// under it keeps it until it resolves, so that its acknowledge and resolve
// reach the incident and the issue it opened.
func LegacyPDIdentity(routingKey, dedupKey string) string {
	sum := sha256.Sum256([]byte(routingKey))
	return "pd:" + hex.EncodeToString(sum[:4]) + ":" + dedupKey
}

func newDedupKey() string {
	b := make([]byte, 16)
	rand.Read(b) //nolint:errcheck // crypto/rand never fails on Linux
	return hex.EncodeToString(b)
}

// PDChange is a decoded change event.
type PDChange struct {
	RoutingKey string
	Alert      sinks.Alert
}

// DecodePagerDutyChange decodes a PagerDuty change event
// (POST /v2/change/enqueue).
func DecodePagerDutyChange(body []byte, now time.Time) (*PDChange, error) {
	var ev struct {
		RoutingKey string `json:"routing_key"`
		Payload    *struct {
			Summary       string          `json:"summary"`
			Source        string          `json:"source"`
			Timestamp     string          `json:"timestamp"`
			CustomDetails json.RawMessage `json:"custom_details"`
		} `json:"payload"`
		Links []sinks.PDLink `json:"links"`
	}
	if err := decodeJSON(body, &ev); err != nil {
		return nil, err
	}
	errs := checkRoutingKey(ev.RoutingKey)
	ts := now
	if ev.Payload == nil {
		errs = append(errs, fieldErr("payload", "'payload' is missing or blank"))
	} else {
		if strings.TrimSpace(ev.Payload.Summary) == "" {
			errs = append(errs, fieldErr("payload.summary", "'payload.summary' is missing or blank"))
		} else if utf8.RuneCountInString(ev.Payload.Summary) > pdMaxSummary {
			errs = append(errs, fieldErr("payload.summary", "'payload.summary' is too long (maximum %d characters)", pdMaxSummary))
		}
		if ev.Payload.Timestamp != "" {
			t, err := parsePDTime(ev.Payload.Timestamp)
			if err != nil {
				errs = append(errs, fieldErr("payload.timestamp", "'payload.timestamp' is not a valid ISO 8601 date-time"))
			}
			ts = t
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	key := newDedupKey()
	a := sinks.Alert{
		Identity:    "pdchange:" + key,
		Status:      sinks.StatusFiring,
		Action:      sinks.ActionChange,
		Labels:      map[string]string{"alertname": "PagerDutyChange", "event_type": "change"},
		Annotations: map[string]string{"summary": ev.Payload.Summary},
		StartsAt:    ts,
		Fingerprint: key,
	}
	setIf(a.Labels, "source", ev.Payload.Source)
	detailAnnotations(a.Annotations, ev.Payload.CustomDetails)
	links, _ := pdContext(ev.Links, nil)
	for i, l := range links {
		a.Annotations[fmt.Sprintf("link_%d", i)] = l.Href
	}
	a.PagerDuty = &sinks.PDEvent{Summary: ev.Payload.Summary, Source: ev.Payload.Source, Timestamp: ev.Payload.Timestamp, Links: links}
	if !isJSONNull(ev.Payload.CustomDetails) {
		a.PagerDuty.CustomDetails = compactJSON(ev.Payload.CustomDetails)
	}
	return &PDChange{RoutingKey: ev.RoutingKey, Alert: a}, nil
}
