package pagerduty

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// TestRenderIsWhatDeliverSends renders each kind of call, delivers the
// same notification to the fake and compares the bytes it received.
func TestRenderIsWhatDeliverSends(t *testing.T) {
	fake := sinkstest.NewPagerDuty()
	defer fake.Close()
	start := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	single := func(mut func(*sinks.Alert)) *sinks.Notification {
		a := sinks.Alert{Identity: "am:fp1", Status: sinks.StatusFiring, Fingerprint: "fp1", StartsAt: start,
			Labels:      map[string]string{"alertname": "DiskFull", "severity": "warning", "instance": "db-1"},
			Annotations: map[string]string{"summary": "disk <90%> & full", "link_runbook": "https://runbooks.example/disk"}}
		if mut != nil {
			mut(&a)
		}
		return &sinks.Notification{Key: a.Identity, Source: sinks.Source{Input: "alertmanager"}, Alerts: []sinks.Alert{a}, AcceptedAt: start}
	}
	cases := []struct {
		name, conf string
		notif      *sinks.Notification
		change     bool
		skip       bool
	}{
		{name: "alert mode trigger", conf: "mode: alert\n", notif: single(nil)},
		{name: "group mode", conf: "", notif: groupNotification()},
		{name: "templates", conf: "mode: alert\ndescription: '{{ .CommonLabels.alertname }} on {{ .CommonLabels.instance }}'\ndetails:\n  team: db\n", notif: single(nil)},
		{name: "resolve", conf: "mode: alert\n", notif: single(func(a *sinks.Alert) { a.Status = sinks.StatusResolved; a.EndsAt = start.Add(time.Minute) })},
		{name: "resolve not sent", conf: "mode: alert\nsend_resolved: false\n", notif: single(func(a *sinks.Alert) { a.Status = sinks.StatusResolved; a.EndsAt = start.Add(time.Minute) }), skip: true},
		{name: "change from labels", conf: "mode: alert\n", notif: single(func(a *sinks.Alert) { a.Action = sinks.ActionChange }), change: true},
		{name: "change relayed", conf: "mode: alert\n", notif: single(func(a *sinks.Alert) {
			a.Action = sinks.ActionChange
			a.PagerDuty = &sinks.PDEvent{Summary: "deployed v2", Source: "ci", CustomDetails: json.RawMessage(`[1,"two"]`)}
		}), change: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newNotifier(t, c.conf, fake.EventsURL())
			r, err := n.Render(c.notif)
			require.NoError(t, err)
			before := len(fake.Events())
			require.NoError(t, n.Deliver(context.Background(), c.notif))
			evs := fake.Events()
			if c.skip {
				require.Nil(t, r.Body)
				require.NotEmpty(t, r.Skip)
				require.Len(t, evs, before, "nothing is sent")
				return
			}
			require.Len(t, evs, before+1)
			got := evs[len(evs)-1]
			require.Equal(t, string(r.Body), string(got.Raw), "the rendered body is the body sent")
			require.NotContains(t, string(r.Redacted()), routingKey)
			require.Contains(t, string(r.Redacted()), `"routing_key":"<secret>"`)
			require.Equal(t, c.change, got.Change)
			want := fake.EventsURL()
			if c.change {
				want = fake.URL + "/v2/change/enqueue"
			}
			require.Equal(t, want, r.URL)
		})
	}
}

// TestRenderIsQuiet: a preview of a severity PagerDuty refuses does not
// count as a replacement.
func TestRenderIsQuiet(t *testing.T) {
	n := newNotifier(t, "mode: alert\nseverity: '{{ .CommonLabels.severity }}'\n", "")
	n.target = "render-quiet/pagerduty/0"
	notif := &sinks.Notification{Key: "am:x", Source: sinks.Source{Input: "alertmanager"}, AcceptedAt: time.Now(),
		Alerts: []sinks.Alert{{Identity: "am:x", Status: sinks.StatusFiring, StartsAt: time.Now(), Labels: map[string]string{"alertname": "A", "severity": "page"}}}}
	// The counter is the process's: compare with its value before (-count).
	before := counterValue(t, n.target)
	r, err := n.Render(notif)
	require.NoError(t, err)
	require.Contains(t, string(r.Body), `"severity":"error"`)
	require.Equal(t, before, counterValue(t, n.target))
	_, err = n.Event(notif)
	require.NoError(t, err)
	require.Equal(t, before+1, counterValue(t, n.target))
}

func counterValue(t *testing.T, target string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(severityFallbacks))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "target" && l.GetValue() == target {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestDeliverAnswers: Deliver posts the rendered body itself; what
// PagerDuty answers is classified as go-pagerduty's client did.
func TestDeliverAnswers(t *testing.T) {
	fake := sinkstest.NewPagerDuty()
	defer fake.Close()
	n := newNotifier(t, "mode: alert\n", fake.EventsURL())
	notif := &sinks.Notification{Key: "am:x", Source: sinks.Source{Input: "alertmanager"}, AcceptedAt: time.Now(),
		Alerts: []sinks.Alert{{Identity: "am:x", Status: sinks.StatusFiring, StartsAt: time.Now(), Labels: map[string]string{"alertname": "A"}}}}
	cases := []struct {
		name      string
		resp      sinkstest.PDResponse
		ok        bool
		retryable bool
		contains  string
	}{
		{name: "accepted", resp: sinkstest.PDResponse{Status: 202, Body: `{"status":"success","message":"Event processed","dedup_key":"k"}`}, ok: true},
		{name: "2xx that is not JSON", resp: sinkstest.PDResponse{Status: 202, Body: `<html>`}, retryable: true, contains: "not JSON"},
		{name: "server error", resp: sinkstest.PDResponse{Status: 502, Body: `bad gateway`}, retryable: true, contains: "502"},
		{name: "invalid event", resp: sinkstest.PDResponse{Status: 400, Body: `{"status":"invalid event","message":"Event object is invalid","errors":["'payload.summary' is missing"]}`},
			contains: "Event object is invalid: 'payload.summary' is missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake.Script(c.resp)
			call := &sinks.Call{}
			err := n.Deliver(sinks.WithCall(context.Background(), call), notif)
			require.Equal(t, "trigger", call.Action, "the history records the call")
			require.Equal(t, c.resp.Status, call.StatusCode)
			dk, derr := n.DedupKey(notif)
			require.NoError(t, derr)
			require.Equal(t, dk, call.Ref)
			if c.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.contains)
			require.Equal(t, c.retryable, sinks.AsError(err).Retryable)
			require.NotContains(t, err.Error(), routingKey)
		})
	}
}
