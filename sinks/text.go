package sinks

import (
	"time"
	"unicode/utf8"
)

const truncationMarker = "…"

// CutBytes cuts s to at most n bytes, on a character boundary so that a
// multi-byte character is never split.
func CutBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// Abbreviate is s for an error or log line: at most n bytes (CutBytes),
// then "…" when it was cut.
func Abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return CutBytes(s, n) + truncationMarker
}

// TruncateRunes cuts s to n runes, the last one being "…", as Alertmanager
// does for PagerDuty summaries.
func TruncateRunes(s string, n int) (string, bool) {
	r := []rune(s)
	if len(r) <= n {
		return s, false
	}
	if n <= 3 {
		return string(r[:n]), true
	}
	return string(r[:n-1]) + truncationMarker, true
}

// SampleNotification is a firing alert with the usual labels, used to render
// templates once at config load so that a broken template is reported then.
func SampleNotification() *Notification {
	t := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return &Notification{
		Key: "am:0123456789abcdef",
		Source: Source{
			Input:       "alertmanager",
			Receiver:    "sample",
			GroupKey:    `{}:{alertname="Sample"}`,
			ExternalURL: "http://alertmanager.example:9093",
			GroupLabels: map[string]string{"alertname": "Sample"},
		},
		Alerts: []Alert{{
			Identity:     "am:0123456789abcdef",
			Status:       StatusFiring,
			Labels:       map[string]string{"alertname": "Sample", "severity": "critical", "instance": "host:9100", "job": "node"},
			Annotations:  map[string]string{"summary": "Sample summary", "description": "Sample description"},
			StartsAt:     t,
			GeneratorURL: "http://prometheus.example:9090/graph",
			Fingerprint:  "0123456789abcdef",
		}},
		AcceptedAt: t,
	}
}
