package backlog_test

import (
	"context"
	"log/slog"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/backlog"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// TestRenderIsWhatDeliverCreates renders the create call online, delivers
// the same notification to the fake and compares the form it received.
func TestRenderIsWhatDeliverCreates(t *testing.T) {
	cases := []struct {
		name, extra string
		ja          bool
	}{
		{name: "defaults"},
		{name: "priority assignee custom fields", extra: "priority: '{{ if eq .CommonLabels.severity \"critical\" }}High{{ else }}Low{{ end }}'\nassignee: oncall\ncustom_fields:\n  Runbook: '{{ .CommonAnnotations.runbook_url }}'\n  Team: '{{ .CommonLabels.team }}'\n"},
		{name: "unknown assignee falls back", extra: "assignee: '{{ .CommonLabels.team }}'\n"},
		{name: "backlog notation", ja: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake := sinkstest.NewBacklog(apiKey)
			if c.ja {
				fake.TextFormattingRule = "backlog"
			}
			defer fake.Close()
			n, err := newNotifier(t, fake, c.extra, store(t))
			require.NoError(t, err)
			notif := sample("firing")
			r, err := n.Render(context.Background(), notif, true)
			require.NoError(t, err)
			require.True(t, r.Resolved)
			require.Equal(t, http.MethodPost, r.Method)
			require.Equal(t, fake.URL+"/api/v2/issues", r.URL)
			require.Empty(t, issueCreates(fake), "Render creates nothing")
			require.NoError(t, n.Deliver(context.Background(), notif))
			creates := issueCreates(fake)
			require.Len(t, creates, 1)
			require.Equal(t, r.Form, creates[0].Form, "the rendered form is the form sent")
		})
	}
}

func issueCreates(fake *sinkstest.Backlog) []sinkstest.BacklogCall {
	var out []sinkstest.BacklogCall
	for _, c := range fake.Calls() {
		if c.Method == http.MethodPost && c.Path == "/api/v2/issues" {
			out = append(out, c)
		}
	}
	return out
}

// TestRenderOffline shows names, calls nothing, and skips what creates no
// issue.
func TestRenderOffline(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	n, err := backlog.New(context.Background(), conf(t, fake.URL, "priority: High\nassignee: oncall\ncustom_fields:\n  Team: '{{ .CommonLabels.team }}'\n"), backlog.Deps{
		ID: "tickets/backlog/0", Template: tmpl(t), Metrics: backlog.NewMetrics(prometheus.NewRegistry()),
		Logger: slog.New(slog.DiscardHandler), Offline: true,
	})
	require.NoError(t, err)
	r, err := n.Render(context.Background(), sample("firing"), false)
	require.NoError(t, err)
	require.False(t, r.Resolved)
	require.Equal(t, "OPS", r.Form.Get("projectId"))
	require.Equal(t, "Bug", r.Form.Get("issueTypeId"))
	require.Equal(t, "High", r.Form.Get("priorityId"))
	require.Equal(t, "oncall", r.Form.Get("assigneeId"))
	require.Equal(t, "db", r.Form.Get("customField_Team"))
	require.Contains(t, r.Form.Get("description"), backlog.Marker(n.Destination(), "am:c0ffee", 1))
	require.Empty(t, fake.Calls(), "offline calls nothing")

	r, err = n.Render(context.Background(), sample("resolved"), false)
	require.NoError(t, err)
	require.Nil(t, r.Form)
	require.Contains(t, r.Skip, "closed")

	change := sample("firing")
	change.Alerts[0].Action = sinks.ActionChange
	r, err = n.Render(context.Background(), change, false)
	require.NoError(t, err)
	require.Nil(t, r.Form)
	require.NotEmpty(t, r.Skip)
}
