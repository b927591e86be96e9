package pagerduty

import (
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/alertmanager/template"

	"github.com/alertfan/alertfan/sinks"
)

// Alertmanager's default description, client, client_url and custom
// details, rendered by Go code instead of its templates. A queue draining
// to a fast target spent a quarter of its CPU executing them
// (BENCHMARKS.md, "Drain: Alertmanager's defaults without their
// templates"). Each function here gives exactly what the template gives
// (TestDefaultsAsTheTemplates compares them on random data,
// TestShippedEventsAsTemplated whole events), and declines (false)
// whatever it does not cover; the template then renders it. A user
// template file that redefines a template one of them stands for turns
// that one off (shippedTexts).

// The texts the shortcuts stand for: DefaultConfig's description,
// client and client_url, and DefaultDetails.
const (
	descriptionText = `{{ template "pagerduty.default.description" .}}`
	clientText      = `{{ template "pagerduty.default.client" . }}`
	clientURLText   = `{{ template "pagerduty.default.clientURL" . }}`
	firingText      = `{{ .Alerts.Firing | toJson }}`
	resolvedText    = `{{ .Alerts.Resolved | toJson }}`
	numFiringText   = `{{ .Alerts.Firing | len }}`
	numResolvedText = `{{ .Alerts.Resolved | len }}`
)

// shippedTexts are the default texts tmpl still renders as Alertmanager
// ships them (a user template file may redefine the templates they call),
// each with its Go rendering.
func shippedTexts(tmpl *template.Template) map[string]func(*template.Data) string {
	out := map[string]func(*template.Data) string{}
	if sinks.Shipped(tmpl, "pagerduty.default.description", "__subject") {
		out[descriptionText] = subject
	}
	if sinks.Shipped(tmpl, "pagerduty.default.client", "__alertmanager") {
		out[clientText] = func(*template.Data) string { return "Alertmanager" }
	}
	if sinks.Shipped(tmpl, "pagerduty.default.clientURL", "__alertmanagerURL") {
		out[clientURLText] = alertmanagerURL
	}
	return out
}

// alertmanagerURL is Alertmanager's "__alertmanagerURL" template:
//
//	{{ .ExternalURL }}/#/alerts?receiver={{ .Receiver | urlquery }}
func alertmanagerURL(d *template.Data) string {
	return d.ExternalURL + "/#/alerts?receiver=" + url.QueryEscape(d.Receiver)
}

// subject is Alertmanager's "__subject" template (template/default.tmpl):
//
//	[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}]
//	{{ .GroupLabels.SortedPairs.Values | join " " }}
//	{{ if gt (len .CommonLabels) (len .GroupLabels) }}({{ with .CommonLabels.Remove .GroupLabels.Names }}{{ .Values | join " " }}{{ end }}){{ end }}
func subject(d *template.Data) string {
	var b strings.Builder
	b.WriteByte('[')
	b.WriteString(strings.ToUpper(d.Status))
	if d.Status == "firing" {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(len(d.Alerts.Firing())))
	}
	b.WriteString("] ")
	b.WriteString(strings.Join(d.GroupLabels.SortedPairs().Values(), " "))
	b.WriteByte(' ')
	if len(d.CommonLabels) > len(d.GroupLabels) {
		b.WriteByte('(')
		if rest := d.CommonLabels.Remove(d.GroupLabels.Names()); len(rest) > 0 {
			b.WriteString(strings.Join(rest.Values(), " "))
		}
		b.WriteByte(')')
	}
	return b.String()
}

// shippedDetail is what renderDetail makes of one of DefaultDetails'
// texts, false when it does not cover the text or the data (the template
// then renders it). Only for a set from sinks.FromGlobs (see
// sinks.Shipped): the texts call functions only, which a Go caller's
// template set could replace.
func shippedDetail(text string, d *template.Data) (any, bool) {
	switch text {
	case firingText:
		return alertsDetail(d.Alerts.Firing())
	case resolvedText:
		return alertsDetail(d.Alerts.Resolved())
	case numFiringText:
		// "3" read as YAML, as DeepCopyWithTemplate reads it: an int.
		return len(d.Alerts.Firing()), true
	case numResolvedText:
		return len(d.Alerts.Resolved()), true
	}
	return nil, false
}

// alertsDetail is what renderDetail makes of the default detail
// {{ .Alerts.Firing | toJson }} (or Resolved): json.Marshal of the
// alerts, decoded by jsonDetail. False when that text would not take
// jsonDetail's path (invalid UTF-8, a rune YAML does not print) or toJson
// would fail (a year json cannot encode).
func alertsDetail(as []template.Alert) (any, bool) {
	out := make([]any, 0, len(as))
	for i := range as {
		a := &as[i]
		starts, err := a.StartsAt.MarshalText()
		if err != nil {
			return nil, false
		}
		ends, err := a.EndsAt.MarshalText()
		if err != nil {
			return nil, false
		}
		labels, ok := kvDetail(a.Labels)
		if !ok {
			return nil, false
		}
		annotations, ok := kvDetail(a.Annotations)
		if !ok || !jsonPlain(a.Status) || !jsonPlain(a.GeneratorURL) || !jsonPlain(a.Fingerprint) {
			return nil, false
		}
		out = append(out, map[string]any{
			"status":       a.Status,
			"labels":       labels,
			"annotations":  annotations,
			"startsAt":     string(starts),
			"endsAt":       string(ends),
			"generatorURL": a.GeneratorURL,
			"fingerprint":  a.Fingerprint,
		})
	}
	return out, true
}

// kvDetail is a label or annotation set as jsonDetail decodes it: nil for
// nil (JSON null), else an object of strings.
func kvDetail(kv template.KV) (any, bool) {
	if kv == nil {
		return nil, true
	}
	m := make(map[string]any, len(kv))
	for k, v := range kv {
		if !jsonPlain(k) || !jsonPlain(v) {
			return nil, false
		}
		m[k] = v
	}
	return m, true
}

// jsonPlain reports whether s, as json.Marshal writes it, passes
// yamlPrintable: s is valid UTF-8 (json.Marshal would write invalid bytes
// as U+FFFD), and every rune json.Marshal writes as itself is one YAML
// prints. Control characters, U+2028 and U+2029 are written as \u
// escapes, so they pass.
func jsonPlain(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r >= 0x20 && r != 0x2028 && r != 0x2029 && !yamlRune(r) {
			return false
		}
	}
	return true
}
