package pagerduty

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/template"
	"github.com/stretchr/testify/require"
	yaml "go.yaml.in/yaml/v2"

	"github.com/alertfan/alertfan/sinks"
)

func TestConfigRefusesWhatPagerDutyRefuses(t *testing.T) {
	cases := []struct {
		name, extra, err string
	}{
		{"constant severity page", "severity: page", `severity: "page" is not one of critical, error, warning, info`},
		{"constant severity none", "severity: none", `severity: "none"`},
		{"constant severity capitalised", "severity: Critical", `severity: "Critical"`},
		{"bad fallback", "severity_fallback: high", `severity_fallback: "high"`},
		{"empty dedup_key", "dedup_key: ''", "dedup_key: must not be empty"},
		{"long constant dedup_key", "dedup_key: " + strings.Repeat("k", 256), "dedup_key: 256 characters"},
		{"templated severity is fine", `severity: '{{ .CommonLabels.severity }}'`, ""},
		{"constant severity is fine", "severity: warning\nseverity_fallback: info", ""},
		{"dedup_key template is fine", `dedup_key: '{{ .CommonLabels.alertname }}'`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var conf Config
			err := yaml.UnmarshalStrict([]byte("routing_key: "+routingKey+"\n"+c.extra+"\n"), &conf)
			if c.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.err)
			require.NotContains(t, err.Error(), routingKey)
		})
	}
}

func TestBadDedupKeyTemplateIsAConfigError(t *testing.T) {
	var conf Config
	require.NoError(t, yaml.UnmarshalStrict([]byte("routing_key: "+routingKey+"\ndedup_key: '{{ .Nope }'\n"), &conf))
	_, err := New(&conf, testTemplate(t), sinks.NewLimiters(), nil, discard())
	require.ErrorContains(t, err, "dedup_key")
}

func TestNormalizeSeverity(t *testing.T) {
	cases := []struct{ in, fallback, want string }{
		{"critical", "error", "critical"}, {"error", "info", "error"}, {"warning", "error", "warning"}, {"info", "error", "info"},
		{"CRITICAL", "error", "critical"}, {" Warning ", "error", "warning"},
		{"none", "error", "info"}, {"ok", "error", "info"}, {"notice", "error", "info"}, {"debug", "error", "info"},
		{"warn", "error", "warning"}, {"minor", "error", "warning"},
		{"major", "warning", "error"}, {"err", "warning", "error"},
		{"fatal", "error", "critical"}, {"emergency", "error", "critical"},
		{"unknown", "error", "error"}, {"unknown", "warning", "warning"}, {"", "error", "error"}, {"page", "critical", "critical"},
	}
	for _, c := range cases {
		got, ok := NormalizeSeverity(c.in, c.fallback)
		require.Equal(t, c.want, got, "%q with fallback %q", c.in, c.fallback)
		require.Equal(t, c.in == c.want, ok)
	}
}

// An event that came from a PagerDuty sender goes out as it came, with
// only the routing key replaced, when the target has no templates.
func TestRelayGolden(t *testing.T) {
	n := newNotifier(t, "", "")
	details := json.RawMessage(`{"load avg":0.75,"ping time":"1500ms"}`)
	notif := &sinks.Notification{
		Key:    "pd:samplekeyhere",
		Source: sinks.Source{Input: "pagerduty", Receiver: "relay"},
		Alerts: []sinks.Alert{{
			Identity: "pd:samplekeyhere", Status: sinks.StatusFiring,
			Labels:      map[string]string{"alertname": "deploy", "severity": "info"},
			Annotations: map[string]string{"summary": "Example alert on host1.example.com"},
			PagerDuty: &sinks.PDEvent{
				DedupKey: "samplekeyhere", Summary: "Example alert on host1.example.com", Timestamp: "2015-07-17T08:42:58.315+0000",
				Source: "monitoringtool:cloudvendor:central-region-dc-01:852559987:cluster/api-stats-prod-003", Severity: "info",
				Component: "postgres", Group: "prod-datapipe", Class: "deploy", CustomDetails: details,
				Images: []sinks.PDImage{{Src: "https://www.pagerduty.com/wp-content/uploads/2016/05/pagerduty-logo-green.png", Href: "https://example.com/", Alt: "Example text"}},
				Links:  []sinks.PDLink{{Href: "https://example.com/", Text: "Link text"}},
			},
		}},
	}
	ev, err := n.Event(notif)
	require.NoError(t, err)
	golden(t, "relay_trigger.json", ev)

	// Alertmanager's default templates set explicitly are the user's choice.
	n = newNotifier(t, `description: '{{ template "pagerduty.default.description" . }}'`, "")
	ev, err = n.Event(notif)
	require.NoError(t, err)
	require.Equal(t, "[FIRING:1]  (deploy info)", ev.Payload.Summary, "the user asked for it")
	require.Equal(t, "postgres", ev.Payload.Component)
}

