package receiver

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// caseKey is the API key the shared cases' configs carry.
const caseKey = "test-backlog-api-key"

// caseConfig reads a shared field case's config (testdata/cases, copied
// from the 2026-11-29 cases) with its placeholders filled in.
func backlogCaseConfig(t *testing.T, name, backlogURL, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "cases", name+".yml"))
	require.NoError(t, err)
	return strings.NewReplacer("${BL}", backlogURL, "${FAKE}", backlogURL, "${DATA}", dir).Replace(string(b))
}

func casePayload(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "cases", name+".json"))
	require.NoError(t, err)
	return b
}

func checkConfigFile(t *testing.T, cfg string) (string, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "c.yml")
	require.NoError(t, os.WriteFile(file, []byte(cfg), 0o600))
	var out bytes.Buffer
	err := CheckConfig(context.Background(), file, true, &out)
	return out.String(), err
}

// Case 12: a Japanese-language space, statuses configured in Japanese,
// priority left at its default. The issue is created with 高 (id 2), and
// check-config --online agrees before any alert arrives.
func TestBacklogCase12JapaneseSpace(t *testing.T) {
	b := sinkstest.NewBacklogJa(caseKey)
	defer b.Close()
	b.IssueTypes["Bug"] = 2005 // the case's project has an issue type named Bug
	dir := t.TempDir()
	cfg := backlogCaseConfig(t, "12-backlog-ja-priorities", b.URL, dir)
	out, err := checkConfigFile(t, cfg)
	require.NoError(t, err)
	require.Contains(t, out, "tickets/backlog/0: OK")

	ts := startServerIn(t, dir, cfg)
	code, body := ts.post(t, "/webhook", casePayload(t, "12-backlog-ja-priorities"))
	require.Equal(t, 200, code, "%v", body)
	is := waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool { return len(is) == 1 })
	require.EqualValues(t, b.Priorities["高"], is[0].PriorityID, "severity critical → 高")
	require.Contains(t, is[0].Summary, "/var が 95% を超えました")
	require.Contains(t, is[0].Description, "|Label|Value|h", "the project uses Backlog notation")
	settle(t, ts)
	require.Zero(t, b.CountStatus(400))

	resolved := bytes.ReplaceAll(casePayload(t, "12-backlog-ja-priorities"), []byte(`"firing"`), []byte(`"resolved"`))
	resolved = bytes.Replace(resolved, []byte(`"endsAt": "0001-01-01T00:00:00Z"`), []byte(`"endsAt": "2026-11-29T10:30:00Z"`), 1)
	code, _ = ts.post(t, "/webhook", resolved)
	require.Equal(t, 200, code)
	waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool { return b.StatusName(is[0].StatusID) == "完了" })
}

// Case 14: a single-list custom field gets the item's id; a value that is
// not an item is a config error when constant and a documented fallback
// (field left empty, warning, metric) when rendered.
func TestBacklogCase14ListCustomField(t *testing.T) {
	b := sinkstest.NewBacklog(caseKey)
	defer b.Close()
	b.CustomFields = append(b.CustomFields, sinkstest.BacklogCustomField{ID: 3005, TypeID: sinkstest.BacklogFieldList, Name: "Environment",
		Items: []sinkstest.BacklogItem{{ID: 7001, Name: "prod"}, {ID: 7002, Name: "stg"}}})
	dir := t.TempDir()
	cfg := backlogCaseConfig(t, "14-backlog-list-custom-field", b.URL, dir)
	_, err := checkConfigFile(t, cfg)
	require.NoError(t, err)

	ts := startServerIn(t, dir, cfg)
	code, body := ts.post(t, "/webhook", casePayload(t, "14-backlog-list-custom-field"))
	require.Equal(t, 200, code, "%v", body)
	is := waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool { return len(is) == 1 })
	require.Equal(t, []string{"7001"}, is[0].Custom["customField_3005"])

	dev := bytes.Replace(casePayload(t, "14-backlog-list-custom-field"), []byte(`"env": "prod"`), []byte(`"env": "dev"`), 1)
	dev = bytes.Replace(dev, []byte(`"instance": "db1:9100"`), []byte(`"instance": "db2:9100"`), 1)
	code, _ = ts.post(t, "/webhook", dev)
	require.Equal(t, 200, code)
	is = waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool { return len(is) == 2 })
	require.NotContains(t, is[1].Custom, "customField_3005")
	_, m := ts.get(t, "/metrics")
	require.Contains(t, m, `alertfan_backlog_fallbacks_total{field="custom_fields.Environment",receiver="tickets"} 1`)
	require.Contains(t, ts.logs.String(), `\"dev\" is not an item of single list field \"Environment\"; valid items: \"prod\", \"stg\"`)

	_, err = checkConfigFile(t, strings.Replace(cfg, "'{{ .CommonLabels.env }}'", "dev", 1))
	require.ErrorContains(t, err, `custom_fields.Environment: "dev" is not an item of single list field "Environment"; valid items: "prod", "stg"`)
}

