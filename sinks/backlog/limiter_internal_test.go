package backlog

import (
	"context"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/template"
	commoncfg "github.com/prometheus/common/config"
	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

func testTemplate(t *testing.T) *template.Template {
	t.Helper()
	tm, err := template.FromGlobs(nil, TemplateFuncs)
	require.NoError(t, err)
	require.NoError(t, tm.Parse(strings.NewReader(DefaultTemplates)))
	return tm
}

// TestLimiterIsPerUser: Backlog counts its limits per user, not per API
// key ("If a user creates API key 1 and API key 2, they will be subject to
// the same limitations", https://developer.nulab.com/docs/backlog/rate-limit/).
// Configs whose keys belong to one user share one limiter, at the lowest
// of their rates, once name resolution has learnt the user; before that
// (offline, Backlog unreachable) each key has its own.
func TestLimiterIsPerUser(t *testing.T) {
	cases := []struct {
		name    string
		offline bool
		// keyB is the second config's key: of user 4001 (the first's), or
		// of another user.
		sameUser bool
		want     bool // one limiter
	}{
		{"two keys of one user share the user's budget", false, true, true},
		{"keys of two users have their own", false, false, false},
		{"offline the user is unknown: per key", true, true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake := sinkstest.NewBacklog("user-key-1")
			defer fake.Close()
			other := int64(4001)
			if !c.sameUser {
				other = 4002
			}
			fake.AddAPIKey("user-key-2", other)
			lims := sinks.NewLimiters()
			mk := func(key, project string, rate int) *Notifier {
				conf := DefaultConfig
				conf.APIURL, conf.APIKey, conf.Project, conf.IssueType, conf.RateLimitPerMinute = fake.URL, commoncfg.Secret(key), project, "Bug", rate
				n, err := New(context.Background(), &conf, Deps{ID: "r/backlog/0", Limiters: lims, Offline: c.offline, Template: testTemplate(t), Logger: slog.New(slog.DiscardHandler)})
				require.NoError(t, err)
				return n
			}
			a := mk("user-key-1", "OPS", 60)
			b := mk("user-key-2", "OPS", 30)
			if !c.want {
				require.NotSame(t, a.lim(), b.lim())
				return
			}
			require.Same(t, a.lim(), b.lim())
			require.Equal(t, 30, a.lim().PerMinute(), "the lowest rate of the user's configs wins")
		})
	}
}

// TestSpentBudgetHoldsTheLimiter: a write answered with
// X-RateLimit-Remaining: 0 spent the user's last update of the window —
// by alertfan or by any other tool of the same user — so the limiter is
// held until X-RateLimit-Reset, as after a 429, instead of drawing the
// 429. A read's headers count the read budget and hold nothing.
func TestSpentBudgetHoldsTheLimiter(t *testing.T) {
	cases := []struct {
		name        string
		updateLimit int
		readLimit   int
		held        bool
	}{
		{"last update of the window", 1, 0, true},
		{"updates left", 100, 0, false},
		// Name resolution makes six reads: the last one leaves none.
		{"reads spent, updates left", 100, 6, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake := sinkstest.NewBacklog("user-key-1")
			defer fake.Close()
			fake.UpdateLimit, fake.ReadLimit = c.updateLimit, c.readLimit
			conf := DefaultConfig
			conf.APIURL, conf.APIKey, conf.Project, conf.IssueType, conf.RateLimitPerMinute = fake.URL, "user-key-1", "OPS", "Bug", 60000
			// Name resolution is left to the delivery; reads do not count.
			fake.SetDown(true)
			n, err := New(context.Background(), &conf, Deps{ID: "r/backlog/0", Limiters: sinks.NewLimiters(), Template: testTemplate(t), Logger: slog.New(slog.DiscardHandler)})
			require.NoError(t, err)
			fake.SetDown(false)
			ctx := context.Background()
			_, err = n.resolve(ctx)
			require.NoError(t, err)
			require.True(t, n.HeldUntil().IsZero(), "a read's Remaining is the read budget's")
			_, err = n.client.CreateIssue(ctx, url.Values{"projectId": {"1001"}, "summary": {"s"}, "issueTypeId": {"2001"}, "priorityId": {"3"}})
			require.NoError(t, err)
			until := n.HeldUntil()
			if !c.held {
				require.True(t, until.IsZero(), "held until %v", until)
				return
			}
			require.WithinDuration(t, time.Now().Add(time.Minute), until, 2*time.Second)
			require.Greater(t, n.Admit(0), 30*time.Second, "parked until the window resets")
		})
	}
}
