package receiver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/receiver/queue"
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

// incompressible is n bytes of hex digits without repeats: PostgreSQL
// compresses a long index entry before it judges its size, so a key of
// repeated text would fit where a real one does not.
func incompressible(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		sum := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
		b.WriteString(hex.EncodeToString(sum[:]))
	}
	return b.String()[:n]
}

// A groupKey of any length within the body limit is accepted: with
// group_by: ['...'] Alertmanager puts every label in it, and it does not
// retry a 400. Group mode keys its state by a bounded form of a long key
// (PostgreSQL cannot index a long one) and sends PagerDuty Alertmanager's
// dedup_key, sha256 of the whole key, on the trigger and on the resolve.
func TestLongGroupKey(t *testing.T) {
	start := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			pd := sinkstest.NewPagerDuty()
			defer pd.Close()
			bl := sinkstest.NewBacklog(backlogKey)
			defer bl.Close()
			dir := t.TempDir()
			ts := startServerIn(t, dir, lcStorage(t, driver, dir)+fmt.Sprintf(`
route:
  receiver: all
receivers:
  - name: all
    pagerduty_configs:
      - routing_key: %[1]s
        url: %[2]s
        mode: group
        rate_limit_per_minute: 60000
      - routing_key: %[1]s
        url: %[2]s
        rate_limit_per_minute: 60000
    backlog_configs:
      - api_url: %[3]s
        api_key: %[4]s
        project: OPS
        issue_type: Bug
        mode: group
        rate_limit_per_minute: 60000
`, testRoutingKey, pd.EventsURL(), bl.URL, backlogKey))
			al := func(status string) sinkstest.WebhookAlert {
				a := sinkstest.NamedAlert("ProbeFailed", "critical", "h1", status, start)
				a.Labels["url"] = "https://shop.example.com/checkout?" + strings.Repeat("item=123456789&", 250)
				return a
			}
			url := al("firing").Labels["url"]
			gk := `{}/{severity="critical"}:{alertname="ProbeFailed", instance="h1", severity="critical", url="` + url + `", trace="` + incompressible(4000) + `", extra="` + strings.Repeat("é", 1200) + `"}`
			require.Greater(t, len(gk), 10_000)
			for _, status := range []string{"firing", "resolved"} {
				code, body := ts.post(t, "/webhook", sinkstest.Webhook("all", gk, map[string]string{"url": url}, al(status)))
				require.Equal(t, 200, code, "%v", body)
				settle(t, ts)
			}
			sum := sha256.Sum256([]byte(gk))
			// events splits PagerDuty's events into the group target's
			// (Alertmanager's dedup_key) and the alert-mode target's.
			events := func() (group, single []string, singleKeys map[string]bool) {
				singleKeys = map[string]bool{}
				for _, e := range pd.Events() {
					if e.DedupKey == hex.EncodeToString(sum[:]) {
						group = append(group, e.EventAction)
					} else {
						single = append(single, e.EventAction)
						singleKeys[e.DedupKey] = true
					}
				}
				return group, single, singleKeys
			}
			group, single, singleKeys := events()
			require.Equal(t, []string{"trigger", "resolve"}, group, "group mode: Alertmanager's dedup_key, sha256 of the whole group key")
			require.Equal(t, []string{"trigger", "resolve"}, single, "alert mode")
			require.Len(t, singleKeys, 1)
			is := bl.Issues()
			require.Len(t, is, 1)
			require.Equal(t, "Closed", bl.StatusName(is[0].StatusID))

			// The same group fires again: the one state the long key has
			// is found again (a new occurrence of the group's incident and
			// issue, not a second state beside the first).
			later := start.Add(30 * time.Minute)
			a := al("firing")
			a.StartsAt = later
			code, body := ts.post(t, "/webhook", sinkstest.Webhook("all", gk, nil, a))
			require.Equal(t, 200, code, "%v", body)
			settle(t, ts)
			require.Len(t, bl.Issues(), 1, "the closed issue is reopened, not duplicated")
			require.Equal(t, "Open", bl.StatusName(bl.Issues()[0].StatusID))
			group, single, _ = events()
			require.Equal(t, []string{"trigger", "resolve", "trigger"}, group)
			require.Equal(t, []string{"trigger", "resolve", "trigger"}, single)
		})
	}
}