// Case 15: a multi-line annotation keeps the annotation table one row per
// annotation, in a markdown and in a Backlog-notation project.
func TestBacklogCase15MultilineAnnotation(t *testing.T) {
	for _, rule := range []string{"markdown", "backlog"} {
		t.Run(rule, func(t *testing.T) {
			b := sinkstest.NewBacklog(caseKey)
			defer b.Close()
			b.TextFormattingRule = rule
			dir := t.TempDir()
			ts := startServerIn(t, dir, backlogCaseConfig(t, "15-backlog-multiline-annotation-table", b.URL, dir))
			code, body := ts.post(t, "/webhook", casePayload(t, "15-backlog-multiline-annotation-table"))
			require.Equal(t, 200, code, "%v", body)
			is := waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool { return len(is) == 1 })
			d := is[0].Description
			_, annotations, ok := strings.Cut(d, "Annotations\n")
			require.True(t, ok, d)
			var rows []string
			for _, l := range strings.Split(strings.TrimSpace(annotations), "\n") {
				if !strings.HasPrefix(l, "|") {
					break
				}
				rows = append(rows, l)
			}
			want := map[string]int{"markdown": 4, "backlog": 3}[rule] // header rows + description + summary
			require.Len(t, rows, want, "one row per annotation:\n%s", d)
			last := rows[len(rows)-2]
			require.True(t, strings.HasPrefix(last, "| description |") || strings.HasPrefix(last, "|description|"), last)
			require.Contains(t, last, "VALUE = 7.3")
			require.Contains(t, last, "LABELS = map")
		})
	}
}

// check-config --online refuses every config that could only fail alert by
// alert, naming the field and listing what is valid.
func TestBacklogCheckConfigOnlineRefusals(t *testing.T) {
	cases := []struct {
		name, extra, want string
		ja                bool
	}{
		{"defaults in a Japanese space", "", "", true},
		{"English status in a Japanese space", "        close_status: Closed\n", "", true},
		{"constant priority", "        priority: 緊急\n", `priority: "緊急" does not exist in Backlog; valid names: "中", "低", "高"`, true},
		{"branch of a templated priority", "        priority: '{{ if eq .CommonLabels.severity \"critical\" }}Urgent{{ else }}Normal{{ end }}'\n", `priority: "Urgent" does not exist`, false},
		{"status", "        close_status: 終了\n", `close_status: "終了" does not exist`, true},
		{"custom list item", "        custom_fields:\n          Environment: dev\n", `valid items: "prod", "stg"`, false},
		{"required custom field", "        custom_fields:\n          Team: db\n", `custom_fields: "Customer" is required`, false},
		{"skip resolution", "        skip_reopen_resolutions: [Wontfix]\n", `skip_reopen_resolutions: "Wontfix" does not exist`, false},
		{"assignee constant", "        assignee: '{{ if .CommonLabels.team }}bob{{ end }}'\n", `assignee: "bob" is not a member`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b *sinkstest.Backlog
			if c.ja {
				b = sinkstest.NewBacklogJa(backlogKey)
				b.IssueTypes["Bug"] = 2005
			} else {
				b = sinkstest.NewBacklog(backlogKey)
				b.CustomFields = append(b.CustomFields, sinkstest.BacklogCustomField{ID: 3005, TypeID: sinkstest.BacklogFieldList, Name: "Environment",
					Items: []sinkstest.BacklogItem{{ID: 7001, Name: "prod"}, {ID: 7002, Name: "stg"}}})
				if c.name == "required custom field" {
					b.CustomFields = append(b.CustomFields, sinkstest.BacklogCustomField{ID: 3006, TypeID: sinkstest.BacklogFieldText, Name: "Customer", Required: true})
				}
			}
			defer b.Close()
			cfg := backlogConfig(b.URL, c.extra)
			out, err := checkConfigFile(t, cfg)
			if c.want == "" {
				require.NoError(t, err, out)
				require.Contains(t, out, "tickets/backlog/0: OK")
				return
			}
			require.ErrorContains(t, err, c.want)
			require.Contains(t, out, "tickets/backlog/0: FAILED")
			require.NotContains(t, err.Error(), backlogKey)
			// A running alertfan started with it keeps paging and taking
			// alerts, and holds this target as not ready, saying why
			// (issue 15: a broken target never takes the process down).
			ts := startServerIn(t, t.TempDir(), cfg)
			_, ready := ts.get(t, "/-/ready")
			require.Contains(t, ready, "tickets/backlog/0")
			require.Contains(t, ready, c.want)
		})
	}
}

