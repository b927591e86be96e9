package intake

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite golden files")

var now = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func golden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	require.NoError(t, err)
	path := filepath.Join("testdata", name+".golden.json")
	if *update {
		require.NoError(t, os.WriteFile(path, append(got, '\n'), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create %s", path)
	require.JSONEq(t, string(want), string(got))
}

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return b
}

func TestGoldenDecodes(t *testing.T) {
	src, alerts, err := DecodeAlertmanager(read(t, "alertmanager_firing.json"))
	require.NoError(t, err)
	golden(t, "alertmanager_firing", map[string]any{"source": src, "alerts": alerts})

	for _, name := range []string{"pagerduty_trigger", "pagerduty_resolve"} {
		res, err := DecodePagerDuty(read(t, name+".json"), now)
		require.NoError(t, err)
		golden(t, name, res)
	}
	for _, name := range []string{"mackerel_alert", "mackerel_ok"} {
		res, err := DecodeMackerel(read(t, name+".json"), false, now)
		require.NoError(t, err)
		golden(t, name, res)
	}
	res, err := DecodeMackerel(read(t, "mackerel_host_status.json"), false, now)
	require.NoError(t, err)
	require.Nil(t, res.Alert, "other events are ignored by default")
	res, err = DecodeMackerel(read(t, "mackerel_host_status.json"), true, now)
	require.NoError(t, err)
	golden(t, "mackerel_host_status_routed", res)
}

func TestMappings(t *testing.T) {
	_, alerts, err := DecodeAlertmanager(read(t, "alertmanager_firing.json"))
	require.NoError(t, err)
	require.Equal(t, "am:3c8c0f1b5c2f7a1e", alerts[0].Identity)
	require.Equal(t, "resolved", alerts[1].Status)

	pd, err := DecodePagerDuty(read(t, "pagerduty_trigger.json"), now)
	require.NoError(t, err)
	a := pd.Alert
	require.Regexp(t, `^pd:[0-9a-f]{32}:srv01/mysql$`, a.Identity, "scoped by routing key")
	require.Equal(t, map[string]string{"alertname": "disk", "severity": "critical", "source": "prod-datapipe03.example.com", "instance": "prod-datapipe03.example.com", "component": "mysql", "group": "prod-datapipe", "class": "disk"}, a.Labels)
	require.Equal(t, "DISK at 99% on machine prod-datapipe03.example.com", a.Annotations["summary"])
	require.Equal(t, "0.75", a.Annotations["load avg"])
	require.Equal(t, time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC), a.StartsAt.UTC())

	res, err := DecodePagerDuty(read(t, "pagerduty_resolve.json"), now)
	require.NoError(t, err)
	require.Equal(t, "resolved", res.Alert.Status)
	require.False(t, res.HasPayload)

	ack, err := DecodePagerDuty([]byte(`{"routing_key":"R0UT1NGKEY0000000000000000000001","event_action":"acknowledge","dedup_key":"k"}`), now)
	require.NoError(t, err)
	require.Equal(t, "firing", ack.Alert.Status)
	require.Equal(t, "acknowledge", ack.Alert.Action)

	gen, err := DecodePagerDuty([]byte(`{"routing_key":"R0UT1NGKEY0000000000000000000001","event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info"}}`), now)
	require.NoError(t, err)
	require.Len(t, gen.DedupKey, 32, "a missing dedup_key on trigger is generated")

	m, err := DecodeMackerel(read(t, "mackerel_alert.json"), false, now)
	require.NoError(t, err)
	require.Equal(t, "mackerel:2bj...", m.Alert.Identity)
	require.Equal(t, map[string]string{"alertname": "loadavg5", "monitor": "loadavg5", "severity": "critical", "source": "mackerel", "org": "Macker...", "trigger": "monitor", "host": "app01", "instance": "app01", "service": "Service", "role": "Role"}, m.Alert.Labels)
	require.Equal(t, "loadavg5 2.25536 > 1.95885", m.Alert.Annotations["summary"])
	require.Equal(t, "[CRITICAL] loadavg5 on app01: loadavg5 2.25536 > 1.95885", m.Alert.Annotations["title"])
	require.Equal(t, "Check the disk usage runbook", m.Alert.Annotations["memo"], "the monitor's memo under its own name")
	ok, err := DecodeMackerel(read(t, "mackerel_ok.json"), false, now)
	require.NoError(t, err)
	require.Equal(t, "resolved", ok.Alert.Status)
	require.Equal(t, time.Unix(1473130212, 0).UTC(), ok.Alert.EndsAt)
}

