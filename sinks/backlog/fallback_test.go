package backlog_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/backlog"
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
		{"reporter, close on resolve", 3, "", `is a Reporter in Backlog, which may add issues and comments but not edit issues (status, description), and this config edits them: on_resolved: close`},
		{"guest reporter, group mode", 5, "mode: group\non_resolved: comment", "mode: group"},
		{"reporter, update_description", 3, "on_resolved: comment\nupdate_description: true", "update_description: true"},
		{"reporter, comments", 3, "on_resolved: comment\non_repeat: comment", ""},
		{"reporter, create only", 3, "on_resolved: none", ""},
		{"viewer", 4, "on_resolved: none", "is a Viewer in Backlog, which may not add issues"},
		{"guest viewer", 6, "", "is a Viewer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake := sinkstest.NewBacklog(apiKey)
			defer fake.Close()
			fake.SetRoleType(c.role)
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

// A Reporter's key with a config it can serve: every comment (repeat,
// resolve, re-fire, acknowledge) goes by add-comment, which a Reporter may
// call, and nothing is dead-lettered.
func TestReporterCommentsByAddComment(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	fake.SetRoleType(3)
	n, err := newNotifier(t, fake, "on_resolved: comment\non_repeat: comment", store(t))
	require.NoError(t, err)
	ctx := context.Background()
	firing := sample(sinks.StatusFiring)
	require.NoError(t, n.Deliver(ctx, firing))
	require.NoError(t, n.Deliver(ctx, firing), "a repeat comments")
	ack := sample(sinks.StatusFiring)
	ack.Alerts[0].Action = sinks.ActionAcknowledge
	require.NoError(t, n.Deliver(ctx, ack), "an acknowledge comments")
	require.NoError(t, n.Deliver(ctx, sample(sinks.StatusResolved)), "the resolve comments")
	refire := sample(sinks.StatusFiring)
	refire.Alerts[0].StartsAt = refire.Alerts[0].StartsAt.Add(time.Hour)
	require.NoError(t, n.Deliver(ctx, refire), "a re-fire comments")
	issues := fake.Issues()
	require.Len(t, issues, 1)
	require.Len(t, issues[0].Comments, 4)
	require.Zero(t, fake.CountStatus(403))
}

// A config error Backlog shows only at a delivery (it was unreachable at
// start) holds the work as for a target down; it is no dead letter.
func TestConfigErrorAtADeliveryHoldsTheWork(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	fake.SetDown(true)
	n, err := newNotifier(t, fake, "close_status: Gone", store(t))
	require.NoError(t, err, "unreachable at start: a warning, the names are resolved later")
	fake.SetDown(false)
	err = n.Deliver(context.Background(), sample(sinks.StatusFiring))
	require.Error(t, err)
	se := sinks.AsError(err)
	require.True(t, se.Retryable, "%v", err)
	require.Equal(t, sinks.ReasonMisconfigured, se.Reason)
	require.Contains(t, err.Error(), "close_status")
	require.Empty(t, fake.Issues())
}

// A comment whose answer was lost (a timeout: the queue marks the retry
// uncertain) is looked for before it is posted again: a comment is not
// idempotent. A retry that is not uncertain does not look.
func TestUncertainCommentIsNotPostedTwice(t *testing.T) {
	for _, uncertain := range []bool{true, false} {
		t.Run(fmt.Sprint("uncertain ", uncertain), func(t *testing.T) {
			fake, n := openedIssue(t, "on_resolved: comment\nresolved_comment: 'Resolved: {{ .CommonLabels.alertname }}'")
			ctx := context.Background()
			// The resolve's comment reached Backlog, its answer did not.
			fake.PersonComments("OPS-1", "Resolved: DiskFull")
			calls := len(fake.Calls())
			require.NoError(t, n.Deliver(sinks.WithCall(ctx, &sinks.Call{Uncertain: uncertain}), sample(sinks.StatusResolved)))
			is, _ := fake.Issue("OPS-1")
			var writes int
			for _, c := range fake.Calls()[calls:] {
				if c.Method != "GET" {
					writes++
				}
			}
			if uncertain {
				require.Equal(t, []string{"Resolved: DiskFull"}, is.Comments, "found on the issue: not posted again")
				require.Zero(t, writes)
				return
			}
			require.Len(t, is.Comments, 2, "a certain retry does not look")
			require.Equal(t, 1, writes)
		})
	}
}

// storeAway is the real issue store whose writes fail while away is set,
// as when PostgreSQL is stopped between Backlog's answer and the record.
type storeAway struct {
	backlog.IssueStore
	away atomic.Bool
}

func (s *storeAway) PutIssue(ctx context.Context, target, identity string, rec backlog.IssueRecord) error {
	if s.away.Load() {
		return errors.New("queue: begin: failed to connect: connection refused")
	}
	return s.IssueStore.PutIssue(ctx, target, identity, rec)
}

// An acknowledge's comment that Backlog took while the issue record could
// not be written fails as "unrecorded", which the queue retries as a call
// that may have been made (Call.Uncertain): the retry finds the comment
// and posts none (a breaker saw acknowledge comments doubled across
// replicas when PostgreSQL stopped).
func TestCommentWhoseRecordFailedIsNotPostedAgain(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	st := &storeAway{IssueStore: store(t)}
	n, err := newNotifier(t, fake, "", st)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, n.Deliver(ctx, sample(sinks.StatusFiring)))
	ack := sample(sinks.StatusFiring)
	ack.Alerts[0].Action = sinks.ActionAcknowledge
	st.away.Store(true)
	err = n.Deliver(ctx, ack)
	require.Error(t, err)
	se := sinks.AsError(err)
	require.True(t, se.Retryable, "%v", err)
	require.Equal(t, sinks.ReasonUnrecorded, se.Reason)
	st.away.Store(false)
	require.NoError(t, n.Deliver(sinks.WithCall(ctx, &sinks.Call{Uncertain: true}), ack))
	is, _ := fake.Issue("OPS-1")
	require.Len(t, is.Comments, 1, "the acknowledge's comment, once")
}

