package pagerduty

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/template"
	"github.com/stretchr/testify/require"
	yaml "go.yaml.in/yaml/v2"

	"github.com/alertfan/alertfan/sinks"
)

// The Go renderings of Alertmanager's defaults give what its templates
// give, on random alerts with the texts that trip encoders: control
// characters, HTML, line separators, BOM, U+FFFD, invalid UTF-8, DEL,
// years JSON cannot encode, zones with odd offsets.
func TestDefaultsAsTheTemplates(t *testing.T) {
	tmpl, err := sinks.FromGlobs(nil)
	require.NoError(t, err)
	shipped := shippedTexts(tmpl)
	require.Len(t, shipped, 3)
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
		d := &template.Data{Status: status(), GroupLabels: kv(), CommonLabels: kv(), Receiver: str(), ExternalURL: str()}
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

		for text, f := range shipped {
			want, err := render(text, d)
			require.NoError(t, err)
			require.Equal(t, want, f(d), text)
		}

		for _, text := range []string{firingText, resolvedText, numFiringText, numResolvedText} {
			got, ok := shippedDetail(text, d)
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
	require.Greater(t, fast, 12000, "the shortcut must be what most of these take")
	_, ok := shippedDetail(`{{ .Alerts | len }}`, &template.Data{})
	require.False(t, ok, "any other text is the template's")
}

// A user template file that redefines a default's templates turns that
// shortcut off; one that defines others leaves them on.
func TestShippedTexts(t *testing.T) {
	all := []string{descriptionText, clientText, clientURLText}
	for _, c := range []struct {
		file string
		want []string
	}{
		{`{{ define "team.title" }}ours{{ end }}`, all},
		{`{{ define "__subject" }}mine{{ end }}`, []string{clientText, clientURLText}},
		{`{{ define "pagerduty.default.description" }}{{ .Status }}{{ end }}`, []string{clientText, clientURLText}},
		{`{{ define "__alertmanager" }}Prometheus{{ end }}`, []string{descriptionText, clientURLText}},
		{`{{ define "__alertmanagerURL" }}https://am.example{{ end }}`, []string{descriptionText, clientText}},
	} {
		path := filepath.Join(t.TempDir(), "user.tmpl")
		require.NoError(t, os.WriteFile(path, []byte(c.file), 0o600))
		tmpl, err := sinks.FromGlobs([]string{path})
		require.NoError(t, err)
		var got []string
		for text := range shippedTexts(tmpl) {
			got = append(got, text)
		}
		require.ElementsMatch(t, c.want, got, c.file)
	}
	// Not from FromGlobs: no handle on the set, no shortcut.
	tmpl, err := template.FromGlobs(nil)
	require.NoError(t, err)
	require.Empty(t, shippedTexts(tmpl))
}

// Whole events: a Notifier whose set came from sinks.FromGlobs (the
// shortcuts on) sends the bytes one without them sends.
func TestShippedEventsAsTemplated(t *testing.T) {
	fast, err := sinks.FromGlobs(nil)
	require.NoError(t, err)
	slow, err := template.FromGlobs(nil)
	require.NoError(t, err)
	var c Config
	require.NoError(t, yaml.UnmarshalStrict([]byte("routing_key: "+routingKey+"\nmode: group\ndetails: {team: '{{ .CommonLabels.team }}'}"), &c))
	nf, err := New(&c, fast, sinks.NewLimiters(), nil, discard())
	require.NoError(t, err)
	ns, err := New(&c, slow, sinks.NewLimiters(), nil, discard())
	require.NoError(t, err)
	require.Len(t, nf.shipped, 3)
	require.True(t, nf.shippedDetails)
	require.Empty(t, ns.shipped)
	require.False(t, ns.shippedDetails, "the templates render every text of this one")

	at := time.Date(2026, 12, 6, 1, 2, 3, 456789, time.FixedZone("JST", 9*3600))
	alert := func(status, name, value string) sinks.Alert {
		return sinks.Alert{Identity: name + value, Status: status, StartsAt: at, GeneratorURL: "http://prom/graph?g0.expr=up+%3C+1&x=<y>",
			Labels:      map[string]string{"alertname": name, "team": "db", "instance": value},
			Annotations: map[string]string{"summary": "disk <full> & \u2028 " + value, "runbook": "日本語"}}
	}
	for _, n := range []*sinks.Notification{
		{Key: "one", Alerts: []sinks.Alert{alert(sinks.StatusFiring, "DiskFull", "db1")}},
		{Key: "two", Alerts: []sinks.Alert{alert(sinks.StatusFiring, "DiskFull", "db1"), alert(sinks.StatusResolved, "DiskFull", "db2")},
			Source: sinks.Source{Receiver: "on call/db", ExternalURL: "http://am:9093", GroupLabels: map[string]string{"alertname": "DiskFull"}}},
		{Key: "resolved", Alerts: []sinks.Alert{alert(sinks.StatusResolved, "Down", "\x7f\ufeff")}},
	} {
		want, err := ns.render(n, true, "")
		require.NoError(t, err)
		got, err := nf.render(n, true, "")
		require.NoError(t, err)
		require.Equal(t, string(want.Body), string(got.Body), n.Key)
	}

	// And random ones, with the texts that trip encoders.
	r := rand.New(rand.NewPCG(3, 4))
	pieces := []string{"a", "db", " ", "/", "alertname", "team", "\n", "\x00", "\x7f", "<", "&", "\u2028", "\ufeff", "\ufffd", "日本", "\xff", "3", "null"}
	str := func() string {
		var b strings.Builder
		for range r.IntN(4) {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		return b.String()
	}
	labels := func() map[string]string {
		m := map[string]string{}
		for range r.IntN(4) {
			m[str()] = str()
		}
		return m
	}
	for i := range 1000 {
		n := &sinks.Notification{Key: fmt.Sprint(i), Source: sinks.Source{Receiver: str(), ExternalURL: str(), GroupLabels: labels()}}
		for range 1 + r.IntN(3) {
			n.Alerts = append(n.Alerts, sinks.Alert{Identity: str(), Status: []string{sinks.StatusFiring, sinks.StatusResolved}[r.IntN(2)],
				Labels: labels(), Annotations: labels(), GeneratorURL: str(), Fingerprint: str(),
				StartsAt: time.Unix(r.Int64N(4e9), r.Int64N(1e9)).In(time.FixedZone("z", (r.IntN(48)-24)*1800))})
		}
		want, werr := ns.render(n, true, "")
		got, gerr := nf.render(n, true, "")
		require.Equal(t, werr == nil, gerr == nil, "%v / %v", werr, gerr)
		if werr == nil {
			require.Equal(t, string(want.Body), string(got.Body), n.Key)
		}
	}
}