// resolve_after covers group-mode targets too: a group no message has
// mentioned for that long resolves. It is what ends a group that resolved
// while it had more alerts than max_alerts (Alertmanager then sends only
// truncated messages, which never resolve it, and then nothing), and a
// group Alertmanager lost. Repeats of an unchanged group refresh it.
func TestGroupModeResolveAfter(t *testing.T) {
	start := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	gk := `{}:{alertname="Disk"}`
	h := func(host, status string) sinkstest.WebhookAlert {
		return sinkstest.NamedAlert("Disk", "critical", host, status, start)
	}
	for _, backlog := range []bool{false, true} {
		t.Run(fmt.Sprintf("backlog=%v", backlog), func(t *testing.T) {
			e := newGroupEnv(t, backlog, "    resolve_after: 2s\n")
			ts, pd, bl, receiver, send := e.ts, e.pd, e.bl, e.receiver, e.send
			closed := func() bool {
				is := bl.Issues()
				return len(is) == 1 && bl.StatusName(is[0].StatusID) == "Closed"
			}
			resolves := func() int {
				if backlog {
					if closed() {
						return 1
					}
					return 0
				}
				return len(eventsFor(pd, "resolve"))
			}
			send(2, h("h1", "firing"), h("h2", "firing"))
			settle(t, ts)
			// Alertmanager's repeats of the unchanged group (here every
			// 0.7 s, 2.8 s in all) keep it open past resolve_after.
			for range 4 {
				time.Sleep(700 * time.Millisecond)
				send(2, h("h1", "firing"), h("h2", "firing"))
			}
			settle(t, ts)
			require.Zero(t, resolves(), "a group its sender keeps sending stays open")

			// The group resolves while it has more alerts than max_alerts:
			// the message lists resolved alerts and leaves two out, and
			// Alertmanager sends nothing more.
			send(2, h("h1", "resolved"), h("h2", "resolved"))
			settle(t, ts)
			require.Zero(t, resolves(), "a truncated message does not resolve the group")
			require.Eventually(t, func() bool { return resolves() == 1 }, 15*time.Second, 50*time.Millisecond, "resolve_after resolves it")
			settle(t, ts)
			if backlog {
				is := bl.Issues()
				require.NotContains(t, is[0].Description, "not listed", "a group resolved as a whole does not say alerts may still fire")
			} else {
				ev := eventsFor(pd, "resolve")[0]
				sum := sha256.Sum256([]byte(gk))
				require.Equal(t, hex.EncodeToString(sum[:]), ev.DedupKey, "the group's incident")
			}
			_, m := ts.get(t, "/metrics")
			require.Contains(t, m, fmt.Sprintf(`alertfan_alerts_expired_total{receiver=%q} 1`, receiver))
			var got queue.AlertView
			require.Equal(t, 200, getData(t, ts, "/api/v1/alerts/"+url.PathEscape("am:"+h("h1", "firing").Fingerprint), &got))
			require.Contains(t, events(got.History), "expired "+receiver+"/"+map[bool]string{false: "pagerduty", true: "backlog"}[backlog]+"/0",
				"a listed alert's history says why its group resolved")

			// The group fires again (a new occurrence): it opens again.
			triggers := len(eventsFor(pd, "trigger"))
			again := h("h1", "firing")
			again.StartsAt = start.Add(30 * time.Minute)
			send(0, again)
			settle(t, ts)
			if backlog {
				require.Eventually(t, func() bool { return !closed() }, 15*time.Second, 50*time.Millisecond, "the issue opens again")
			} else {
				require.Len(t, eventsFor(pd, "trigger"), triggers+1, "a new trigger after the expiry")
			}
		})
	}
}

