package intake

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
)

// pdFields is PagerDuty's Events API v2 alert event, field by field, as
// https://developer.pagerduty.com/docs/send-alert-event and
// https://developer.pagerduty.com/docs/events-api-v2-overview document it
// (checked 2026-11-29), with what alertfan takes and refuses. Each row is
// tried on a valid trigger: every accepted value must decode (and be kept
// for relaying), every refused one must give a 400 naming the field in
// PagerDuty's words.
var pdFields = []struct {
	field    string // JSON path
	required bool   // on trigger
	doc      string // what PagerDuty documents
	accept   []string
	refuse   []string
	msg      string // in the error for refused values
}{
	{"routing_key", true, "String, the 32-character integration key", []string{`"R0UT1NGKEY0000000000000000000001"`}, []string{`""`, `"short"`, `123`}, "routing_key"},
	{"event_action", true, "trigger | acknowledge | resolve", []string{`"trigger"`}, []string{`""`, `"snooze"`, `"TRIGGER"`}, "event_action"},
	{"dedup_key", false, "String, at most 255 characters", []string{`"k"`, `"` + strings.Repeat("k", 255) + `"`, `""`}, []string{`"` + strings.Repeat("k", 256) + `"`, `1`}, "dedup_key"},
	{"payload.summary", true, "String, at most 1024 characters", []string{`"s"`, `"` + strings.Repeat("é", 1024) + `"`}, []string{`""`, `"  "`, `"` + strings.Repeat("x", 1025) + `"`, `{}`}, "payload.summary"},
	{"payload.source", true, "String, hostname or FQDN preferred", []string{`"db1"`}, []string{`""`, `7`}, "payload.source"},
	{"payload.severity", true, "critical | error | warning | info", []string{`"critical"`, `"error"`, `"warning"`, `"info"`}, []string{`""`, `"none"`, `"page"`, `"Critical"`}, "payload.severity"},
	{"payload.timestamp", false, "ISO 8601 timestamp, e.g. 2015-07-17T08:42:58.315+0000", []string{
		`"2015-07-17T08:42:58.315+0000"`, `"2015-07-17T08:42:58Z"`, `"2015-07-17T08:42:58.123456789+02:00"`,
		`"2015-07-17T08:42:58+02"`, `"2015-07-17 08:42:58Z"`, `"2015-07-17T08:42:58"`, `"2015-07-17T08:42Z"`, `""`,
	}, []string{`"noon"`, `"17/07/2015"`, `1437122578`}, "payload.timestamp"},
	{"payload.component", false, "String", []string{`"postgres"`, `""`}, []string{`1`}, "payload.component"},
	{"payload.group", false, "String", []string{`"prod-datapipe"`}, []string{`[]`}, "payload.group"},
	{"payload.class", false, "String", []string{`"deploy"`}, []string{`true`}, "payload.class"},
	{"payload.custom_details", false, "Object; PagerDuty takes any JSON value", []string{
		`{"ping time":"1500ms","load avg":0.75}`, `"Triggered metrics:\n\nerror_ratio: 0.071\n"`, `42`, `[1,"a"]`, `true`, `null`, `{"nested":{"a":[1,2]}}`,
	}, nil, ""},
	{"images", false, "Array of {src (required, HTTPS), href, alt}", []string{
		`[{"src":"https://x/a.png","href":"https://x/","alt":"A"}]`, `[{"src":"https://x/a.png"}]`, `[]`, `null`, `[{"alt":"no src: dropped"}]`,
	}, []string{`{"src":"x"}`, `[1]`}, "images"},
	{"links", false, "Array of {href (required), text}", []string{
		`[{"href":"https://x/","text":"X"}]`, `[{"href":"https://x/"}]`, `[]`, `[{"text":"no href: dropped"}]`,
	}, []string{`"https://x/"`, `[[]]`}, "links"},
	{"client", false, "String", []string{`"Grafana"`}, []string{`{}`}, "client"},
	{"client_url", false, "String", []string{`"http://grafana.example/d/1"`}, []string{`1`}, "client_url"},
}

// pdEventWith is a valid trigger with one field replaced.
func pdEventWith(t *testing.T, path, value string) []byte {
	t.Helper()
	ev := map[string]any{
		"routing_key": "R0UT1NGKEY0000000000000000000001", "event_action": "trigger", "dedup_key": "d1",
		"payload": map[string]any{"summary": "s", "source": "h", "severity": "info"},
	}
	require.True(t, json.Valid([]byte(value)), value)
	v := json.RawMessage(value) // as written: no float64 on the way
	if p, ok := strings.CutPrefix(path, "payload."); ok {
		ev["payload"].(map[string]any)[p] = v
	} else {
		ev[path] = v
	}
	b, err := json.Marshal(ev)
	require.NoError(t, err)
	return b
}

