package backlog_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// A template the start-up check passes (its sample alert has every label
// and annotation) can fail or render blank for one real alert. The issue
// is still created, and closed, with the field's default, through the
// fake's checks (Backlog refuses an issue without a summary).
func TestTemplateFallbacksStillOpenTheIssue(t *testing.T) {
	const failing = `{{ with .CommonAnnotations.duration }}{{ humanizeDuration . }}{{ end }}`
	cases := []struct {
		name, extra string
		edit        func(a *sinks.Alert)
		check       func(t *testing.T, is sinkstest.BacklogIssue)
	}{
		{
			name:  "summary annotation absent",
			extra: "summary: '{{ .CommonAnnotations.title }}'",
			check: func(t *testing.T, is sinkstest.BacklogIssue) {
				require.Equal(t, "[CRITICAL] DiskFull on db-1:9100: Disk /var is 97% full", is.Summary, "the default summary")
			},
		},
		{
			name:  "summary and the default summary blank",
			extra: "summary: '{{ .CommonAnnotations.title }}'",
			edit:  func(a *sinks.Alert) { a.Labels = map[string]string{} },
			check: func(t *testing.T, is sinkstest.BacklogIssue) {
				require.NotEmpty(t, strings.TrimSpace(is.Summary))
			},
		},
		{
			name:  "summary fails at run time",
			extra: "summary: 'Disk full for " + failing + "'",
			edit:  func(a *sinks.Alert) { a.Annotations["duration"] = "5m" },
			check: func(t *testing.T, is sinkstest.BacklogIssue) {
				require.Equal(t, "[CRITICAL] DiskFull on db-1:9100: Disk /var is 97% full", is.Summary)
			},
		},
		{
			name:  "description fails at run time",
			extra: "description: '" + failing + "'",
			edit:  func(a *sinks.Alert) { a.Annotations["duration"] = "5m" },
			check: func(t *testing.T, is sinkstest.BacklogIssue) {
				require.Contains(t, is.Description, "Free space on /var is below 3%.", "the default description")
			},
		},
		{
			name:  "priority fails at run time",
			extra: "priority: '" + failing + "'",
			edit:  func(a *sinks.Alert) { a.Annotations["duration"] = "5m" },
			check: func(t *testing.T, is sinkstest.BacklogIssue) {
				require.EqualValues(t, 3, is.PriorityID, "default_priority Normal")
			},
		},
		{
			name:  "custom field fails at run time",
			extra: "custom_fields:\n  Runbook: '" + failing + "'",
			edit:  func(a *sinks.Alert) { a.Annotations["duration"] = "5m" },
			check: func(t *testing.T, is sinkstest.BacklogIssue) {
				require.Empty(t, is.Custom, "the field is left empty")
			},
		},
		{
			name:  "resolved comment fails at run time",
			extra: "on_resolved: comment\nresolved_comment: 'Resolved after " + failing + "'",
			edit:  func(a *sinks.Alert) { a.Annotations["duration"] = "5m" },
			check: func(t *testing.T, is sinkstest.BacklogIssue) {
				require.Len(t, is.Comments, 1)
				require.NotContains(t, is.Comments[0], "Resolved after", "the default comment")
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake := sinkstest.NewBacklog(apiKey)
			defer fake.Close()
			n, err := newNotifier(t, fake, c.extra, store(t))
			require.NoError(t, err)
			notif := sample(sinks.StatusFiring)
			if c.edit != nil {
				c.edit(&notif.Alerts[0])
			}
			require.NoError(t, n.Deliver(context.Background(), notif))
			resolved := sample(sinks.StatusResolved)
			if c.edit != nil {
				c.edit(&resolved.Alerts[0])
			}
			require.NoError(t, n.Deliver(context.Background(), resolved))
			issues := fake.Issues()
			require.Len(t, issues, 1)
			c.check(t, issues[0])
		})
	}
}

// A key whose Backlog user may not do what the config asks is a config
// error at start, not a 403 per issue: a Viewer adds no issue, a Reporter
// adds issues but edits none (comments, closes and reopens are edits).
func TestUserRoleThatCannotDoTheConfigsWork(t *testing.T) {
	cases := []struct {
		name  string
		role  int
		extra string
		err   string
	}{
		{"administrator", 1, "", ""},
		{"normal user", 2, "", ""},
		{"reporter, close on resolve", 3, "", `is a Reporter in Backlog, which may add issues but not edit them (status, comments through update-issue), and this config edits them: on_resolved: close`},
		{"guest reporter, comments", 5, "on_resolved: comment\non_repeat: comment", "on_resolved: comment, on_repeat: comment"},
		{"reporter, create only", 3, "on_resolved: none", ""},
		{"viewer", 4, "on_resolved: none", "is a Viewer in Backlog, which may not add issues"},
		{"guest viewer", 6, "", "is a Viewer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake := sinkstest.NewBacklog(apiKey)
			defer fake.Close()
			fake.RoleType = c.role
			n, err := newNotifier(t, fake, c.extra, store(t))
			if c.err != "" {
				require.ErrorContains(t, err, c.err)
				require.NotContains(t, err.Error(), apiKey)
				return
			}
			require.NoError(t, err)
			require.NoError(t, n.Deliver(context.Background(), sample(sinks.StatusFiring)))
			require.NoError(t, n.Deliver(context.Background(), sample(sinks.StatusResolved)))
			require.Len(t, fake.Issues(), 1)
		})
	}
}
