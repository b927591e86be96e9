package backlog_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

func ptr[T any](v T) *T { return &v }

// People win: alertfan reads the issue before it acts on it (issue 9,
// item 4). Each row drives the sink through steps, with a person's change
// to the ticket in between, and asserts the issues and the writes.
func TestPeopleWin(t *testing.T) {
	type step struct {
		deliver string // firing | resolved | refire (later startsAt)
		person  func(b *sinkstest.Backlog)
	}
	closeAs := func(res int64) func(b *sinkstest.Backlog) {
		return func(b *sinkstest.Backlog) { b.PersonUpdates("OPS-1", 4, ptr(res)) }
	}
	del := func(b *sinkstest.Backlog) { b.PersonDeletes("OPS-1") }
	reopen := func(b *sinkstest.Backlog) { b.PersonUpdates("OPS-1", 2, nil) }
	cases := []struct {
		name   string
		extra  string
		steps  []step
		issues int
		writes []string // METHOD path of every write, in order
		check  func(t *testing.T, b *sinkstest.Backlog)
	}{
		{
			name:   "resolve after a person closed it: no comment, no close",
			steps:  []step{{deliver: "firing"}, {person: closeAs(1)}, {deliver: "resolved"}},
			issues: 1, writes: []string{"POST /api/v2/issues"},
			check: func(t *testing.T, b *sinkstest.Backlog) {
				is, _ := b.Issue("OPS-1")
				require.Empty(t, is.Comments)
				require.EqualValues(t, 1, *is.Resolution, "the person's Won't Fix stays")
			},
		},
		{
			name:   "resolve with on_resolved comment after a person closed it: no comment",
			extra:  "on_resolved: comment\n",
			steps:  []step{{deliver: "firing"}, {person: closeAs(0)}, {deliver: "resolved"}},
			issues: 1, writes: []string{"POST /api/v2/issues"},
		},
		{
			name:   "refire after a person closed it opens a new issue",
			steps:  []step{{deliver: "firing"}, {person: closeAs(0)}, {deliver: "resolved"}, {deliver: "refire"}},
			issues: 2, writes: []string{"POST /api/v2/issues", "POST /api/v2/issues"},
		},
		{
			name:   "refire after a person closed it as won't fix, listed in skip_reopen_resolutions: nothing",
			extra:  "skip_reopen_resolutions: [\"Won't Fix\"]\n",
			steps:  []step{{deliver: "firing"}, {person: closeAs(1)}, {deliver: "resolved"}, {deliver: "refire"}, {deliver: "refire"}},
			issues: 1, writes: []string{"POST /api/v2/issues"},
		},
		{
			name:   "skip list, but the person reopened it: firing again comments",
			extra:  "skip_reopen_resolutions: [\"Won't Fix\"]\n",
			steps:  []step{{deliver: "firing"}, {person: closeAs(1)}, {deliver: "resolved"}, {person: reopen}, {deliver: "refire"}},
			issues: 1, writes: []string{"POST /api/v2/issues", "POST /api/v2/issues/OPS-1/comments"},
		},
		{
			name:   "left open at resolve, closed by a person, refire: new issue",
			extra:  "on_resolved: comment\n",
			steps:  []step{{deliver: "firing"}, {deliver: "resolved"}, {person: closeAs(0)}, {deliver: "refire"}},
			issues: 2, writes: []string{"POST /api/v2/issues", "POST /api/v2/issues/OPS-1/comments", "POST /api/v2/issues"},
		},
		{
			name:   "closed by alertfan, reopened by a person, refire: comment only",
			steps:  []step{{deliver: "firing"}, {deliver: "resolved"}, {person: reopen}, {deliver: "refire"}},
			issues: 1, writes: []string{"POST /api/v2/issues", "PATCH /api/v2/issues/OPS-1", "POST /api/v2/issues/OPS-1/comments"},
			check: func(t *testing.T, b *sinkstest.Backlog) {
				is, _ := b.Issue("OPS-1")
				require.EqualValues(t, 2, is.StatusID, "the person's In Progress stays")
				require.Equal(t, b.Calls()[len(b.Calls())-1].Form.Get("statusId"), "", "no status change")
			},
		},
		{
			name:   "deleted in Backlog, next firing opens a new one (gone)",
			extra:  "on_repeat: comment\n",
			steps:  []step{{deliver: "firing"}, {person: del}, {deliver: "firing"}},
			issues: 1, writes: []string{"POST /api/v2/issues", "POST /api/v2/issues"},
			check: func(t *testing.T, b *sinkstest.Backlog) {
				require.Equal(t, "OPS-2", b.Issues()[0].Key)
			},
		},
		{
			name:   "closed by alertfan to its close_status, moved on to Closed by a person, refire: a new issue",
			extra:  "close_status: Resolved\n",
			steps:  []step{{deliver: "firing"}, {deliver: "resolved"}, {person: closeAs(0)}, {deliver: "refire"}},
			issues: 2, writes: []string{"POST /api/v2/issues", "PATCH /api/v2/issues/OPS-1", "POST /api/v2/issues"},
		},
		{
			name:   "closed by alertfan to its close_status, refire: reopened",
			extra:  "close_status: Resolved\n",
			steps:  []step{{deliver: "firing"}, {deliver: "resolved"}, {deliver: "refire"}},
			issues: 1, writes: []string{"POST /api/v2/issues", "PATCH /api/v2/issues/OPS-1", "PATCH /api/v2/issues/OPS-1"},
		},
		{
			name:   "an acknowledge before any trigger opens nothing; the trigger after it does",
			steps:  []step{{deliver: "ack"}, {deliver: "firing"}},
			issues: 1, writes: []string{"POST /api/v2/issues"},
		},
		{
			name:   "deleted in Backlog, next change of the firing alert opens a new one, on_repeat none",
			steps:  []step{{deliver: "firing"}, {person: del}, {deliver: "changed"}},
			issues: 1, writes: []string{"POST /api/v2/issues", "POST /api/v2/issues"},
		},
		{
			name:   "deleted, then resolved, then firing again: a new issue",
			steps:  []step{{deliver: "firing"}, {person: del}, {deliver: "resolved"}, {deliver: "refire"}},
			issues: 1, writes: []string{"POST /api/v2/issues", "POST /api/v2/issues"},
		},
		{
			name:   "deleted after alertfan closed it, refire within reopen_within: a new issue",
			steps:  []step{{deliver: "firing"}, {deliver: "resolved"}, {person: del}, {deliver: "refire"}},
			issues: 1, writes: []string{"POST /api/v2/issues", "PATCH /api/v2/issues/OPS-1", "POST /api/v2/issues"},
		},
		{
			name:  "deleted between read and write: the 404 of the update is the gone path",
			extra: "on_repeat: comment\n",
			steps: []step{{deliver: "firing"}, {person: func(b *sinkstest.Backlog) {
				b.Script(sinkstest.BacklogResponse{Status: 200, Body: `{"id":1,"issueKey":"OPS-1","status":{"id":1}}`})
				del(b)
			}}, {deliver: "firing"}},
			issues: 1, writes: []string{"POST /api/v2/issues", "POST /api/v2/issues/OPS-1/comments", "POST /api/v2/issues"},
		},

		{
			name:   "closed by a person while still firing: repeats stay quiet, the resolve too, a new occurrence opens a new issue",
			extra:  "on_repeat: comment\n",
			steps:  []step{{deliver: "firing"}, {person: closeAs(0)}, {deliver: "firing"}, {deliver: "firing"}, {deliver: "resolved"}, {deliver: "refire"}},
			issues: 2, writes: []string{"POST /api/v2/issues", "POST /api/v2/issues"},
			check: func(t *testing.T, b *sinkstest.Backlog) {
				is, _ := b.Issue("OPS-1")
				require.Empty(t, is.Comments, "nothing written into the closed issue")
			},
		},
		{
			name:   "closed by alertfan, a person then set Won't Fix (in skip_reopen_resolutions): refire sends nothing",
			extra:  "skip_reopen_resolutions: [\"Won't Fix\"]\n",
			steps:  []step{{deliver: "firing"}, {deliver: "resolved"}, {person: closeAs(1)}, {deliver: "refire"}, {deliver: "refire"}},
			issues: 1, writes: []string{"POST /api/v2/issues", "PATCH /api/v2/issues/OPS-1"},
		},
		{
			name:   "an acknowledge after a person closed it: nothing",
			steps:  []step{{deliver: "firing"}, {person: closeAs(0)}, {deliver: "ack"}},
			issues: 1, writes: []string{"POST /api/v2/issues"},
		},
		{
			name:  "deleted between read and close: the resolve creates nothing",
			extra: "",
			steps: []step{{deliver: "firing"}, {person: func(b *sinkstest.Backlog) {
				b.Script(sinkstest.BacklogResponse{Status: 200, Body: `{"id":1,"issueKey":"OPS-1","status":{"id":1}}`})
				del(b)
			}}, {deliver: "resolved"}, {deliver: "resolved"}},
			issues: 0, writes: []string{"POST /api/v2/issues", "PATCH /api/v2/issues/OPS-1"},
		}}
	for _, sp := range spaces {
		for _, c := range cases {
			t.Run(sp.name+"/"+c.name, func(t *testing.T) {
				fake := sp.new(apiKey)
				defer fake.Close()
				fake.IssueTypes["Bug"] = 2005
				h, err := newHarness(t, fake, "resolution: Fixed\n"+c.extra)
				require.NoError(t, err)
				ctx := context.Background()
				for _, s := range c.steps {
					if s.person != nil {
						s.person(fake)
						continue
					}
					var n *sinks.Notification
					switch s.deliver {
					case "refire":
						n = sample("firing")
						n.Alerts[0].StartsAt = n.Alerts[0].StartsAt.Add(time.Hour)
					case "changed":
						n = sample("firing")
						n.Alerts[0].Annotations["summary"] = "Disk /var is 99% full"
					case "ack":
						n = sample("firing")
						n.Alerts[0].Action = sinks.ActionAcknowledge
					default:
						n = sample(s.deliver)
					}
					require.NoError(t, h.n.Deliver(ctx, n))
				}
				require.Len(t, fake.Issues(), c.issues)
				var writes []string
				for _, call := range fake.Calls() {
					if call.Method != http.MethodGet {
						writes = append(writes, call.Method+" "+call.Path)
					}
				}
				require.Equal(t, c.writes, writes)
				if c.check != nil {
					c.check(t, fake)
				}
			})
		}
	}
}