// A Mackerel alert reads like Mackerel's notification.
func TestMackerelDefaultsGolden(t *testing.T) {
	n := newNotifier(t, "", "")
	notif := &sinks.Notification{
		Key:    "mackerel:2bjHost",
		Source: sinks.Source{Input: "mackerel"},
		Alerts: []sinks.Alert{{
			Identity: "mackerel:2bjHost", Status: sinks.StatusFiring, Fingerprint: "mackerel:2bjHost",
			StartsAt: time.Unix(1473129912, 0).UTC(), GeneratorURL: "https://mackerel.io/orgs/example-org/alerts/2bjHost",
			Labels: map[string]string{"alertname": "loadavg5 high", "monitor": "loadavg5 high", "severity": "critical", "source": "mackerel",
				"org": "example-org", "type": "host", "host": "app01", "instance": "app01", "service": "shop", "role": "db", "trigger": "monitoring"},
			Annotations: map[string]string{"title": "[CRITICAL] loadavg5 high on app01: loadavg5 2.26 > 1.96", "summary": "loadavg5 2.26 > 1.96",
				"message": "loadavg5 2.26 > 1.96", "memo": "See the load runbook", "alert_url": "https://mackerel.io/orgs/example-org/alerts/2bjHost",
				"host_url": "https://mackerel.io/orgs/example-org/hosts/22D4", "image_url": "https://mackerel.io/embed/public/alert/2bjHost.png"},
		}},
	}
	ev, err := n.Event(notif)
	require.NoError(t, err)
	require.Equal(t, "[CRITICAL] loadavg5 high on app01: loadavg5 2.26 > 1.96", ev.Payload.Summary)
	golden(t, "mackerel_trigger.json", ev)
}

func testTemplate(t *testing.T) *template.Template {
	t.Helper()
	tmpl, err := template.FromGlobs(nil)
	require.NoError(t, err)
	return tmpl
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Which fields a relay takes from the event and which from the config:
// a key the user wrote wins even when it equals the default.
func TestRelayFieldByField(t *testing.T) {
	origin := &sinks.PDEvent{
		DedupKey: "k1", Summary: "disk full", Source: "db1", Severity: "warning", Component: "pg", Group: "prod", Class: "disk",
		CustomDetails: json.RawMessage(`"free: 1%"`), Client: "Grafana", ClientURL: "http://grafana/d/1",
		Links: []sinks.PDLink{{Href: "http://runbook"}},
	}
	notif := func(status string) *sinks.Notification {
		return &sinks.Notification{Key: "pd:k1", Source: sinks.Source{Input: "pagerduty"}, Alerts: []sinks.Alert{{
			Identity: "pd:k1", Status: status, Labels: map[string]string{"alertname": "disk", "severity": "warning", "instance": "db1"},
			Annotations: map[string]string{"summary": "disk full"}, PagerDuty: origin,
		}}}
	}
	cases := []struct {
		name, conf string
		check      func(t *testing.T, ev map[string]any, p map[string]any)
	}{
		{"no templates: as sent", "", func(t *testing.T, ev, p map[string]any) {
			require.Equal(t, "warning", p["severity"])
			require.Equal(t, "free: 1%", p["custom_details"])
			require.Equal(t, "Grafana", ev["client"])
			require.Equal(t, []any{map[string]any{"href": "http://runbook"}}, ev["links"])
			require.Equal(t, "k1", ev["dedup_key"])
		}},
		{"severity set to the default value", "severity: error", func(t *testing.T, ev, p map[string]any) {
			require.Equal(t, "error", p["severity"])
			require.Equal(t, "disk full", p["summary"])
		}},
		{"details set", "details: {team: db}", func(t *testing.T, ev, p map[string]any) {
			require.Equal(t, "db", p["custom_details"].(map[string]any)["team"])
		}},
		{"links set", "links: [{href: 'http://x/{{ .CommonLabels.instance }}'}]", func(t *testing.T, ev, p map[string]any) {
			require.Equal(t, []any{map[string]any{"href": "http://x/db1", "text": ""}}, ev["links"])
		}},
		{"dedup_key set", "dedup_key: '{{ .CommonLabels.instance }}'", func(t *testing.T, ev, p map[string]any) {
			require.Equal(t, "db1", ev["dedup_key"])
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, err := newNotifier(t, c.conf, "").Event(notif(sinks.StatusFiring))
			require.NoError(t, err)
			b, err := json.Marshal(ev)
			require.NoError(t, err)
			var m map[string]any
			require.NoError(t, json.Unmarshal(b, &m))
			c.check(t, m, m["payload"].(map[string]any))
		})
	}
	// A sender's acknowledge or resolve without payload goes out as one.
	for _, action := range []string{ActionAcknowledge, ActionResolve} {
		n := notif(sinks.StatusFiring)
		n.Alerts[0].PagerDuty = nil
		if action == ActionResolve {
			n.Alerts[0].Status = sinks.StatusResolved
		} else {
			n.Alerts[0].Action = sinks.ActionAcknowledge
		}
		ev, err := newNotifier(t, "", "").Event(n)
		require.NoError(t, err)
		b, err := json.Marshal(ev)
		require.NoError(t, err)
		require.JSONEq(t, `{"routing_key":"`+routingKey+`","event_action":"`+action+`","dedup_key":"k1"}`, string(b))
	}
}
