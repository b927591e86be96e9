package backlog

import (
	"fmt"
	"regexp"
	"strings"
	tmpltext "text/template"
	"time"

	htmltemplate "html/template"

	"github.com/prometheus/alertmanager/template"

	"github.com/alertfan/alertfan/sinks"
)

// Limits on what alertfan writes. Backlog's add-issue reference
// (https://developer.nulab.com/docs/backlog/api/2/add-issue/) and its
// answers cap an issue summary at 255 characters, and a text custom field
// likewise; descriptions and sentence fields at 100,000; a comment at
// 50,000 ("The Comment must be no longer than 50,000.", code 7, measured
// against the API in 2025: https://qiita.com/otLenz/items/8e21020b37880f6392c6).
// Longer values are cut with "…" so that Backlog never refuses them.
const (
	maxSummary   = 255
	maxTextField = 255
	maxBody      = 100000
	maxComment   = 50000
)

// Text formatting rules of a project (get-project's textFormattingRule).
const (
	RuleMarkdown = "markdown"
	RuleBacklog  = "backlog"
	// RulePlain is for fields Backlog does not render (summary, custom
	// fields): escaped values are left as they are.
	RulePlain = "plain"
)

func truncate(s string, n int) (string, bool) { return sinks.TruncateRunes(s, n) }