// A groupKey of any length is taken whole, and truncatedAlerts as sent:
// Alertmanager with group_by: ['...'] puts every label in the group key,
// and does not retry a 400. The store bounds the key where it indexes it
// (queue.StoreKey); templates and PagerDuty's dedup_key need it whole.
func TestAlertmanagerGroupKeyAndTruncated(t *testing.T) {
	cases := []struct {
		name      string
		groupKey  string
		truncated uint64
	}{
		{"empty", "", 0},
		{"short", `{}:{alertname="Disk"}`, 0},
		{"2,048 bytes", `{}:{a="` + strings.Repeat("k", 2048-10) + `"}`, 0},
		{"2,049 bytes", `{}:{a="` + strings.Repeat("k", 2049-10) + `"}`, 0},
		{"64 KiB, multi-byte", `{}:{a="` + strings.Repeat("é", 32<<10) + `"}`, 0},
		{"truncated", `{}:{alertname="Disk"}`, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body, err := json.Marshal(map[string]any{
				"version": "4", "groupKey": c.groupKey, "truncatedAlerts": c.truncated, "status": "resolved",
				"alerts": []map[string]any{{"status": "resolved", "labels": map[string]string{"a": "b"}, "startsAt": "2026-01-01T00:00:00Z"}},
			})
			require.NoError(t, err)
			src, alerts, err := DecodeAlertmanager(body)
			require.NoError(t, err)
			require.Len(t, alerts, 1)
			require.Equal(t, c.groupKey, src.GroupKey)
			require.Equal(t, c.truncated, src.TruncatedAlerts)
		})
	}
}

