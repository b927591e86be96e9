package backlog_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	yaml "go.yaml.in/yaml/v2"

	"github.com/alertfan/alertfan/receiver/queue"
	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/backlog"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

var update = flag.Bool("update", false, "rewrite golden files")

const apiKey = "backlog-secret-api-key"

func tmpl(t *testing.T) *template.Template {
	t.Helper()
	tm, err := template.FromGlobs(nil, backlog.TemplateFuncs)
	require.NoError(t, err)
	require.NoError(t, tm.Parse(strings.NewReader(backlog.DefaultTemplates)))
	return tm
}

// store is a real SQLite-backed queue store: the issue map lives there.
func store(t *testing.T) *queue.Store {
	t.Helper()
	s, err := queue.Open(context.Background(), queue.Options{Path: filepath.Join(t.TempDir(), "q.db"), Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(func() { s.Close(context.Background()) }) //nolint:errcheck
	return s
}

func conf(t *testing.T, url, extra string) *backlog.Config {
	t.Helper()
	var c backlog.Config
	y := "api_url: " + url + "\napi_key: " + apiKey + "\nproject: OPS\nissue_type: Bug\nrate_limit_per_minute: 60000\n" + extra
	require.NoError(t, yaml.UnmarshalStrict([]byte(y), &c))
	return &c
}

func newNotifier(t *testing.T, fake *sinkstest.Backlog, extra string, s backlog.IssueStore) (*backlog.Notifier, error) {
	return backlog.New(context.Background(), conf(t, fake.URL, extra), backlog.Deps{
		ID: "tickets/backlog/0", Template: tmpl(t), Issues: s, Metrics: backlog.NewMetrics(prometheus.NewRegistry()),
		Logger: slog.New(slog.DiscardHandler),
	})
}

func TestNameResolution(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	cases := []struct {
		name, extra, want string
	}{
		{"good", "priority: Normal\nresolution: Fixed\ncustom_fields:\n  Runbook: 'x'\nassignee: oncall\n", ""},
		{"project", "", ""},
		{"bad issue type", "", ""},
		{"bad close status", "close_status: Done\n", `close_status: "Done" does not exist in Backlog; valid names: "Closed", "In Progress", "Open", "Resolved"`},
		{"bad reopen status", "reopen_status: Reopened\n", `reopen_status: "Reopened" does not exist`},
		{"bad constant priority", "priority: Urgent\n", `priority: "Urgent" does not exist in Backlog; valid names: "High", "Low", "Normal"`},
		{"bad resolution", "resolution: Done\n", `resolution: "Done" does not exist`},
		{"bad custom field", "custom_fields:\n  Owner: x\n", `custom_fields: "Owner" does not exist in Backlog; valid names: "Runbook", "Team"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := newNotifier(t, fake, c.extra, nil)
			if c.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.want)
		})
	}
	var c backlog.Config
	require.NoError(t, yaml.UnmarshalStrict([]byte("api_url: "+fake.URL+"\napi_key: "+apiKey+"\nproject: NOPE\nissue_type: Bug\n"), &c))
	_, err := backlog.New(context.Background(), &c, backlog.Deps{ID: "x/backlog/0", Template: tmpl(t)})
	require.ErrorContains(t, err, `project "NOPE"`)
	require.ErrorContains(t, err, "No project.")
	require.NotContains(t, err.Error(), apiKey)

	require.NoError(t, yaml.UnmarshalStrict([]byte("api_url: "+fake.URL+"\napi_key: wrong-key\nproject: OPS\nissue_type: Bug\n"), &c))
	_, err = backlog.New(context.Background(), &c, backlog.Deps{ID: "x/backlog/0", Template: tmpl(t)})
	require.ErrorContains(t, err, "401")
	require.ErrorContains(t, err, "Authentication failure")
	require.NotContains(t, err.Error(), "wrong-key")
}

func TestUnreachableAtStartResolvesLater(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	fake.SetDown(true)
	n, err := newNotifier(t, fake, "", store(t))
	require.NoError(t, err, "a Backlog outage must not stop alertfan from starting")
	notif := sample("firing")
	err = n.Deliver(context.Background(), notif)
	require.Error(t, err)
	require.True(t, sinks.AsError(err).Retryable)
	fake.SetDown(false)
	require.NoError(t, n.Deliver(context.Background(), notif))
	require.Len(t, fake.Issues(), 1)
}

func sample(status string) *sinks.Notification {
	start := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	a := sinks.Alert{
		Identity: "am:c0ffee", Status: status, Fingerprint: "c0ffee",
		Labels:       map[string]string{"alertname": "DiskFull", "severity": "critical", "instance": "db-1:9100", "team": "db"},
		Annotations:  map[string]string{"summary": "Disk /var is 97% full", "description": "Free space on /var is below 3%.", "runbook_url": "https://runbooks.example/disk"},
		StartsAt:     start,
		GeneratorURL: "http://prometheus.example:9090/graph?g0.expr=disk",
	}
	if status == sinks.StatusResolved {
		a.EndsAt = start.Add(30 * time.Minute)
	}
	return &sinks.Notification{Key: a.Identity, Source: sinks.Source{Input: "alertmanager", Receiver: "tickets", ExternalURL: "http://am.example:9093"}, Alerts: []sinks.Alert{a}, AcceptedAt: start}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create %s", path)
	require.Equal(t, string(want), got)
}

func TestRenderedIssueGolden(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	n, err := newNotifier(t, fake, "", store(t))
	require.NoError(t, err)
	require.NoError(t, n.Deliver(context.Background(), sample("firing")))
	is := fake.Issues()
	require.Len(t, is, 1)
	golden(t, "summary.golden", is[0].Summary+"\n")
	// The marker hashes the destination, whose URL is the fake's port.
	golden(t, "description.golden", strings.ReplaceAll(is[0].Description, backlog.Marker(n.Destination(), "am:c0ffee", 1), "alertfan-MARKER"))
	require.Contains(t, is[0].Description, backlog.Marker(n.Destination(), "am:c0ffee", 1))
}

func TestUnrecordedCreateIsHealedBySearch(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	s := store(t)
	n, err := newNotifier(t, fake, "", s)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, n.Deliver(ctx, sample("firing")))
	require.Len(t, fake.Issues(), 1)
	// The create reached Backlog but its recording was lost (a crash, or a
	// timeout after Backlog did the work): the search finds it.
	require.NoError(t, s.PutIssue(ctx, "tickets/backlog/0", "am:c0ffee", backlog.IssueRecord{State: backlog.StateCreating, Gen: 1}))
	require.NoError(t, n.Deliver(ctx, sample("firing")))
	require.Len(t, fake.Issues(), 1, "the marker search adopts the issue instead of creating another")
	rec, ok, err := s.GetIssue(ctx, "tickets/backlog/0", "am:c0ffee")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, backlog.StateOpen, rec.State)
	require.Equal(t, "OPS-1", rec.IssueKey)
}

// A create that timed out after Backlog did the work, retried before
// Backlog's search index has the issue: the heal finds it among the
// project's newest issues, not by keyword, and adopts it.
func TestUnrecordedCreateIsHealedBeforeItIsSearchable(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	fake.SearchLag = time.Hour
	s := store(t)
	n, err := newNotifier(t, fake, "", s)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, n.Deliver(ctx, sample("firing")))
	require.NoError(t, s.PutIssue(ctx, "tickets/backlog/0", "am:c0ffee", backlog.IssueRecord{State: backlog.StateCreating, Gen: 1}))
	require.NoError(t, n.Deliver(ctx, sample("firing")))
	require.Len(t, fake.Issues(), 1, "adopted from the newest issues, not created again")
	rec, ok, err := s.GetIssue(ctx, "tickets/backlog/0", "am:c0ffee")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "OPS-1", rec.IssueKey)
}

// A create whose answer was lost is retried after more than a page of
// other issues were created in the project, before the search index has
// it: the heal reads the newest issues back to when the create began and
// adopts it (one page was read before, and a second issue was opened).
func TestUnrecordedCreateIsHealedPastAPageOfNewerIssues(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	fake.SearchLag = time.Hour
	s := store(t)
	ctx := context.Background()
	// The record says a create began; it reached Backlog (through
	// another store's notifier: same space, project and marker) and its
	// answer was lost.
	require.NoError(t, s.PutIssue(ctx, "tickets/backlog/0", "am:c0ffee", backlog.IssueRecord{State: backlog.StateCreating, Gen: 1}))
	other, err := newNotifier(t, fake, "", store(t))
	require.NoError(t, err)
	require.NoError(t, other.Deliver(ctx, sample("firing")))
	for i := range 250 {
		n := sample("firing")
		n.Alerts[0].Identity, n.Alerts[0].Fingerprint = fmt.Sprintf("am:%04x", i), fmt.Sprintf("%04x", i)
		n.Alerts[0].Labels = map[string]string{"alertname": "Other", "severity": "warning", "instance": fmt.Sprintf("host-%d", i)}
		n.Key = n.Alerts[0].Identity
		require.NoError(t, other.Deliver(ctx, n))
	}
	require.Equal(t, 251, len(fake.Issues()))

	n, err := newNotifier(t, fake, "", s)
	require.NoError(t, err)
	require.NoError(t, n.Deliver(ctx, sample("firing")))
	require.Equal(t, 251, len(fake.Issues()), "adopted from the third page of the newest issues, not created again")
	rec, ok, err := s.GetIssue(ctx, "tickets/backlog/0", "am:c0ffee")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, backlog.StateOpen, rec.State)
	require.Equal(t, "OPS-1", rec.IssueKey)
}

// A create reached Backlog but its outcome was lost, and a person closed
// the issue before the retry: the heal adopts it as closed by a person
// (an issue younger than closed_issues cannot be an earlier series'), and
// the same occurrence opens no other; a new occurrence does. With
// closed_issues known, an issue older than it is an earlier series' and
// is skipped.
func TestHealAdoptsAnIssueAPersonClosedSinceItsCreate(t *testing.T) {
	for _, c := range []struct {
		name    string
		age     time.Duration
		adopted bool
	}{
		{"closed by a person since", 0, true},
		{"an earlier series", 31 * 24 * time.Hour, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			fake := sinkstest.NewBacklog(apiKey)
			defer fake.Close()
			s := store(t)
			n, err := backlog.New(context.Background(), conf(t, fake.URL, ""), backlog.Deps{
				ID: "tickets/backlog/0", Template: tmpl(t), Issues: s, Metrics: backlog.NewMetrics(prometheus.NewRegistry()),
				Logger: slog.New(slog.DiscardHandler), ClosedIssues: 30 * 24 * time.Hour,
			})
			require.NoError(t, err)
			ctx := context.Background()
			require.NoError(t, n.Deliver(ctx, sample("firing")))
			fake.PersonUpdates("OPS-1", 4, nil)
			fake.Backdate("OPS-1", time.Now().Add(-c.age))
			require.NoError(t, s.PutIssue(ctx, "tickets/backlog/0", "am:c0ffee", backlog.IssueRecord{State: backlog.StateCreating, Gen: 1}))
			require.NoError(t, n.Deliver(ctx, sample("firing")))
			if !c.adopted {
				require.Len(t, fake.Issues(), 2, "a new issue, not the closed one of the earlier series")
				return
			}
			require.Len(t, fake.Issues(), 1, "the person closed this occurrence's issue: nothing more")
			rec, ok, err := s.GetIssue(ctx, "tickets/backlog/0", "am:c0ffee")
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, backlog.StatePersonClosed, rec.State)
			require.Equal(t, "OPS-1", rec.IssueKey)
			require.NoError(t, n.Deliver(ctx, sample("firing")), "a repeat stays quiet")
			require.Len(t, fake.Issues(), 1)
			next := sample("firing")
			next.Alerts[0].StartsAt = next.Alerts[0].StartsAt.Add(time.Hour)
			require.NoError(t, n.Deliver(ctx, next))
			require.Len(t, fake.Issues(), 2, "a new occurrence opens a new issue")
		})
	}
}

// TestHealSkipsAnEarlierSeriesIssue: once a closed issue's record is
// pruned by retention, the next issue of the identity starts again at
// generation 1, whose marker the old, closed issue also carries. A create
// whose outcome was lost must not adopt that old issue.
func TestHealSkipsAnEarlierSeriesIssue(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	s := store(t)
	n, err := newNotifier(t, fake, "", s)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, n.Deliver(ctx, sample("firing")))
	require.NoError(t, n.Deliver(ctx, sample("resolved")))
	old, ok := fake.Issue("OPS-1")
	require.True(t, ok)
	require.Equal(t, "Closed", fake.StatusName(old.StatusID))
	// The record was pruned, and the next create's outcome was lost before
	// it reached Backlog.
	require.NoError(t, s.PutIssue(ctx, "tickets/backlog/0", "am:c0ffee", backlog.IssueRecord{State: backlog.StateCreating, Gen: 1}))
	require.NoError(t, n.Deliver(ctx, sample("firing")))
	rec, ok, err := s.GetIssue(ctx, "tickets/backlog/0", "am:c0ffee")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, backlog.StateOpen, rec.State)
	require.Equal(t, "OPS-2", rec.IssueKey, "a new issue, not the closed one of the earlier series")
}

func TestClientErrorPathsAreSafe(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	n, err := newNotifier(t, fake, "", store(t))
	require.NoError(t, err)
	ctx := context.Background()
	cases := []struct {
		name      string
		resp      sinkstest.BacklogResponse
		retryable bool
		after     bool
		contains  string
	}{
		{"500 with {} is not success", sinkstest.BacklogResponse{Status: 500, Body: `{}`}, true, false, "500"},
		{"201 with {} is not success", sinkstest.BacklogResponse{Status: 201, Body: `{}`}, true, false, "no issueKey"},
		{"201 with garbage", sinkstest.BacklogResponse{Status: 201, Body: `<html>`}, true, false, "unreadable body"},
		{"429 without moreInfo", sinkstest.BacklogResponse{Status: 429, Body: `{"errors":[{"message":"Too many requests.","code":13}]}`,
			Header: map[string]string{"X-RateLimit-Reset": "9999999999"}}, true, true, "Too many requests"},
		{"429 with empty body", sinkstest.BacklogResponse{Status: 429, Body: ``}, true, false, "429"},
		// The first 400 makes the names be resolved again and is retried
		// once (TestBacklog400ResolvesNamesAgainOnce); this one is the second.
		{"400 keeps the message", sinkstest.BacklogResponse{Status: 400, Body: `{"errors":[{"message":"Please input summary.","code":7,"moreInfo":""}]}`}, false, false, "Please input summary."},
		// Code 11 (AuthenticationError) refuses the key for every call:
		// retryable, the target held as down (TestKeyRefusedAtRunTime).
		{"error echoing the key is scrubbed", sinkstest.BacklogResponse{Status: 403, Body: `{"errors":[{"message":"bad key ` + apiKey + `","code":11,"moreInfo":""}]}`}, true, false, "<secret>"},
	}
	// One 400 first: it is retried after the names are resolved again, so
	// the 400 below within the minute is permanent.
	fake.Script(sinkstest.BacklogResponse{Status: 400, Body: `{"errors":[{"message":"x","code":7,"moreInfo":""}]}`})
	warm := sample("firing")
	warm.Key, warm.Alerts[0].Identity = "am:warm", "am:warm"
	require.Error(t, n.Deliver(ctx, warm))
	require.NoError(t, n.Deliver(ctx, warm)) // names resolved again
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A fresh identity per case, so the scripted answer meets the create.
			notif := sample("firing")
			notif.Key = notif.Key + string(rune('a'+i))
			notif.Alerts[0].Identity = notif.Key
			fake.Script(c.resp)
			err := n.Deliver(ctx, notif)
			require.Error(t, err)
			e := sinks.AsError(err)
			require.Equal(t, c.retryable, e.Retryable, err.Error())
			require.Equal(t, c.after, e.RetryAfter > 0)
			require.Contains(t, err.Error(), c.contains)
			require.NotContains(t, err.Error(), apiKey)
		})
	}
	fake.Close()
	err = n.Deliver(ctx, sample("firing"))
	require.Error(t, err)
	require.True(t, sinks.AsError(err).Retryable)
	require.NotContains(t, err.Error(), apiKey, "a transport error must not carry the URL with the key")
}

// An administrator changes the space after start (deletes a list item, an
// issue type, makes a field required): the first 400 makes the names be
// resolved again and the delivery is retried once, so the documented
// fallbacks apply to the space as it is now; a second 400 within a minute
// is permanent.
func TestBacklog400ResolvesNamesAgainOnce(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	n, err := newNotifier(t, fake, "", store(t))
	require.NoError(t, err)
	ctx := context.Background()
	bad := sinkstest.BacklogResponse{Status: 400, Body: `{"errors":[{"message":"Please input a valid value for Environment.","code":7,"moreInfo":""}]}`}
	gets := func() int {
		k := 0
		for _, c := range fake.Calls() {
			if c.Method == http.MethodGet && strings.HasSuffix(c.Path, "/projects/OPS") {
				k++
			}
		}
		return k
	}
	before := gets()
	fake.Script(bad)
	err = n.Deliver(ctx, sample("firing"))
	require.Error(t, err)
	require.True(t, sinks.AsError(err).Retryable, "the first 400 is retried after resolving the names again")
	require.NoError(t, n.Deliver(ctx, sample("firing")), "the retry meets the space as it is now")
	require.Greater(t, gets(), before, "the names were resolved again")
	require.Len(t, fake.Issues(), 1)

	fake.Script(bad)
	other := sample("firing")
	other.Key, other.Alerts[0].Identity = "am:other", "am:other"
	err = n.Deliver(ctx, other)
	require.Error(t, err)
	require.False(t, sinks.AsError(err).Retryable, "a second 400 within a minute is permanent")
}
