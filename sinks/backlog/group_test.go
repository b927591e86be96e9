package backlog_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/backlog"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// groupNotif is what the receiver hands a group-mode sink: every alert of
// the Alertmanager group, keyed by the group key.
func groupNotif(statuses map[string]string) *sinks.Notification {
	start := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	n := &sinks.Notification{Key: `{}:{alertname="DiskFull"}`, AcceptedAt: start,
		Source: sinks.Source{Input: "alertmanager", Receiver: "tickets", GroupKey: `{}:{alertname="DiskFull"}`, GroupLabels: map[string]string{"alertname": "DiskFull"}}}
	for _, host := range []string{"db-1", "db-2", "db-3"} {
		st, ok := statuses[host]
		if !ok {
			continue
		}
		a := sinks.Alert{Identity: "am:" + host, Fingerprint: host, Status: st, StartsAt: start,
			Labels: map[string]string{"alertname": "DiskFull", "severity": "critical", "instance": host}}
		if st == sinks.StatusResolved {
			a.EndsAt = start.Add(time.Hour)
		}
		n.Alerts = append(n.Alerts, a)
	}
	return n
}

func TestGroupMode(t *testing.T) {
	for _, sp := range spaces {
		t.Run(sp.name, func(t *testing.T) {
			fake := sp.new(apiKey)
			defer fake.Close()
			fake.IssueTypes["Bug"] = 2005
			h, err := newHarness(t, fake, "mode: group\n")
			require.NoError(t, err)
			require.True(t, h.n.Grouped())
			ctx := context.Background()
			steps := []struct {
				alerts map[string]string
				writes int
				status int64
			}{
				{map[string]string{"db-1": "firing", "db-2": "firing"}, 1, 1},
				{map[string]string{"db-1": "firing", "db-2": "firing"}, 1, 1}, // repeat: nothing changed, no call
				{map[string]string{"db-1": "firing", "db-2": "firing", "db-3": "firing"}, 2, 1},
				{map[string]string{"db-1": "resolved", "db-2": "firing", "db-3": "firing"}, 3, 1},
				{map[string]string{"db-1": "resolved", "db-2": "resolved", "db-3": "resolved"}, 4, 4},
			}
			for i, s := range steps {
				require.NoError(t, h.n.Deliver(ctx, groupNotif(s.alerts)), "step %d", i)
				is := fake.Issues()
				require.Len(t, is, 1, "one issue per group, step %d", i)
				writes := 0
				for _, c := range fake.Calls() {
					if c.Method != http.MethodGet {
						writes++
					}
				}
				require.Equal(t, s.writes, writes, "step %d", i)
				require.Equal(t, s.status, is[0].StatusID, "step %d", i)
				for host, st := range s.alerts {
					require.Contains(t, is[0].Description, host, "step %d", i)
					_ = st
				}
			}
			is := fake.Issues()[0]
			require.Contains(t, is.Description, "0 firing, 3 resolved")
			require.Contains(t, is.Description, backlog.Marker(h.n.Destination(), `{}:{alertname="DiskFull"}`, 1))
			require.Contains(t, is.Summary, "(2 firing)", "the summary is from the create")
		})
	}
}

// A group issue whose create was not recorded is adopted by its marker, as
// per-alert issues are: no second issue for the group.
func TestGroupModeUnrecordedCreateIsHealed(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	h, err := newHarness(t, fake, "mode: group\n")
	require.NoError(t, err)
	ctx := context.Background()
	key := `{}:{alertname="DiskFull"}`
	require.NoError(t, h.n.Deliver(ctx, groupNotif(map[string]string{"db-1": "firing"})))
	require.NoError(t, h.store.PutIssue(ctx, "tickets/backlog/0", key, backlog.IssueRecord{State: backlog.StateCreating, Gen: 1}))
	require.NoError(t, h.n.Deliver(ctx, groupNotif(map[string]string{"db-1": "firing", "db-2": "firing"})))
	is := fake.Issues()
	require.Len(t, is, 1)
	require.Contains(t, is[0].Description, "db-2", "adopted, then brought up to date")
	rec, ok, err := h.store.GetIssue(ctx, "tickets/backlog/0", key)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, backlog.StateOpen, rec.State)
}

// A description a person edited is not rewritten (group mode and
// update_description); comments still go in.
func TestPersonEditedDescriptionIsKept(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	h, err := newHarness(t, fake, "mode: group\n")
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, h.n.Deliver(ctx, groupNotif(map[string]string{"db-1": "firing"})))
	require.NoError(t, h.n.Deliver(ctx, groupNotif(map[string]string{"db-1": "firing", "db-2": "firing"})))
	is := fake.Issues()[0]
	require.Contains(t, is.Description, "db-2", "alertfan's own description is kept up to date")

	edited := "Root cause: full disk on the db hosts.\n\n" + is.Description
	fake.PersonEditsDescription(is.Key, edited)
	require.NoError(t, h.n.Deliver(ctx, groupNotif(map[string]string{"db-1": "firing", "db-2": "firing", "db-3": "firing"})))
	got, _ := fake.Issue(is.Key)
	require.Equal(t, edited, got.Description, "a person's edit wins")
	require.NoError(t, h.n.Deliver(ctx, groupNotif(map[string]string{"db-1": "resolved", "db-2": "resolved", "db-3": "resolved"})))
	got, _ = fake.Issue(is.Key)
	require.Equal(t, edited, got.Description)
	require.EqualValues(t, 4, got.StatusID, "the group still closes")
}
