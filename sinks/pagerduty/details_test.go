package pagerduty

import (
	"encoding/json"
	"testing"

	"github.com/prometheus/alertmanager/template"
	"github.com/stretchr/testify/require"
)

// TestRenderDetailMatchesAlertmanager: whatever a detail renders to, the
// value sent is the one Alertmanager's DeepCopyWithTemplate gives.
func TestRenderDetailMatchesAlertmanager(t *testing.T) {
	identity := func(s string) (string, error) { return s, nil }
	for _, tc := range []struct {
		name  string
		value any
		plain bool // decoded as JSON, not YAML
	}{
		{"text", "disk full on host-1", false},
		{"number", "3", false},
		{"alerts as toJson", `[{"status":"firing","labels":{"alertname":"A","instance":"h1"},"annotations":{"summary":"a \u003c b \"q\" \\ /"},"startsAt":"2026-01-01T00:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://x/graph?g0.expr=up%3D%3D0","fingerprint":"abc"}]`, true},
		{"empty list", `[]`, true},
		{"empty object", `{}`, true},
		{"bool and null", `{"a":true,"b":null,"c":[false]}`, true},
		{"unicode", `{"summary":"ディスクが一杯です","e":"\u00e9"}`, true},
		{"numbers go through YAML", `{"a":1,"b":1e5,"c":-0,"d":1.0}`, false},
		{"duplicate keys go through YAML", `{"a":"x","a":"y"}`, false},
		{"yaml text", "a: b\nc:\n  - d", false},
		{"trailing text", `{"a":"b"} x`, false},
		{"nested config", map[string]any{"k": []any{`["x"]`, "y", 2}, "n": map[any]any{"i": `{"j":"k"}`, 3: "skipped"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, wantErr := template.DeepCopyWithTemplate(tc.value, identity)
			got, err := renderDetail(tc.value, identity)
			require.Equal(t, wantErr, err)
			wj, err := json.Marshal(want)
			require.NoError(t, err)
			gj, err := json.Marshal(got)
			require.NoError(t, err)
			require.JSONEq(t, string(wj), string(gj))
			require.Equal(t, wj, gj, "same JSON sent to PagerDuty")
			if s, ok := tc.value.(string); ok {
				_, plain := jsonDetail(s)
				require.Equal(t, tc.plain, plain)
			}
		})
	}
}