// A late copy of a truncated message that lists only resolved alerts (an
// HA peer's, a retry) never opens a group that resolved since: it keeps
// an open group firing, but Alertmanager deletes a group's resolved alerts
// once it has sent them, so after the resolve it carries nothing new.
func TestGroupModeLateHeldCopyDoesNotReopen(t *testing.T) {
	start := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	h := func(host, status string) sinkstest.WebhookAlert {
		return sinkstest.NamedAlert("Disk", "critical", host, status, start)
	}
	for _, backlog := range []bool{false, true} {
		t.Run(fmt.Sprintf("backlog=%v", backlog), func(t *testing.T) {
			e := newGroupEnv(t, backlog, "")
			ts, pd, bl := e.ts, e.pd, e.bl
			send := func(n int, alerts ...sinkstest.WebhookAlert) {
				e.send(n, alerts...)
				settle(t, ts)
			}
			send(2, h("h1", "firing"), h("h2", "firing"))
			send(2, h("h1", "resolved"), h("h2", "resolved"))
			send(0, h("h3", "resolved"), h("h4", "resolved"))
			calls := len(pd.Events())
			issue := bl.Issues()
			send(2, h("h1", "resolved"), h("h2", "resolved")) // the held message again, late
			if backlog {
				require.Len(t, bl.Issues(), 1)
				require.Equal(t, "Closed", bl.StatusName(bl.Issues()[0].StatusID), "the issue stays closed")
				require.Equal(t, issue[0].Description, bl.Issues()[0].Description)
			} else {
				require.Len(t, pd.Events(), calls, "no event: %v", pd.Events()[calls:])
			}
			_, m := ts.get(t, "/metrics")
			require.Contains(t, m, `alertfan_stale_updates_total{input="alertmanager"} 1`)

			// A new occurrence (a firing message) opens it again.
			again := h("h1", "firing")
			again.StartsAt = start.Add(30 * time.Minute)
			send(2, again)
			if backlog {
				require.Eventually(t, func() bool { return bl.StatusName(bl.Issues()[len(bl.Issues())-1].StatusID) != "Closed" }, 15*time.Second, 20*time.Millisecond)
			} else {
				require.Len(t, eventsFor(pd, "trigger"), len(eventsFor(pd, "trigger")))
				require.Equal(t, "trigger", pd.Events()[len(pd.Events())-1].EventAction)
			}
		})
	}
}

// groupEnv is a server whose one receiver reaches a group-mode PagerDuty
// target (or, with backlog, a Backlog one), with receiverKeys added to
// the receiver; send posts an Alertmanager message of the group
// {}:{alertname="Disk"} that left n alerts out.
type groupEnv struct {
	t        *testing.T
	ts       *testServer
	pd       *sinkstest.PagerDuty
	bl       *sinkstest.Backlog
	receiver string
}

func newGroupEnv(t *testing.T, backlog bool, receiverKeys string) *groupEnv {
	e := &groupEnv{t: t, pd: sinkstest.NewPagerDuty(), bl: sinkstest.NewBacklog(backlogKey), receiver: "oncall"}
	t.Cleanup(e.pd.Close)
	t.Cleanup(e.bl.Close)
	cfg := pdConfig(e.pd.EventsURL(), "        mode: group\n")
	if backlog {
		cfg, e.receiver = backlogConfig(e.bl.URL, "        mode: group\n"), "tickets"
	}
	cfg = strings.Replace(cfg, "  - name: "+e.receiver+"\n", "  - name: "+e.receiver+"\n"+receiverKeys, 1)
	e.ts = startServer(t, cfg)
	return e
}

func (e *groupEnv) send(n int, alerts ...sinkstest.WebhookAlert) {
	e.t.Helper()
	code, body := e.ts.post(e.t, "/webhook", truncated(e.t, e.receiver, `{}:{alertname="Disk"}`, n, alerts...))
	require.Equal(e.t, 200, code, "%v", body)
}

