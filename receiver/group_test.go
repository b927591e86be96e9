package receiver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// truncated is an Alertmanager webhook body that says it left n alerts out
// (webhook_configs max_alerts): Alertmanager cuts the group's alerts to
// max_alerts, then computes the message's status from the alerts kept.
func truncated(t *testing.T, receiver, groupKey string, n int, alerts ...sinkstest.WebhookAlert) []byte {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(sinkstest.Webhook(receiver, groupKey, map[string]string{"alertname": "Disk"}, alerts...), &m))
	m["truncatedAlerts"] = n
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

// A message that left alerts out (truncatedAlerts > 0) never resolves a
// group: the alerts it left out may still fire, and Alertmanager sends
// nothing more until repeat_interval. The group resolves with the first
// message that lists every alert of it resolved. Alert mode keeps a state
// per alert, so there the listed alerts resolve as they say.
func TestGroupModeTruncatedMessageDoesNotResolve(t *testing.T) {
	start := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	gk := `{}:{alertname="Disk"}`
	h := func(host, status string) sinkstest.WebhookAlert {
		return sinkstest.NamedAlert("Disk", "critical", host, status, start)
	}
	type step struct {
		truncated int
		alerts    []sinkstest.WebhookAlert
		// resolves is how many resolves PagerDuty has had after the step;
		// closed whether the Backlog issue is closed.
		resolves int
		closed   bool
	}
	cases := []struct {
		name    string
		backlog bool
		mode    string
		steps   []step
		// held is alertfan_group_resolves_held_total at the end.
		held int
	}{
		{
			name: "pagerduty group: listed alerts resolved, two left out",
			mode: "group",
			steps: []step{
				{2, []sinkstest.WebhookAlert{h("h1", "firing"), h("h2", "firing")}, 0, false},
				{2, []sinkstest.WebhookAlert{h("h1", "resolved"), h("h2", "resolved")}, 0, false},
				{0, []sinkstest.WebhookAlert{h("h1", "resolved"), h("h2", "resolved"), h("h3", "resolved"), h("h4", "resolved")}, 1, false},
			},
			held: 1,
		},
		{
			name: "pagerduty group: the one listed alert resolved, one left out",
			mode: "group",
			steps: []step{
				{1, []sinkstest.WebhookAlert{h("h1", "firing")}, 0, false},
				{1, []sinkstest.WebhookAlert{h("h1", "resolved")}, 0, false},
				{1, []sinkstest.WebhookAlert{h("h1", "resolved")}, 0, false},
				{0, []sinkstest.WebhookAlert{h("h1", "resolved"), h("h2", "resolved")}, 1, false},
			},
			held: 2,
		},
		{
			name: "pagerduty alert mode: each listed alert resolves",
			mode: "alert",
			steps: []step{
				{2, []sinkstest.WebhookAlert{h("h1", "firing"), h("h2", "firing")}, 0, false},
				{2, []sinkstest.WebhookAlert{h("h1", "resolved"), h("h2", "resolved")}, 2, false},
			},
		},
		{
			name:    "backlog group: the issue stays open and says what was left out",
			backlog: true,
			mode:    "group",
			steps: []step{
				{2, []sinkstest.WebhookAlert{h("h1", "firing"), h("h2", "firing")}, 0, false},
				{2, []sinkstest.WebhookAlert{h("h1", "resolved"), h("h2", "resolved")}, 0, false},
				{0, []sinkstest.WebhookAlert{h("h1", "resolved"), h("h2", "resolved"), h("h3", "resolved"), h("h4", "resolved")}, 0, true},
			},
			held: 1,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pd := sinkstest.NewPagerDuty()
			defer pd.Close()
			bl := sinkstest.NewBacklog(backlogKey)
			defer bl.Close()
			cfg, receiver := pdConfig(pd.EventsURL(), "        mode: "+c.mode+"\n"), "oncall"
			if c.backlog {
				cfg, receiver = backlogConfig(bl.URL, "        mode: "+c.mode+"\n"), "tickets"
			}
			ts := startServer(t, cfg)
			for i, s := range c.steps {
				code, body := ts.post(t, "/webhook", truncated(t, receiver, gk, s.truncated, s.alerts...))
				require.Equal(t, 200, code, "step %d: %v", i, body)
				settle(t, ts)
				if c.backlog {
					is := bl.Issues()
					require.Len(t, is, 1, "step %d", i)
					require.Equal(t, s.closed, bl.StatusName(is[0].StatusID) == "Closed", "step %d: status %s", i, bl.StatusName(is[0].StatusID))
					if s.truncated > 0 {
						require.Contains(t, is[0].Description, fmt.Sprintf("%d not listed", s.truncated), "step %d: the description says alerts were left out", i)
					}
					continue
				}
				require.Equal(t, s.resolves, len(eventsFor(pd, "resolve")), "step %d: resolves sent", i)
			}
			if !c.backlog && c.mode == "group" {
				sum := sha256.Sum256([]byte(gk))
				for _, e := range pd.Events() {
					require.Equal(t, hex.EncodeToString(sum[:]), e.DedupKey)
				}
			}
			_, m := ts.get(t, "/metrics")
			series := fmt.Sprintf(`alertfan_group_resolves_held_total{receiver=%q}`, receiver)
			if c.held == 0 {
				require.NotContains(t, m, series)
				require.NotContains(t, ts.logs.String(), "Group not resolved")
			} else {
				require.Contains(t, m, fmt.Sprintf("%s %d", series, c.held))
				require.Contains(t, ts.logs.String(), "Group not resolved")
			}
		})
	}
}