// readable makes a rendered value one that Backlog's API takes and that
// reads as it was meant:
//
//   - a character outside Unicode's Basic Multilingual Plane (4 bytes in
//     UTF-8: emoji, CJK Extension B kanji such as 𠮷) is written as its
//     code point, "U+1F525": the API refuses such characters with 400
//     "Incorrect String: %F0..." (code 7), though Backlog's web pages take
//     them (https://qiita.com/mizukyf/items/537d18b4cfc7937f3228), and one
//     in an alert's text would cost it its ticket;
//   - control characters other than tab and line feed (NUL, ESC, DEL, the
//     C1 controls) and the bidirectional embedding, override and isolate
//     controls (U+202A–U+202E, U+2066–U+2069), which would hide text or
//     show it reversed to the person reading the issue, are dropped.
func readable(s string) string {
	clean := true
	for _, c := range s {
		if c > 0xFFFF || dropped(c) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for _, c := range s {
		switch {
		case c > 0xFFFF:
			fmt.Fprintf(&b, "U+%X", c)
		case dropped(c):
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}

// dropped reports the characters readable leaves out.
func dropped(c rune) bool {
	switch {
	case c == '\t' || c == '\n' || c == '\r':
		return false
	case c < 0x20, c >= 0x7F && c <= 0x9F:
		return true
	case c >= 0x202A && c <= 0x202E, c >= 0x2066 && c <= 0x2069:
		return true
	}
	return false
}

// apiSafe replaces what readable would have written as a code point with
// U+FFFD, one character for one, so that a value already cut to its
// limit stays within it: the client's last guard for text that did not
// come through a template.
func apiSafe(s string) string {
	// strings.Map returns s itself when no character changes.
	return strings.Map(func(c rune) rune {
		if c > 0xFFFF {
			return '\uFFFD'
		}
		return c
	}, s)
}

// oneLine joins a value's lines with single spaces.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Escaping is done in two steps because one template set serves every
// project: the template functions wrap a value between private-use
// sentinels, and the Notifier rewrites the wrapped parts for its own
// project's formatting rule after rendering.
const (
	sentinelOpen  = "\uE000"
	sentinelClose = "\uE001"
	kindText      = "t"
	kindCell      = "c"
)

var sentinelRE = regexp.MustCompile(sentinelOpen + `([tc])([^` + sentinelOpen + sentinelClose + `]*)` + sentinelClose)

// TemplateFuncs adds alertfan's Backlog functions to a template set
// (template.FromGlobs(nil, backlog.TemplateFuncs)):
//
//   - backlogEscape: a value as literal text in the project's notation;
//   - backlogCell: a value as one table cell (newlines become line breaks
//     inside the cell, "|" cannot end it);
//   - backlogURL: a URL (a generator URL, a link) as one token: spaces,
//     line breaks, "|", "<", ">" and quotes percent-encoded, so a query
//     like up > 0 | x cannot break a link, a list or a table.
func TemplateFuncs(text *tmpltext.Template, html *htmltemplate.Template) {
	fm := map[string]any{
		"backlogEscape": func(s string) string { return sentinelOpen + kindText + strip(s) + sentinelClose },
		"backlogCell":   func(s string) string { return sentinelOpen + kindCell + strip(s) + sentinelClose },
		"backlogURL":    urlToken,
	}
	text.Funcs(fm)
	html.Funcs(fm)
}

func strip(s string) string {
	return strings.NewReplacer(sentinelOpen, "", sentinelClose, "").Replace(s)
}

// applyRule replaces the escaped parts of a rendered text for rule.
func applyRule(s, rule string) string {
	return sentinelRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := sentinelRE.FindStringSubmatch(m)
		if rule == RulePlain {
			return sub[2]
		}
		if sub[1] == kindCell {
			return escapeCell(sub[2], rule)
		}
		return escapeText(sub[2], rule)
	})
}

// Markdown: CommonMark backslash escapes for the characters that start
// emphasis, links, code, HTML or tables anywhere in a line. "_" only starts
// emphasis at a word boundary, so runbook_url stays as it is.
var mdInline = strings.NewReplacer(
	`\`, `\\`, "`", "\\`", `*`, `\*`, `[`, `\[`, `]`, `\]`,
	`<`, `\<`, `>`, `\>`, `|`, `\|`, `~`, `\~`,
)

var mdUnderscore = regexp.MustCompile(`(^|[^\p{L}\p{N}])_|_([^\p{L}\p{N}]|$)`)

func mdEscape(s string) string {
	s = mdInline.Replace(s)
	return mdUnderscore.ReplaceAllStringFunc(s, func(m string) string { return strings.Replace(m, "_", `\_`, 1) })
}

// Backlog notation (the "Backlog" text formatting rule of Backlog's help
// pages) has no escape character: markup is broken with a zero-width
// space, a table cell's "|" becomes a full-width "｜" and a line break
// inside a cell is "&br;". Only markup is broken — the bold (two apostrophes) and %% pairs, [[
// links ]], the {code} and {quote} blocks, &color(…) { }, the #image(…)
// family of macros, &br; — so that text a person copies from the issue (a
// PromQL selector's {job="api"}, a jsonpath) carries no invisible
// character (helper 78).
var blInline = strings.NewReplacer(
	"''", "'\u200b'", "%%", "%\u200b%", "[[", "[\u200b[", "]]", "]\u200b]",
	"{code", "{\u200bcode", "{/code", "{\u200b/code", "{quote", "{\u200bquote", "{/quote", "{\u200b/quote",
	"&color(", "&\u200bcolor(", "&br;", "&\u200bbr;",
	"#image(", "#\u200bimage(", "#thumbnail(", "#\u200bthumbnail(", "#attach(", "#\u200battach(", "#rev(", "#\u200brev(",
)

func escapeText(s, rule string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if rule == RuleBacklog {
			l = blInline.Replace(l)
			if t := strings.TrimLeft(l, " \t"); t != "" && strings.ContainsRune("*-+#>|", rune(t[0])) {
				l = "\u200b" + l
			}
		} else {
			l = mdEscape(l)
			t := strings.TrimLeft(l, " \t")
			switch {
			case t == "":
			case strings.ContainsRune("#-+=", rune(t[0])):
				l = l[:len(l)-len(t)] + `\` + t
			case orderedRE.MatchString(t):
				l = l[:len(l)-len(t)] + orderedRE.ReplaceAllString(t, `$1\.`)
			}
		}
		lines[i] = l
	}
	return strings.Join(lines, "\n")
}

var orderedRE = regexp.MustCompile(`^(\d+)\.`)

func escapeCell(s string, rule string) string {
	s = strings.TrimSpace(strings.ReplaceAll(s, "\r\n", "\n"))
	if rule == RuleBacklog {
		s = blInline.Replace(s)
		s = strings.ReplaceAll(s, "|", "｜")
		return strings.ReplaceAll(s, "\n", "&br;")
	}
	s = mdEscape(s)
	return strings.ReplaceAll(s, "\n", "<br>")
}

// Data is what Backlog templates see: Alertmanager's template data (so
// every Alertmanager template works) plus the project's formatting rule
// and the times of the transition being reported.
type Data struct {
	*template.Data
	// TextFormattingRule is the project's: "markdown" or "backlog".
	TextFormattingRule string
	// Markdown is TextFormattingRule == "markdown".
	Markdown bool
	// FiringSince is the newest occurrence's startsAt among firing alerts.
	FiringSince time.Time
	// ResolvedAt is the latest endsAt (or when the resolve was accepted).
	ResolvedAt time.Time
	// Now is when the notification was accepted.
	Now time.Time
	// Truncated is how many alerts of the group the message left out
	// (group mode: Alertmanager's truncatedAlerts, webhook_configs
	// max_alerts); the issue stays open for them.
	Truncated uint64
}

func newData(notif *sinks.Notification, rule string) *Data {
	d := &Data{Data: notif.TemplateData(), TextFormattingRule: rule, Markdown: rule != RuleBacklog, Now: notif.AcceptedAt.UTC(), Truncated: notif.Truncated}
	for _, a := range notif.Alerts {
		if a.Status != sinks.StatusResolved && a.StartsAt.After(d.FiringSince) {
			d.FiringSince = a.StartsAt.UTC()
		}
		if a.Status == sinks.StatusResolved && a.EndsAt.After(d.ResolvedAt) {
			d.ResolvedAt = a.EndsAt.UTC()
		}
	}
	if d.FiringSince.IsZero() && len(notif.Alerts) > 0 {
		d.FiringSince = notif.Alerts[0].StartsAt.UTC()
	}
	if d.ResolvedAt.IsZero() {
		d.ResolvedAt = d.Now
	}
	return d
}

var urlReplacer = strings.NewReplacer(" ", "%20", "\t", "%09", "\r", "%0D", "\n", "%0A", "|", "%7C",
	"<", "%3C", ">", "%3E", `"`, "%22", "'", "%27", "`", "%60", "*", "%2A", "[", "%5B", "]", "%5D", "{", "%7B", "}", "%7D")

func urlToken(s string) string { return urlReplacer.Replace(strip(s)) }