// What a held message tells can be new, after the group resolved: an
// alert that fired and resolved between two of Alertmanager's flushes (a
// new occurrence of a listed alert, or a new alert) while another, left
// out by max_alerts, started firing. That opens the group again: its page
// must not wait for repeat_interval.
func TestGroupModeHeldMessageWithNewsReopens(t *testing.T) {
	start := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	h := func(host, status string, at time.Time) sinkstest.WebhookAlert {
		return sinkstest.NamedAlert("Disk", "critical", host, status, at)
	}
	for _, c := range []struct {
		name   string
		listed sinkstest.WebhookAlert
	}{
		{"a new occurrence of a listed alert", h("h1", "resolved", start.Add(50*time.Minute))},
		{"a new alert", h("h0", "resolved", start.Add(50*time.Minute))},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newGroupEnv(t, false, "")
			e.send(0, h("h1", "firing", start))
			settle(t, e.ts)
			e.send(0, h("h1", "resolved", start))
			settle(t, e.ts)
			require.Len(t, eventsFor(e.pd, "resolve"), 1)
			e.send(1, c.listed) // h2 fires, left out
			settle(t, e.ts)
			require.Equal(t, 2, len(eventsFor(e.pd, "trigger")), "the group fires again")
		})
	}
}

// Held messages (truncated, listing only resolved alerts) after the group
// resolved, from the sequences real Alertmanagers send: what is a late
// copy stays quiet, what tells of an alert fired since opens the group.
func TestGroupModeHeldMessageSequences(t *testing.T) {
	s1 := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	s2 := s1.Add(50 * time.Minute)
	h := func(host, status string, at time.Time) sinkstest.WebhookAlert {
		return sinkstest.NamedAlert("Disk", "critical", host, status, at)
	}
	type msg struct {
		truncated int
		alerts    []sinkstest.WebhookAlert
	}
	cases := []struct {
		name     string
		keys     string // receiver keys
		steps    []msg
		expire   bool // wait for resolve_after's resolve after the first step
		triggers int
	}{
		{
			// h1 flapped (S2) and h2 fired, left out: the group opens again
			// (a trigger). h2 resolves. An HA copy of the reopening
			// message then is a late copy.
			name: "a copy of a message that reopened the group",
			steps: []msg{
				{0, []sinkstest.WebhookAlert{h("h1", "firing", s1), h("h2", "firing", s1)}},
				{0, []sinkstest.WebhookAlert{h("h1", "resolved", s1), h("h2", "resolved", s1)}},
				{1, []sinkstest.WebhookAlert{h("h1", "resolved", s2)}},
				{0, []sinkstest.WebhookAlert{h("h2", "resolved", s2)}},
				{1, []sinkstest.WebhookAlert{h("h1", "resolved", s2)}},
			},
			triggers: 2,
		},
		{
			// Alertmanager's answer to the full resolve was lost, so it
			// keeps h1 and h2 and lists them again, now with h3 firing
			// left out: three alerts where the resolve listed two.
			name: "a resend of the resolve that leaves out a new alert",
			steps: []msg{
				{0, []sinkstest.WebhookAlert{h("h1", "firing", s1), h("h2", "firing", s1)}},
				{0, []sinkstest.WebhookAlert{h("h1", "resolved", s1), h("h2", "resolved", s1)}},
				{1, []sinkstest.WebhookAlert{h("h1", "resolved", s1), h("h2", "resolved", s1)}},
			},
			triggers: 2,
		},
		{
			// resolve_after resolved the group; Alertmanager's own,
			// truncated, resolve of the same alerts comes later.
			name: "the sender's truncated resolve after resolve_after's",
			keys: "    resolve_after: 2s\n",
			steps: []msg{
				{2, []sinkstest.WebhookAlert{h("h1", "firing", s1), h("h2", "firing", s1)}},
				{2, []sinkstest.WebhookAlert{h("h1", "resolved", s1), h("h2", "resolved", s1)}},
			},
			expire:   true,
			triggers: 1,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newGroupEnv(t, false, c.keys)
			for i, m := range c.steps {
				e.send(m.truncated, m.alerts...)
				settle(t, e.ts)
				if i == 0 && c.expire {
					require.Eventually(t, func() bool { return len(eventsFor(e.pd, "resolve")) == 1 }, 15*time.Second, 20*time.Millisecond)
				}
			}
			settle(t, e.ts)
			require.Equal(t, c.triggers, len(eventsFor(e.pd, "trigger")), "triggers")
		})
	}
}
