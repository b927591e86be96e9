// Package sinks owns what every destination shares: the alert model that
// sinks consume, the delivery error type that tells the queue whether and
// when to retry, the HTTP status classifier and the per-key rate limiters.
package sinks

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"

	"github.com/prometheus/alertmanager/template"
)

// Alert status values, as Alertmanager spells them.
const (
	StatusFiring   = "firing"
	StatusResolved = "resolved"
)

// Alert actions: what an input said beyond firing or resolved.
const (
	// ActionAcknowledge is a PagerDuty sender's acknowledge.
	ActionAcknowledge = "acknowledge"
	// ActionChange is a PagerDuty change event.
	ActionChange = "change"
	// ActionEvent is a Mackerel event other than an alert.
	ActionEvent = "event"
)

// Alert is one alert in the model every input is turned into.
type Alert struct {
	// Identity is stable for the life of one alert across repeats and
	// restarts: "am:<fingerprint>", "pd:<routing key hash>:<dedup_key>" or
	// "mackerel:<id>".
	Identity     string            `json:"identity"`
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
	Fingerprint  string            `json:"fingerprint"`
	// Action carries an input's own verb where the status cannot (one of
	// the Action constants); empty otherwise.
	Action string `json:"action,omitempty"`
	// PagerDuty is the PagerDuty Events API v2 event the alert arrived as
	// (input pagerduty only), so a pagerduty_configs target without
	// templates of its own relays it as it came.
	PagerDuty *PDEvent `json:"pagerduty,omitempty"`
}

// PDEvent is what a PagerDuty Events API v2 sender said, field by field,
// as https://developer.pagerduty.com/docs/send-alert-event documents it.
// The routing key is never kept.
type PDEvent struct {
	DedupKey  string `json:"dedup_key,omitempty"`
	Summary   string `json:"summary,omitempty"`
	Source    string `json:"source,omitempty"`
	Severity  string `json:"severity,omitempty"`
	Timestamp string `json:"timestamp,omitempty"`
	Component string `json:"component,omitempty"`
	Group     string `json:"group,omitempty"`
	Class     string `json:"class,omitempty"`
	// CustomDetails is payload.custom_details exactly as sent: any JSON
	// value (object, string, number, array).
	CustomDetails json.RawMessage `json:"custom_details,omitempty"`
	Images        []PDImage       `json:"images,omitempty"`
	Links         []PDLink        `json:"links,omitempty"`
	Client        string          `json:"client,omitempty"`
	ClientURL     string          `json:"client_url,omitempty"`
}

// PDImage is an event image; only src is required by PagerDuty.
type PDImage struct {
	Src  string `json:"src"`
	Href string `json:"href,omitempty"`
	Alt  string `json:"alt,omitempty"`
}

// PDLink is an event link; only href is required by PagerDuty.
type PDLink struct {
	Href string `json:"href"`
	Text string `json:"text,omitempty"`
}

// OneOff reports whether the alert is an event that never resolves (a
// change event, a Mackerel host event), so its state can be cleaned up
// once delivered.
func (a *Alert) OneOff() bool { return a.Action == ActionChange || a.Action == ActionEvent }

// Source describes the notification an alert arrived in.
type Source struct {
	Input           string            `json:"input"` // alertmanager | pagerduty | mackerel
	Receiver        string            `json:"receiver,omitempty"`
	GroupKey        string            `json:"groupKey,omitempty"`
	ExternalURL     string            `json:"externalURL,omitempty"`
	GroupLabels     map[string]string `json:"groupLabels,omitempty"`
	TruncatedAlerts uint64            `json:"truncatedAlerts,omitempty"`
	// The message's common labels and annotations are not kept: every
	// stored notification would carry them once per alert, and templates
	// get them recomputed from the notification's own alerts
	// (TemplateData). Payloads stored before they were dropped still
	// decode: their commonLabels and commonAnnotations are ignored.
}

