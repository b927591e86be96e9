package pagerduty

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/template"
	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
)

// The Go renderings of Alertmanager's defaults give what its templates
// give, on random alerts with the texts that trip encoders: control
// characters, HTML, line separators, BOM, U+FFFD, invalid UTF-8, DEL,
// years JSON cannot encode, zones with odd offsets.
func TestDefaultsAsTheTemplates(t *testing.T) {
	tmpl, err := sinks.FromGlobs(nil)
	require.NoError(t, err)
	require.True(t, shippedSubject(tmpl))
	render := func(text string, d *template.Data) (string, error) { return sinks.ExecuteText(tmpl, text, d) }

	r := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"a", "Z", "0", " ", "-", "alertname", "job", "\n", "\t", "\x00", "\x7f", "<", ">", "&", `"`, `\`,
		"\u0085", "\u2028", "\u2029", "\ufeff", "\ufffd", "\ufffe", "é", "日本", "😀", "\xff", "\xc3", "{", "[", "3", "true", "null"}
	str := func() string {
		var b strings.Builder
		for range r.IntN(4) {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		return b.String()
	}
	kv := func() template.KV {
		switch r.IntN(6) {
		case 0:
			return nil
		case 1:
			return template.KV{}
		}
		m := template.KV{}
		for range 1 + r.IntN(4) {
			m[str()] = str()
		}
		if r.IntN(2) == 0 {
			m["alertname"] = str()
		}
		return m
	}
	when := func() time.Time {
		switch r.IntN(5) {
		case 0:
			return time.Time{}
		case 1:
			return time.Date(10000+r.IntN(3), 1, 1, 0, 0, 0, 0, time.UTC) // toJson fails
		}
		zone := time.FixedZone("z", (r.IntN(48)-24)*1800+r.IntN(2)*17)
		return time.Unix(r.Int64N(4e9), r.Int64N(1e9)*int64(r.IntN(2))).In(zone)
	}
	status := func() string { return []string{"firing", "resolved", "", "FIRING", str()}[r.IntN(5)] }

	fast := 0
	for range 5000 {
		d := &template.Data{Status: status(), GroupLabels: kv(), CommonLabels: kv()}
		if r.IntN(3) == 0 && len(d.CommonLabels) > 0 {
			// Group labels that are a part of the common ones, as Alertmanager's are.
			d.GroupLabels = template.KV{}
			for k, v := range d.CommonLabels {
				if r.IntN(2) == 0 {
					d.GroupLabels[k] = v
				}
			}
		}
		for range r.IntN(4) {
			d.Alerts = append(d.Alerts, template.Alert{Status: status(), Labels: kv(), Annotations: kv(),
				StartsAt: when(), EndsAt: when(), GeneratorURL: str(), Fingerprint: str()})
		}

		want, err := render(descriptionText, d)
		require.NoError(t, err)
		require.Equal(t, want, subject(d))

		for _, text := range []string{firingText, resolvedText} {
			as := d.Alerts.Firing()
			if text == resolvedText {
				as = d.Alerts.Resolved()
			}
			got, ok := alertsDetail(as)
			if !ok {
				continue // the template renders it
			}
			fast++
			want, err := renderDetail(text, func(s string) (string, error) { return render(s, d) })
			require.NoError(t, err)
			require.Equal(t, want, got)
			wb, err := json.Marshal(want)
			require.NoError(t, err)
			gb, err := json.Marshal(got)
			require.NoError(t, err)
			require.Equal(t, string(wb), string(gb))
		}
	}
	require.Greater(t, fast, 2000, "the shortcut must be what most of these take")
}

// A user template file that redefines the description's templates turns
// the shortcut off; one that defines others leaves it on.
func TestShippedSubject(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"subject.tmpl": `{{ define "__subject" }}mine{{ end }}`,
		"other.tmpl":   `{{ define "team.title" }}ours{{ end }}`,
		"desc.tmpl":    `{{ define "pagerduty.default.description" }}{{ .Status }}{{ end }}`,
	} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600))
	}
	for file, shipped := range map[string]bool{"subject.tmpl": false, "other.tmpl": true, "desc.tmpl": false} {
		tmpl, err := sinks.FromGlobs([]string{filepath.Join(dir, file)})
		require.NoError(t, err)
		require.Equal(t, shipped, shippedSubject(tmpl), file)
	}
	// Not from FromGlobs: no handle on the set, no shortcut.
	tmpl, err := template.FromGlobs(nil)
	require.NoError(t, err)
	require.False(t, shippedSubject(tmpl))
}
