package sinks

import (
	"net/url"
	"strings"
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

// Scrub replaces every occurrence of secret in s, as written and as
// written in a URL query, with "<secret>": for a target's answer, which
// may echo the request (a proxy's error page, a gateway), before it goes
// into an error, a log or the history. A body cut to a limit may end in
// the first part of the secret; eight bytes or more of it are replaced
// too.
func Scrub(s, secret string) string {
	if secret == "" {
		return s
	}
	s = strings.ReplaceAll(s, secret, "<secret>")
	if q := url.QueryEscape(secret); q != secret {
		s = strings.ReplaceAll(s, q, "<secret>")
	}
	for n := min(len(secret)-1, len(s)); n >= 8; n-- {
		if strings.HasSuffix(s, secret[:n]) {
			return s[:len(s)-n] + "<secret>"
		}
	}
	return s
}
