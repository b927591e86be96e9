package pagerduty

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	yaml "go.yaml.in/yaml/v2"

	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// A template the start-up check passes (its sample alert has every label
// and annotation) can fail or render blank for one real alert. The page
// still goes out, through the real PagerDuty's checks (the fake's), with
// the field's default; the replacement is counted.
func TestTemplateFallbacksStillPage(t *testing.T) {
	cases := []struct {
		name, extra string
		edit        func(a *sinks.Alert)
		field       string
		check       func(t *testing.T, ev map[string]any, details map[string]any)
	}{
		{
			name:  "summary annotation absent",
			extra: "description: '{{ .CommonAnnotations.summary }}'",
			edit:  func(a *sinks.Alert) { delete(a.Annotations, "summary") },
			field: "description",
			check: func(t *testing.T, ev, _ map[string]any) {
				// Alertmanager's default description (its __subject).
				require.Equal(t, "[FIRING:1] HighLatency (api-1:8080 api critical)", ev["summary"])
			},
		},
		{
			name:  "summary renders only space",
			extra: "description: '  {{ .CommonAnnotations.title }} '",
			field: "description",
			check: func(t *testing.T, ev, _ map[string]any) {
				require.Equal(t, "[FIRING:1] HighLatency (api-1:8080 api critical)", ev["summary"])
			},
		},
		{
			name:  "summary and its default both blank",
			extra: "description: '{{ .CommonAnnotations.title }}'\nclient: ''",
			field: "description",
			check: func(t *testing.T, ev, _ map[string]any) {
				require.NotEmpty(t, strings.TrimSpace(ev["summary"].(string)))
			},
		},
		{
			name:  "source label absent",
			extra: "source: '{{ .CommonLabels.host }}'",
			field: "source",
			check: func(t *testing.T, ev, _ map[string]any) { require.Equal(t, "Alertmanager", ev["source"]) },
		},
		{
			name:  "description fails at run time",
			extra: `description: '{{ .CommonLabels.alertname }}{{ with .CommonAnnotations.duration }} for {{ humanizeDuration . }}{{ end }}'`,
			edit:  func(a *sinks.Alert) { a.Annotations["duration"] = "5m" },
			field: "description",
			check: func(t *testing.T, ev, _ map[string]any) {
				require.Equal(t, "[FIRING:1] HighLatency (api-1:8080 api critical)", ev["summary"])
			},
		},
		{
			name:  "severity fails at run time",
			extra: "severity: '{{ with .CommonAnnotations.duration }}{{ humanizeDuration . }}{{ end }}'\nseverity_fallback: warning",
			edit:  func(a *sinks.Alert) { a.Annotations["duration"] = "5m" },
			field: "severity",
			check: func(t *testing.T, ev, _ map[string]any) {
				require.Equal(t, "warning", ev["severity"], "severity_fallback")
			},
		},
		{
			name:  "class fails at run time",
			extra: `class: '{{ with .CommonAnnotations.duration }}{{ humanizeDuration . }}{{ end }}'`,
			edit:  func(a *sinks.Alert) { a.Annotations["duration"] = "soon" },
			field: "class",
			check: func(t *testing.T, ev, _ map[string]any) { require.NotContains(t, ev, "class") },
		},
		{
			name:  "a detail fails at run time",
			extra: "details:\n  took: '{{ with .CommonAnnotations.duration }}{{ humanizeDuration . }}{{ end }}'",
			edit:  func(a *sinks.Alert) { a.Annotations["duration"] = "5m" },
			field: "details.took",
			check: func(t *testing.T, _, details map[string]any) {
				require.Contains(t, details["took"], "template error: ")
				require.Contains(t, details["took"], "humanizeDuration")
				require.Equal(t, 1.0, details["num_firing"], "the other details are kept")
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake := sinkstest.NewPagerDuty()
			defer fake.Close()
			n := newNotifier(t, c.extra, fake.EventsURL())
			n.target = "fallback-" + c.name
			notif := groupNotification()
			notif.Alerts = notif.Alerts[:1]
			notif.Key = notif.Alerts[0].Identity
			if c.edit != nil {
				c.edit(&notif.Alerts[0])
			}
			require.NoError(t, n.Deliver(context.Background(), notif))
			evs := fake.Events()
			require.Len(t, evs, 1)
			var p map[string]any
			require.NoError(t, json.Unmarshal(evs[0].Payload, &p))
			details, _ := p["custom_details"].(map[string]any)
			c.check(t, p, details)
			require.Equal(t, 1.0, fieldReplaced(t, n.target, c.field))
		})
	}
}