// Notification is the unit a sink delivers: the latest known state of one
// work item of one destination (one alert, or one Alertmanager group).
type Notification struct {
	// Key identifies the work item within its destination: an alert
	// identity, or the group key in group mode.
	Key    string  `json:"key"`
	Source Source  `json:"source"`
	Alerts []Alert `json:"alerts"`
	// Truncated is, in group mode, how many alerts of the group the message
	// left out (Alertmanager's truncatedAlerts: webhook_configs max_alerts).
	// Alertmanager cuts the group's alerts, sorted by labels and not by
	// status, to max_alerts and computes the message's status from the
	// alerts kept, so a message listing only resolved alerts may leave out
	// alerts that still fire: the group is not resolved (Status). 0 in
	// alert mode, where each alert has its own state.
	Truncated uint64 `json:"truncated,omitempty"`
	// AcceptedAt is when the newest state was accepted by intake; the
	// accept → delivered latency is measured from it.
	AcceptedAt time.Time `json:"acceptedAt"`
}

// Status is "resolved" when every alert is resolved, as Alertmanager decides
// a group's status, and the message left none out (Truncated): alerts it
// left out may still fire, so a group with any is "firing".
func (n *Notification) Status() string {
	if n.Truncated > 0 {
		return StatusFiring
	}
	for _, a := range n.Alerts {
		if a.Status != StatusResolved {
			return StatusFiring
		}
	}
	return StatusResolved
}

// TemplateData builds Alertmanager's template data so every Alertmanager
// template keeps working. Common labels and annotations are recomputed from
// the alerts this notification holds, which in alert mode is exactly one.
func (n *Notification) TemplateData() *template.Data {
	d := &template.Data{
		Receiver:          n.Source.Receiver,
		Status:            n.Status(),
		Alerts:            make(template.Alerts, 0, len(n.Alerts)),
		GroupLabels:       template.KV{},
		CommonLabels:      template.KV{},
		CommonAnnotations: template.KV{},
		RouteLabels:       template.KV{},
		ExternalURL:       n.Source.ExternalURL,
	}
	for _, a := range n.Alerts {
		d.Alerts = append(d.Alerts, template.Alert{
			Status:       a.Status,
			Labels:       copyKV(a.Labels),
			Annotations:  copyKV(a.Annotations),
			StartsAt:     a.StartsAt,
			EndsAt:       a.EndsAt,
			GeneratorURL: a.GeneratorURL,
			Fingerprint:  a.Fingerprint,
		})
	}
	for k, v := range n.Source.GroupLabels {
		d.GroupLabels[k] = v
	}
	if len(n.Alerts) > 0 {
		d.CommonLabels = copyKV(n.Alerts[0].Labels)
		d.CommonAnnotations = copyKV(n.Alerts[0].Annotations)
		for _, a := range n.Alerts[1:] {
			intersect(d.CommonLabels, a.Labels)
			intersect(d.CommonAnnotations, a.Annotations)
		}
	}
	return d
}

func copyKV(m map[string]string) template.KV {
	kv := make(template.KV, len(m))
	for k, v := range m {
		kv[k] = v
	}
	return kv
}

func intersect(common template.KV, other map[string]string) {
	for k, v := range common {
		if other[k] != v {
			delete(common, k)
		}
	}
}

// Digest identifies what a notification says, not when it was sent: the
// alerts' identities, statuses, actions, labels, annotations and generator
// URLs, and the end time of resolved ones. Alertmanager's resends and HA
// replicas' copies of one state have the same digest: a firing alert's
// endsAt is Alertmanager's moving guess, and its startsAt may differ
// between replicas (each keeps the earliest it saw), so both are left out.
// A group's count of alerts left out (Truncated) is part of it: the group
// changed beyond the alerts listed.
func (n *Notification) Digest() string {
	type content struct {
		Identity     string            `json:"i"`
		Status       string            `json:"s"`
		Action       string            `json:"a,omitempty"`
		Labels       map[string]string `json:"l"`
		Annotations  map[string]string `json:"n,omitempty"`
		EndsAt       time.Time         `json:"e"`
		GeneratorURL string            `json:"g,omitempty"`
	}
	cs := make([]content, len(n.Alerts))
	for i, a := range n.Alerts {
		cs[i] = content{a.Identity, a.Status, a.Action, a.Labels, a.Annotations, time.Time{}, a.GeneratorURL}
		if a.Status == StatusResolved {
			cs[i].EndsAt = a.EndsAt
		}
	}
	b, _ := json.Marshal(cs) // maps marshal with sorted keys: stable
	if n.Truncated > 0 {
		// Appended only when set, so that every digest stored before
		// Truncated existed stays what it was (no resend after an upgrade).
		b = strconv.AppendUint(append(b, " truncated "...), n.Truncated, 10)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