func TestValidationErrors(t *testing.T) {
	type decode func([]byte) error
	am := func(b []byte) error { _, _, err := DecodeAlertmanager(b); return err }
	pd := func(b []byte) error { _, err := DecodePagerDuty(b, now); return err }
	pdc := func(b []byte) error { _, err := DecodePagerDutyChange(b, now); return err }
	mk := func(b []byte) error { _, err := DecodeMackerel(b, false, now); return err }
	const rk = `"routing_key":"R0UT1NGKEY0000000000000000000001"`
	cases := []struct {
		name  string
		dec   decode
		body  string
		field string
		msg   string
	}{
		{"am empty body", am, ``, "", "empty body"},
		{"am not json", am, `nope`, "", "invalid JSON"},
		{"am truncated", am, `{"version":"4"`, "", "JSON"},
		{"am trailing data", am, `{"version":"4"} {}`, "", "unexpected data"},
		{"am negative truncatedAlerts", am, `{"version":"4","truncatedAlerts":-5}`, "truncatedAlerts", "must be a whole number, 0 or more, got JSON number -5"},
		{"am not utf-8", am, "{\"version\":\"\xff\"}", "", "UTF-8"},
		{"am version type", am, `{"version":4}`, "version", "must be a string"},
		{"am alerts type", am, `{"version":"4","alerts":{}}`, "alerts", "must be an array"},
		{"am labels type", am, `{"version":"4","alerts":[{"labels":[]}]}`, "alerts[0].labels", "must be an object"},
		{"am label value type", am, `{"version":"4","alerts":[{"labels":{"a":1}}]}`, "alerts[0].labels.a", "must be a string"},
		{"am commonLabels value type", am, `{"version":"4","commonLabels":{"severity":1},"alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"2026-01-01T00:00:00Z"}]}`, "commonLabels.severity", "must be a string"},
		{"am commonAnnotations type", am, `{"version":"4","commonAnnotations":"x","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"2026-01-01T00:00:00Z"}]}`, "commonAnnotations", "must be an object"},
		{"am startsAt format", am, `{"version":"4","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"yesterday"}]}`, "alerts[0].startsAt", "RFC 3339"},
		{"am endsAt format", am, `{"version":"4","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"2026-01-01T00:00:00Z","endsAt":"later"}]}`, "alerts[0].endsAt", "RFC 3339"},
		{"am wrong version", am, `{"version":"3","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"2026-01-01T00:00:00Z"}]}`, "version", `must be "4"`},
		{"am no alerts", am, `{"version":"4","alerts":[]}`, "alerts", "at least one alert"},
		{"am bad status", am, `{"version":"4","alerts":[{"status":"x","labels":{"a":"b"},"startsAt":"2026-01-01T00:00:00Z"}]}`, "alerts[0].status", "firing"},
		{"am no labels", am, `{"version":"4","alerts":[{"status":"firing","startsAt":"2026-01-01T00:00:00Z"}]}`, "alerts[0].labels", "at least one label"},
		{"am empty label name", am, `{"version":"4","alerts":[{"status":"firing","labels":{"":"b"},"startsAt":"2026-01-01T00:00:00Z"}]}`, "alerts[0].labels", "invalid label name"},
		{"am no startsAt", am, `{"version":"4","alerts":[{"status":"firing","labels":{"a":"b"}}]}`, "alerts[0].startsAt", "required"},
		{"am NUL in fingerprint", am, `{"version":"4","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"2026-01-01T00:00:00Z","fingerprint":"ab\u0000cd"}]}`, "alerts[0].fingerprint", "NUL"},
		{"am NUL in groupKey", am, `{"version":"4","groupKey":"{}:{a=\"\u0000\"}","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"2026-01-01T00:00:00Z"}]}`, "groupKey", "NUL"},
		{"am long fingerprint", am, `{"version":"4","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"2026-01-01T00:00:00Z","fingerprint":"` + strings.Repeat("f", 65) + `"}]}`, "alerts[0].fingerprint", "longer"},

		{"pd no routing key", pd, `{"event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info"}}`, "routing_key", "'routing_key' is missing or blank"},
		{"pd short routing key", pd, `{"routing_key":"abc","event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info"}}`, "routing_key", "should be 32 characters"},
		{"pd no action", pd, `{` + rk + `}`, "event_action", "'event_action' is missing or blank"},
		{"pd bad action", pd, `{` + rk + `,"event_action":"snooze"}`, "event_action", "'event_action' is invalid"},
		{"pd no payload", pd, `{` + rk + `,"event_action":"trigger"}`, "payload", "'payload' is missing"},
		{"pd no summary", pd, `{` + rk + `,"event_action":"trigger","payload":{"source":"h","severity":"info"}}`, "payload.summary", "missing or blank"},
		{"pd long summary", pd, `{` + rk + `,"event_action":"trigger","payload":{"summary":"` + strings.Repeat("x", 1025) + `","source":"h","severity":"info"}}`, "payload.summary", "too long"},
		{"pd no source", pd, `{` + rk + `,"event_action":"trigger","payload":{"summary":"s","severity":"info"}}`, "payload.source", "missing or blank"},
		{"pd bad severity", pd, `{` + rk + `,"event_action":"trigger","payload":{"summary":"s","source":"h","severity":"fatal"}}`, "payload.severity", "must be one of"},
		{"pd bad timestamp", pd, `{` + rk + `,"event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info","timestamp":"noon"}}`, "payload.timestamp", "ISO 8601"},
		{"pd resolve without dedup", pd, `{` + rk + `,"event_action":"resolve"}`, "dedup_key", "required for resolve"},
		{"pd NUL in dedup", pd, `{` + rk + `,"event_action":"resolve","dedup_key":"a\u0000b"}`, "dedup_key", "NUL"},
		{"pd long dedup", pd, `{` + rk + `,"event_action":"resolve","dedup_key":"` + strings.Repeat("d", 256) + `"}`, "dedup_key", "too long"},
		{"pd links type", pd, `{` + rk + `,"event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info"},"links":{"href":"x"}}`, "links", "must be an array"},
		{"pd over 512 KB", pd, `{` + rk + `,"event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info","custom_details":"` + strings.Repeat("x", 512000) + `"}}`, "", "too large"},
		{"pd payload type", pd, `{` + rk + `,"event_action":"trigger","payload":"x"}`, "payload", "must be an object"},
		{"pd link type", pd, `{` + rk + `,"event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info"},"links":[1]}`, "links[0]", "must be an object"},
		{"pd summary type", pd, `{` + rk + `,"event_action":"trigger","payload":{"summary":1,"source":"h","severity":"info"}}`, "payload.summary", "must be a string"},
		{"pd change no summary", pdc, `{` + rk + `,"payload":{"source":"x"}}`, "payload.summary", "missing"},
		{"pd change no payload", pdc, `{` + rk + `}`, "payload", "missing"},

		{"mackerel no event", mk, `{}`, "event", "required"},
		{"mackerel no alert", mk, `{"event":"alert"}`, "alert", "required"},
		{"mackerel no id", mk, `{"event":"alert","alert":{"status":"critical"}}`, "alert.id", "required"},
		{"mackerel long id", mk, `{"event":"alert","alert":{"id":"` + strings.Repeat("a", 256) + `","status":"critical"}}`, "alert.id", "longer than 255 bytes"},
		{"mackerel long alert group id", mk, `{"event":"alertGroup","alertGroup":{"id":"` + strings.Repeat("g", 256) + `","status":"CRITICAL"}}`, "alertGroup.id", "longer than 255 bytes"},
		{"mackerel NUL in id", mk, `{"event":"alert","alert":{"id":"x\u0000y","status":"critical"}}`, "alert.id", "NUL"},
		{"mackerel NUL in alert group id", mk, `{"event":"alertGroup","alertGroup":{"id":"g\u0000","status":"CRITICAL"}}`, "alertGroup.id", "NUL"},
		{"mackerel bad status", mk, `{"event":"alert","alert":{"id":"x","status":"bad"}}`, "alert.status", "must be one of"},
		{"mackerel role type", mk, `{"event":"alert","service":{"name":"s","roles":[1]},"alert":{"id":"x","status":"critical"}}`, "service.roles[0]", "must be a role object or a role name"},
		{"mackerel roles type", mk, `{"event":"alert","host":{"name":"h","roles":"web"},"alert":{"id":"x","status":"critical"}}`, "host.roles", "must be an array"},
		{"mackerel metric labels type", mk, `{"event":"alert","metric":{"labels":{"a":1}},"alert":{"id":"x","status":"critical"}}`, "metric.labels.a", "must be a string"},
		{"mackerel metricValue type", mk, `{"event":"alert","alert":{"id":"x","status":"ok","metricValue":"high"}}`, "alert.metricValue", "must be a number"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.dec([]byte(c.body))
			require.Error(t, err)
			require.Contains(t, err.Error(), c.msg)
			if c.field != "" {
				var fields []string
				var es Errors
				var fe *FieldError
				if errorsAs(err, &es) {
					for _, e := range es {
						fields = append(fields, e.Field)
					}
				} else if errorsAs(err, &fe) {
					fields = append(fields, fe.Field)
				}
				require.Contains(t, fields, c.field, err.Error())
			}
		})
	}
}

