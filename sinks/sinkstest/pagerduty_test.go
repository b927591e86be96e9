package sinkstest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The fake answers as PagerDuty's documentation says
// (https://developer.pagerduty.com/docs/send-alert-event): 202 with the
// dedup key, or 400 {"status":"invalid event","message":"Event object is
// invalid","errors":[…]}.
func TestFakePagerDutyValidatesAsDocumented(t *testing.T) {
	pd := NewPagerDuty()
	defer pd.Close()
	const rk = `"routing_key":"0123456789abcdef0123456789abcdef"`
	const p = `"payload":{"summary":"s","source":"h","severity":"info"`
	cases := []struct {
		name, body string
		ok         bool
		err        string
	}{
		{"minimal trigger", `{` + rk + `,"event_action":"trigger",` + p + `}}`, true, ""},
		{"documented sample", `{` + rk + `,"event_action":"trigger","dedup_key":"samplekeyhere","payload":{"summary":"Example alert on host1.example.com","timestamp":"2015-07-17T08:42:58.315+0000","source":"monitoringtool:cloudvendor:central-region-dc-01:852559987:cluster/api-stats-prod-003","severity":"info","component":"postgres","group":"prod-datapipe","class":"deploy","custom_details":{"ping time":"1500ms","load avg":0.75}},"images":[{"src":"https://www.pagerduty.com/wp-content/uploads/2016/05/pagerduty-logo-green.png","href":"https://example.com/","alt":"Example text"}],"links":[{"href":"https://example.com/","text":"Link text"}],"client":"Sample Monitoring Service","client_url":"https://monitoring.example.com"}`, true, ""},
		{"custom_details string", `{` + rk + `,"event_action":"trigger",` + p + `,"custom_details":"text"}}`, true, ""},
		{"link without text", `{` + rk + `,"event_action":"trigger",` + p + `},"links":[{"href":"https://x/"}]}`, true, ""},
		{"resolve", `{` + rk + `,"event_action":"resolve","dedup_key":"k"}`, true, ""},
		{"short key", `{"routing_key":"x","event_action":"trigger",` + p + `}}`, false, "routing_key"},
		{"bad severity", `{` + rk + `,"event_action":"trigger","payload":{"summary":"s","source":"h","severity":"none"}}`, false, "payload.severity"},
		{"no source", `{` + rk + `,"event_action":"trigger","payload":{"summary":"s","severity":"info"}}`, false, "payload.source"},
		{"bad timestamp", `{` + rk + `,"event_action":"trigger",` + p + `,"timestamp":"yesterday"}}`, false, "payload.timestamp"},
		{"link without href", `{` + rk + `,"event_action":"trigger",` + p + `},"links":[{"text":"x"}]}`, false, "links[0].href"},
		{"images not an array", `{` + rk + `,"event_action":"trigger",` + p + `},"images":{"src":"x"}}`, false, "images"},
		{"long dedup key", `{` + rk + `,"event_action":"resolve","dedup_key":"` + strings.Repeat("k", 256) + `"}`, false, "dedup_key"},
		{"bad action", `{` + rk + `,"event_action":"snooze"}`, false, "event_action"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := http.Post(pd.EventsURL(), "application/json", strings.NewReader(c.body))
			require.NoError(t, err)
			defer resp.Body.Close()
			var out map[string]any
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
			if c.ok {
				require.Equal(t, http.StatusAccepted, resp.StatusCode, out)
				require.Equal(t, "success", out["status"])
				return
			}
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			require.Equal(t, "invalid event", out["status"])
			require.Equal(t, "Event object is invalid", out["message"])
			require.Contains(t, out["errors"].([]any)[0], c.err)
		})
	}
}