func TestPagerDutyFieldTable(t *testing.T) {
	for _, f := range pdFields {
		for _, v := range f.accept {
			t.Run(f.field+"="+sinks.Abbreviate(v, 40), func(t *testing.T) {
				res, err := DecodePagerDuty(pdEventWith(t, f.field, v), now)
				require.NoError(t, err)
				require.NotNil(t, res.Alert.PagerDuty, "a trigger is kept for relaying")
			})
		}
		for _, v := range f.refuse {
			t.Run(f.field+"!="+sinks.Abbreviate(v, 40), func(t *testing.T) {
				_, err := DecodePagerDuty(pdEventWith(t, f.field, v), now)
				require.Error(t, err)
				require.Contains(t, err.Error(), f.msg)
			})
		}
		if f.required {
			t.Run(f.field+" missing", func(t *testing.T) {
				b := pdEventWith(t, f.field, `null`)
				_, err := DecodePagerDuty(b, now)
				require.Error(t, err)
				require.Contains(t, err.Error(), "missing or blank")
			})
		}
	}
}

// What the sender said is kept as it came, for relaying.
func TestPagerDutyKeepsTheEvent(t *testing.T) {
	cases := []struct {
		name, details, wantAnn string
	}{
		{"object", `{"a":"x","n":0.75}`, ""},
		{"string", `"Triggered metrics:\n\nerror_ratio: 0.071\n"`, "Triggered metrics:\n\nerror_ratio: 0.071\n"},
		{"number", `42`, "42"},
		{"array", `[1, "a"]`, `[1,"a"]`},
		{"number beyond float64", `1234567890123456789`, "1234567890123456789"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := DecodePagerDuty(pdEventWith(t, "payload.custom_details", c.details), now)
			require.NoError(t, err)
			require.JSONEq(t, c.details, string(res.Alert.PagerDuty.CustomDetails))
			if c.wantAnn != "" {
				require.Equal(t, c.wantAnn, res.Alert.Annotations["custom_details"])
			}
		})
	}
	// Ids beyond float64's 2^53 (Datadog's, Sentry's) reach the
	// annotations digit for digit, nested ones too; null stays null.
	res, err := DecodePagerDuty(pdEventWith(t, "payload.custom_details", `{"event_id":1234567890123456789,"trace":{"span_id":9007199254740993,"ok":true},"n":null,"s":"x"}`), now)
	require.NoError(t, err)
	require.Equal(t, "1234567890123456789", res.Alert.Annotations["event_id"])
	require.Equal(t, `{"span_id":9007199254740993,"ok":true}`, res.Alert.Annotations["trace"])
	require.Equal(t, "null", res.Alert.Annotations["n"])
	require.Equal(t, "x", res.Alert.Annotations["s"])
	res, err = DecodePagerDuty(pdEventWith(t, "payload.timestamp", `"2015-07-17T08:42:58.315+0000"`), now)
	require.NoError(t, err)
	require.Equal(t, "2015-07-17T08:42:58.315+0000", res.Alert.PagerDuty.Timestamp, "relayed as sent")
	require.Equal(t, time.Date(2015, 7, 17, 8, 42, 58, 315e6, time.UTC), res.Alert.StartsAt.UTC())
}

// The alert's name is the event's class, else its client; Grafana's
// placeholder class "default" (grafana/alerting DefaultPagerDutyClass) is
// not a name.
func TestPagerDutyAlertName(t *testing.T) {
	cases := []struct{ class, client, want string }{
		{`"disk"`, `"Zabbix"`, "disk"},
		{`"default"`, `"Grafana"`, "Grafana"},
		{`""`, `"Grafana"`, "Grafana"},
		{`"default"`, `""`, "PagerDutyEvent"},
	}
	for _, c := range cases {
		body := `{"routing_key":"R0UT1NGKEY0000000000000000000001","event_action":"trigger","client":` + c.client +
			`,"payload":{"summary":"s","source":"grafana-host","severity":"critical","class":` + c.class + `}}`
		res, err := DecodePagerDuty([]byte(body), time.Now())
		require.NoError(t, err)
		require.Equal(t, c.want, res.Alert.Labels["alertname"], "class %s, client %s", c.class, c.client)
	}
}