// A dedup_key template that fails for one alert takes the default key,
// for its trigger and its resolve alike.
func TestDedupKeyTemplateFailingTakesTheDefaultKey(t *testing.T) {
	fake := sinkstest.NewPagerDuty()
	defer fake.Close()
	n := newNotifier(t, `dedup_key: '{{ .CommonLabels.alertname }}-{{ with .CommonAnnotations.duration }}{{ humanizeDuration . }}{{ end }}'`, fake.EventsURL())
	notif := groupNotification()
	notif.Alerts = notif.Alerts[:1]
	notif.Key = notif.Alerts[0].Identity
	notif.Alerts[0].Annotations["duration"] = "5m"
	require.NoError(t, n.Deliver(context.Background(), notif))
	notif.Alerts[0].Status = sinks.StatusResolved
	notif.Alerts[0].EndsAt = notif.Alerts[0].StartsAt.Add(1)
	require.NoError(t, n.Deliver(context.Background(), notif))
	evs := fake.Events()
	require.Len(t, evs, 2)
	require.Equal(t, n.defaultKey(notif), evs[0].DedupKey)
	require.Equal(t, evs[0].DedupKey, evs[1].DedupKey)
	require.Equal(t, "resolve", evs[1].EventAction)
}

// The start-up check still refuses a template that fails on the sample
// alert: the fallback is for alerts, not for configs.
func TestTemplateFailingOnTheSampleIsStillAConfigError(t *testing.T) {
	for _, extra := range []string{
		`description: '{{ index .Alerts 7 }}'`,
		`source: '{{ humanizeDuration "x" }}'`,
		"details:\n  x: '{{ index .Alerts 7 }}'",
		`dedup_key: '{{ index .Alerts 7 }}'`,
	} {
		var conf Config
		require.NoError(t, yaml.UnmarshalStrict([]byte("routing_key: "+routingKey+"\n"+extra+"\n"), &conf))
		_, err := New(&conf, testTemplate(t), sinks.NewLimiters(), nil, discard())
		require.Error(t, err, extra)
	}
}

// A routing key PagerDuty refuses for every event is a config error when
// the URL is PagerDuty's; the error never quotes the key.
func TestRoutingKeyShape(t *testing.T) {
	cases := []struct {
		name, key, url, err string
	}{
		{"integration key", "0123456789abcdef0123456789ABCDEF", "", ""},
		{"orchestration key", "R0123456789ABCDEFGHIJKLMNOPQRSTU", "https://events.eu.pagerduty.com/v2/enqueue", ""},
		{"short", "0123456789abcdef0123456789abcde", "", "are 32 characters, this one has 31"},
		{"long", "0123456789abcdef0123456789abcdef0", "", "this one has 33"},
		{"dash", "0123456789abcdef-123456789abcdef", "", `'-' at position 17`},
		{"plus and underscore", "e+23rschqsESqk9Q6_-g0123456789ab", "https://events.pagerduty.com/v2/enqueue", `'+' at position 2`},
		{"relay takes its own keys", "team-db", "https://relay.example/v2/enqueue", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			y := "routing_key: '" + c.key + "'\n"
			if c.url != "" {
				y += "url: " + c.url + "\n"
			}
			var conf Config
			err := yaml.UnmarshalStrict([]byte(y), &conf)
			if c.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, "routing_key: ")
			require.ErrorContains(t, err, c.err)
			require.NotContains(t, err.Error(), c.key)
		})
	}
}