// A key's user demoted while alertfan runs (a Normal User made a Reporter)
// is refused each close (403, UnauthorizedOperationError on the issue):
// that holds the target as misconfigured instead of dead-lettering every
// alert. A 403 on one issue while the role still fits stays that issue's.
func TestUserDemotedWhileRunningHoldsTheTarget(t *testing.T) {
	fake, n := openedIssue(t, "")
	ctx := context.Background()
	fake.SetRoleType(3)
	err := n.Deliver(ctx, sample(sinks.StatusResolved))
	require.Error(t, err)
	se := sinks.AsError(err)
	require.True(t, se.Retryable, "%v", err)
	require.Equal(t, sinks.ReasonMisconfigured, se.Reason)
	require.Contains(t, err.Error(), "is a Reporter")

	fake.SetRoleType(1)
	forbidden := sinkstest.BacklogResponse{Status: 403, Body: `{"errors":[{"message":"You do not have permission.","code":5,"moreInfo":""}]}`}
	fake.ScriptWrites(forbidden)
	err = n.Deliver(ctx, sample(sinks.StatusResolved))
	require.Error(t, err)
	require.False(t, sinks.AsError(err).Retryable, "the role fits: that issue's own refusal: %v", err)
}

// An identical comment made before the notification was accepted (a
// fixed resolved_comment of an earlier occurrence) is another comment: an
// uncertain retry still posts its own.
func TestUncertainCommentIdenticalToAnEarlierOneIsPosted(t *testing.T) {
	fake, n := openedIssue(t, "on_resolved: comment\nresolved_comment: 'Resolved.'")
	ctx := context.Background()
	fake.PersonComments("OPS-1", "Resolved.") // an earlier occurrence's
	time.Sleep(1100 * time.Millisecond)       // Backlog's times are whole seconds
	resolved := sample(sinks.StatusResolved)
	resolved.AcceptedAt = time.Now()
	require.NoError(t, n.Deliver(sinks.WithCall(ctx, &sinks.Call{Uncertain: true}), resolved))
	is, _ := fake.Issue("OPS-1")
	require.Equal(t, []string{"Resolved.", "Resolved."}, is.Comments)
}

// The bound of the look is the key's first failed attempt, when the queue
// has one: a copy of the update accepted after the lost attempt (an HA
// replica's) must not make the attempt's own comment look older than it.
func TestUncertainCommentBoundIsTheFirstFailure(t *testing.T) {
	fake, n := openedIssue(t, "on_resolved: comment\nresolved_comment: 'Resolved.'")
	ctx := context.Background()
	failed := time.Now()
	fake.PersonComments("OPS-1", "Resolved.") // the lost attempt's
	time.Sleep(1100 * time.Millisecond)
	copyOf := sample(sinks.StatusResolved)
	copyOf.AcceptedAt = time.Now() // the HA copy, accepted after
	require.NoError(t, n.Deliver(sinks.WithCall(ctx, &sinks.Call{Uncertain: true, FailingSince: failed}), copyOf))
	is, _ := fake.Issue("OPS-1")
	require.Equal(t, []string{"Resolved."}, is.Comments)
}

// A fast cycle with a fixed resolved_comment: the occurrence before
// posted the same "Resolved." seconds ago, within the look's bound from
// the key's first failure (minus the call's timeout). It came before the
// last call alertfan recorded on the issue (the re-fire), so it is not the
// lost attempt's, and the resolve's own comment is posted (before, 5 of 5
// second resolves of a breaker's fast cycles lost their comment).
func TestUncertainCommentOfTheOccurrenceBeforeIsNotTheLostOne(t *testing.T) {
	fake, n := openedIssue(t, "on_resolved: comment\nresolved_comment: 'Resolved.'")
	ctx := context.Background()
	require.NoError(t, n.Deliver(ctx, sample(sinks.StatusResolved)))
	time.Sleep(1100 * time.Millisecond) // Backlog's times are whole seconds
	refire := sample(sinks.StatusFiring)
	refire.Alerts[0].StartsAt = refire.Alerts[0].StartsAt.Add(time.Hour)
	require.NoError(t, n.Deliver(ctx, refire))
	resolved := sample(sinks.StatusResolved)
	resolved.Alerts[0].StartsAt = refire.Alerts[0].StartsAt
	resolved.AcceptedAt = time.Now()
	// The second resolve's call was cut and failed: its retry is uncertain.
	require.NoError(t, n.Deliver(sinks.WithCall(ctx, &sinks.Call{Uncertain: true, FailingSince: time.Now()}), resolved))
	is, _ := fake.Issue("OPS-1")
	require.Equal(t, 2, strings.Count(strings.Join(is.Comments, "\n"), "Resolved."), "%q", is.Comments)
}

// openedIssue is a fake Backlog and a notifier with extra config that has
// opened the sample alert's issue (OPS-1).
func openedIssue(t *testing.T, extra string) (*sinkstest.Backlog, *backlog.Notifier) {
	t.Helper()
	fake := sinkstest.NewBacklog(apiKey)
	t.Cleanup(fake.Close)
	n, err := newNotifier(t, fake, extra, store(t))
	require.NoError(t, err)
	require.NoError(t, n.Deliver(context.Background(), sample(sinks.StatusFiring)))
	return fake, n
}
