package intake

import (
	"fmt"
	"time"

	"github.com/prometheus/common/model"

	"github.com/alertfan/alertfan/sinks"
)

// amMessage is Alertmanager's webhook body (version "4"). Alertmanager's own
// struct lives in notify/webhook, which would pull in ~110 modules; the
// message is small enough to define here.
type amMessage struct {
	Version         string            `json:"version"`
	GroupKey        string            `json:"groupKey"`
	TruncatedAlerts uint64            `json:"truncatedAlerts"`
	Status          string            `json:"status"`
	Receiver        string            `json:"receiver"`
	GroupLabels     map[string]string `json:"groupLabels"`
	// CommonLabels and CommonAnnotations are decoded only so that a wrong
	// type is refused naming the field, as before; they are not kept:
	// templates get them computed from the alerts each notification holds
	// (sinks.Notification.TemplateData), in alert mode one alert of the
	// message.
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []amAlert         `json:"alerts"`
}

type amAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     string            `json:"startsAt"`
	EndsAt       string            `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// DecodeAlertmanager decodes and validates an Alertmanager webhook body.
func DecodeAlertmanager(body []byte) (sinks.Source, []sinks.Alert, error) {
	var m amMessage
	if err := decodeJSON(body, &m); err != nil {
		return sinks.Source{}, nil, err
	}
	var errs Errors
	if m.Version != "4" {
		errs = append(errs, fieldErr("version", "must be \"4\" (Alertmanager webhook protocol), got %q", sinks.Abbreviate(m.Version, 32)))
	}
	if len(m.Alerts) == 0 {
		errs = append(errs, fieldErr("alerts", "must hold at least one alert"))
	}
	errs = append(errs, checkLabels("groupLabels", m.GroupLabels, false)...)
	// A groupKey has no length cap but the body's: with group_by: ['...']
	// Alertmanager puts every label in it, and it does not retry a 400.
	// The store keeps a bounded form where it indexes one (queue.StoreKey).
	errs = append(errs, checkKeyText("groupKey", m.GroupKey, 0)...)
	alerts := make([]sinks.Alert, 0, len(m.Alerts))
	for i, a := range m.Alerts {
		f := fmt.Sprintf("alerts[%d]", i)
		if a.Status != sinks.StatusFiring && a.Status != sinks.StatusResolved {
			errs = append(errs, fieldErr(f+".status", "must be \"firing\" or \"resolved\", got %q", sinks.Abbreviate(a.Status, 32)))
		}
		errs = append(errs, checkLabels(f+".labels", a.Labels, true)...)
		errs = append(errs, checkLabels(f+".annotations", a.Annotations, false)...)
		startsAt, err := parseTime(a.StartsAt)
		switch {
		case err != nil:
			errs = append(errs, fieldErr(f+".startsAt", "not an RFC 3339 time: %q", sinks.Abbreviate(a.StartsAt, 40)))
		case startsAt.IsZero():
			errs = append(errs, fieldErr(f+".startsAt", "required"))
		}
		endsAt, err := parseTime(a.EndsAt)
		if err != nil {
			errs = append(errs, fieldErr(f+".endsAt", "not an RFC 3339 time: %q", sinks.Abbreviate(a.EndsAt, 40)))
		}
		fp := a.Fingerprint
		if fp == "" {
			ls := make(model.LabelSet, len(a.Labels))
			for k, v := range a.Labels {
				ls[model.LabelName(k)] = model.LabelValue(v)
			}
			fp = ls.Fingerprint().String()
		} else if len(fp) > 64 {
			errs = append(errs, fieldErr(f+".fingerprint", "longer than 64 characters"))
		} else {
			errs = append(errs, checkKeyText(f+".fingerprint", fp, 0)...)
		}
		alerts = append(alerts, sinks.Alert{
			Identity:     "am:" + fp,
			Status:       a.Status,
			Labels:       a.Labels,
			Annotations:  a.Annotations,
			StartsAt:     startsAt,
			EndsAt:       endsAt,
			GeneratorURL: a.GeneratorURL,
			Fingerprint:  fp,
		})
	}
	if len(errs) > 0 {
		return sinks.Source{}, nil, errs
	}
	src := sinks.Source{
		Input:           InputAlertmanager,
		Receiver:        m.Receiver,
		GroupKey:        m.GroupKey,
		ExternalURL:     m.ExternalURL,
		GroupLabels:     m.GroupLabels,
		TruncatedAlerts: m.TruncatedAlerts,
	}
	return src, alerts, nil
}

// parseTime reads an RFC 3339 time; empty is the zero time.
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}