// fieldReplaced reads alertfan_pagerduty_field_replaced_total for a target
// and field.
func fieldReplaced(t *testing.T, target, field string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(fieldFallbacks))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if got["target"] == target && got["field"] == field {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// A dedup_key template that reads the firing alerts (or .Status) gives the
// resolve the key its trigger had: it renders with the alerts as they
// fire, whatever the event.
func TestDedupKeyOfTheResolveIsTheTriggers(t *testing.T) {
	for _, tmpl := range []string{
		`{{ (index .Alerts.Firing 0).Labels.instance }}`,
		`{{ range .Alerts.Firing }}{{ .Labels.instance }}{{ end }}`,
		`{{ .Status }}-{{ .CommonLabels.alertname }}`,
	} {
		t.Run(tmpl, func(t *testing.T) {
			fake := sinkstest.NewPagerDuty()
			defer fake.Close()
			n := newNotifier(t, "dedup_key: '"+tmpl+"'", fake.EventsURL())
			notif := groupNotification()
			notif.Alerts = notif.Alerts[:1]
			notif.Key = notif.Alerts[0].Identity
			require.NoError(t, n.Deliver(context.Background(), notif))
			ack := *notif
			ack.Alerts = []sinks.Alert{notif.Alerts[0]}
			ack.Alerts[0].Action = sinks.ActionAcknowledge
			require.NoError(t, n.Deliver(context.Background(), &ack))
			resolved := *notif
			resolved.Alerts = []sinks.Alert{notif.Alerts[0]}
			resolved.Alerts[0].Status = sinks.StatusResolved
			resolved.Alerts[0].EndsAt = resolved.Alerts[0].StartsAt.Add(time.Minute)
			require.NoError(t, n.Deliver(context.Background(), &resolved))
			evs := fake.Events()
			require.Len(t, evs, 3)
			require.Equal(t, []string{"trigger", "acknowledge", "resolve"}, []string{evs[0].EventAction, evs[1].EventAction, evs[2].EventAction})
			require.Equal(t, evs[0].DedupKey, evs[1].DedupKey)
			require.Equal(t, evs[0].DedupKey, evs[2].DedupKey)
			require.NotEqual(t, n.defaultKey(notif), evs[0].DedupKey, "the template's key, not the default")
		})
	}
}

// A group event still over PagerDuty's 512,000 bytes once its details are
// dropped (a class template that lists every alert of a big group) has
// its free-text fields cut and its links left out: PagerDuty takes it.
func TestEventStillTooBigWithoutDetailsIsCut(t *testing.T) {
	fake := sinkstest.NewPagerDuty()
	defer fake.Close()
	n := newNotifier(t, "mode: group\nclass: '{{ range .Alerts.Firing }}{{ .Annotations.description }} {{ end }}'\nsource: '{{ range .Alerts.Firing }}{{ .Annotations.description }} {{ end }}'", fake.EventsURL())
	notif := groupNotification()
	base := notif.Alerts[0]
	notif.Alerts = nil
	for i := range 1000 {
		a := base
		a.Identity = fmt.Sprintf("am:fp%04d", i)
		a.Annotations = map[string]string{"description": strings.Repeat("disk /var full on node ", 26)}
		notif.Alerts = append(notif.Alerts, a)
	}
	require.NoError(t, n.Deliver(context.Background(), notif))
	evs := fake.Events()
	require.Len(t, evs, 1)
	var p map[string]any
	require.NoError(t, json.Unmarshal(evs[0].Payload, &p))
	require.LessOrEqual(t, len([]rune(p["class"].(string))), 1024)
	require.LessOrEqual(t, len([]rune(p["source"].(string))), 1024)
}

// A relayed event under 512,000 bytes as its sender wrote it, whose
// details hold HTML, keeps them: json.Marshal's escaping of <, > and &
// (six bytes each) must not make it look too big.
func TestHTMLDetailsUnderTheLimitAreKept(t *testing.T) {
	fake := sinkstest.NewPagerDuty()
	defer fake.Close()
	n := newNotifier(t, "", fake.EventsURL())
	report := strings.Repeat("<td>&lt;ok&gt;</td>", 20000) // 380,000 bytes, ~980,000 escaped
	details := []byte(`{"report":"` + report + `"}`)       // as the sender wrote it: < and & as they are
	a := sinks.Alert{
		Identity: "pd:k:srv-1", Status: sinks.StatusFiring, Fingerprint: "srv-1",
		Labels:   map[string]string{"alertname": "Grafana", "severity": "critical"},
		StartsAt: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC),
		PagerDuty: &sinks.PDEvent{DedupKey: "srv-1", Summary: "Disk full", Source: "web-1", Severity: "critical",
			CustomDetails: details},
	}
	notif := &sinks.Notification{Key: a.Identity, Source: sinks.Source{Input: "pagerduty"}, Alerts: []sinks.Alert{a}}
	require.NoError(t, n.Deliver(context.Background(), notif))
	var p struct {
		Details map[string]any `json:"custom_details"`
	}
	require.NoError(t, json.Unmarshal(fake.Events()[0].Payload, &p))
	got, _ := p.Details["report"].(string)
	require.True(t, got == report, "details kept whole: got %d bytes of %d", len(got), len(report))
}