// A value of the wrong JSON type is named with its array index and map
// key (encoding/json alone says alerts.labels), on every input.
func TestTypeErrorsNameTheElement(t *testing.T) {
	am := func(labels string) []byte {
		return []byte(`{"version":"4","status":"firing","receiver":"x","groupKey":"g","alerts":[` +
			`{"status":"firing","labels":{"alertname":"A"},"startsAt":"2026-11-28T10:00:00Z"},` +
			`{"status":"firing","labels":` + labels + `,"startsAt":"2026-11-28T10:00:00Z"}]}`)
	}
	cases := []struct {
		name   string
		decode func() error
		field  string
	}{
		{"number label", func() error { _, _, err := DecodeAlertmanager(am(`{"alertname":"B","replicas":3}`)); return err }, "alerts[1].labels.replicas"},
		{"object label", func() error { _, _, err := DecodeAlertmanager(am(`{"alertname":"B","x":{"y":"z"}}`)); return err }, "alerts[1].labels.x"},
		{"labels not an object", func() error { _, _, err := DecodeAlertmanager(am(`["a"]`)); return err }, "alerts[1].labels"},
		{"mackerel role", func() error {
			_, err := DecodeMackerel([]byte(`{"event":"alert","host":{"id":"h1","name":"web","roles":[{"serviceName":"s","roleName":"r"},{"serviceName":"s","roleName":7}]},"alert":{"id":"a1","status":"critical","isOpen":true,"monitorName":"m","createdAt":1700000000000}}`), true, time.Now())
			return err
		}, "host.roles[1].roleName"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.decode()
			require.Error(t, err)
			require.Contains(t, err.Error(), c.field)
		})
	}
}