// mode: group keeps one issue per Alertmanager group through the real
// queue: the description follows alerts joining and resolving, the issue
// closes when the whole group has resolved.
func TestBacklogGroupModeEndToEnd(t *testing.T) {
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	ts := startServer(t, backlogConfig(b.URL, "        mode: group\n"))
	start := time.Now().UTC().Add(-time.Minute)
	group := `{}:{alertname="DiskFull"}`
	post := func(alerts ...sinkstest.WebhookAlert) {
		code, body := ts.post(t, "/webhook", sinkstest.Webhook("tickets", group, map[string]string{"alertname": "DiskFull"}, alerts...))
		require.Equal(t, 200, code, "%v", body)
		settle(t, ts)
	}
	a := func(host, status string) sinkstest.WebhookAlert {
		return sinkstest.NamedAlert("DiskFull", "critical", host, status, start)
	}
	post(a("db-1", "firing"), a("db-2", "firing"))
	post(a("db-1", "firing"), a("db-2", "firing"), a("db-3", "firing"))
	is := b.Issues()
	require.Len(t, is, 1)
	require.Contains(t, is[0].Description, "db-3")
	post(a("db-1", "resolved"), a("db-2", "resolved"), a("db-3", "resolved"))
	is = waitIssues(t, b, func(is []sinkstest.BacklogIssue) bool { return b.StatusName(is[0].StatusID) == "Closed" })
	require.Len(t, is, 1)
	require.Contains(t, is[0].Description, "0 firing, 3 resolved")
}

// People win through the real queue: a person closes the issue as Won't
// Fix; the resolve writes nothing into it, and with Won't Fix listed in
// skip_reopen_resolutions a later occurrence opens no new issue. A deleted
// issue is replaced at the next firing.
func TestBacklogPersonClosedThroughTheQueue(t *testing.T) {
	b := sinkstest.NewBacklogJa(backlogKey)
	defer b.Close()
	b.IssueTypes["Bug"] = 2005
	ts := startServer(t, backlogConfig(b.URL, "        skip_reopen_resolutions: [対応しない]\n"))
	start := time.Now().UTC().Add(-time.Hour)
	step := func(status string, at time.Time) {
		code, body := ts.post(t, "/webhook", alertAt(status, at))
		require.Equal(t, 200, code, "%v", body)
		settle(t, ts)
	}
	writes := func() int {
		n := 0
		for _, c := range b.Calls() {
			if c.Method != "GET" {
				n++
			}
		}
		return n
	}
	step("firing", start)
	require.Len(t, b.Issues(), 1)
	wontFix := int64(1)
	b.PersonUpdates("OPS-1", 4, &wontFix)
	step("resolved", start)
	step("firing", start.Add(30*time.Minute))
	require.Equal(t, 1, writes(), "only the create: no comment, no close, no reopen, no new issue")
	is, _ := b.Issue("OPS-1")
	require.Empty(t, is.Comments)

	b.PersonDeletes("OPS-1")
	step("resolved", start.Add(30*time.Minute))
	step("firing", start.Add(40*time.Minute))
	require.Len(t, b.Issues(), 1)
	require.Equal(t, "OPS-2", b.Issues()[0].Key, "the deleted issue is replaced")
}
