package backlog_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/backlog"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// spaces are the two languages every behaviour is tried in.
var spaces = []struct {
	name string
	new  func(string) *sinkstest.Backlog
}{
	{"en", sinkstest.NewBacklog},
	{"ja", sinkstest.NewBacklogJa},
}

type harness struct {
	n       *backlog.Notifier
	reg     *prometheus.Registry
	metrics *backlog.Metrics
	store   backlog.IssueStore
}

func newHarness(t *testing.T, fake *sinkstest.Backlog, extra string) (*harness, error) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h := &harness{reg: reg, metrics: backlog.NewMetrics(reg), store: store(t)}
	var err error
	h.n, err = backlog.New(context.Background(), conf(t, fake.URL, extra), backlog.Deps{
		ID: "tickets/backlog/0", Template: tmpl(t), Issues: h.store, Metrics: h.metrics, Logger: slog.New(slog.DiscardHandler),
	})
	return h, err
}

func (h *harness) fallbacks(field string) float64 {
	c, err := h.reg.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range c {
		if mf.GetName() != "alertfan_backlog_fallbacks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "field" && l.GetValue() == field {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// Defaults must work in a space of either language (case 12).
func TestDefaultsWorkInEverySpace(t *testing.T) {
	for _, sp := range spaces {
		t.Run(sp.name, func(t *testing.T) {
			fake := sp.new(apiKey)
			defer fake.Close()
			if sp.name == "ja" {
				fake.IssueTypes["Bug"] = 2005
			}
			h, err := newHarness(t, fake, "resolution: Fixed\n")
			require.NoError(t, err)
			ctx := context.Background()
			require.NoError(t, h.n.Deliver(ctx, sample("firing")))
			is := fake.Issues()
			require.Len(t, is, 1)
			require.EqualValues(t, 2, is[0].PriorityID, "critical → High/高 (id 2)")
			warn := sample("firing")
			warn.Alerts[0].Identity, warn.Key = "am:warn", "am:warn"
			warn.Alerts[0].Labels["severity"] = "warning"
			require.NoError(t, h.n.Deliver(ctx, warn))
			require.EqualValues(t, 3, fake.Issues()[1].PriorityID, "otherwise Normal/中 (id 3)")
			require.NoError(t, h.n.Deliver(ctx, sample("resolved")))
			got, _ := fake.Issue(is[0].Key)
			require.EqualValues(t, 4, got.StatusID, "closed: Closed/完了 (id 4)")
			require.NotNil(t, got.Resolution, "Fixed/対応済み has id 0 and must still be sent")
			require.EqualValues(t, 0, *got.Resolution)
			require.NoError(t, h.n.Deliver(ctx, sample("firing")))
			got, _ = fake.Issue(is[0].Key)
			require.EqualValues(t, 1, got.StatusID, "reopened: Open/未対応 (id 1)")
			require.Zero(t, h.fallbacks("priority"))
		})
	}
}

func TestNamesRefusedAtStart(t *testing.T) {
	cases := []struct {
		name, space, extra, want string
	}{
		{"ja statuses by name", "ja", "close_status: 完了\nreopen_status: 未対応\nresolution: 対応しない\n", ""},
		{"ja priority by name", "ja", "priority: 高\n", ""},
		{"en names in ja space", "ja", "priority: Low\nclose_status: Closed\nresolution: Won't Fix\n", ""},
		{"ids", "en", "priority: '4'\nclose_status: '3'\n", ""},
		{"bad close status", "en", "close_status: Done\n", `close_status: "Done" does not exist in Backlog; valid names: "Closed", "In Progress", "Open", "Resolved"`},
		{"bad ja close status", "ja", "close_status: 終了\n", `close_status: "終了" does not exist in Backlog; valid names: "処理中", "処理済み", "完了", "未対応"`},
		{"bad constant priority", "en", "priority: Urgent\n", `priority: "Urgent" does not exist in Backlog; valid names: "High", "Low", "Normal"`},
		{"bad branch of a templated priority", "ja", "priority: '{{ if eq .CommonLabels.severity \"critical\" }}最高{{ else }}中{{ end }}'\n", `priority: "最高" does not exist in Backlog; valid names: "中", "低", "高"`},
		{"bad default_priority", "en", "default_priority: Urgent\n", `default_priority: "Urgent" does not exist`},
		{"bad resolution", "en", "resolution: Done\n", `resolution: "Done" does not exist`},
		{"bad skip resolution", "ja", "skip_reopen_resolutions: [却下]\n", `skip_reopen_resolutions: "却下" does not exist in Backlog; valid names: "再現しない", "対応しない", "対応済み", "無効", "重複"`},
		{"bad custom field", "en", "custom_fields:\n  Owner: x\n", `custom_fields: "Owner" does not exist in Backlog; valid names: "Cost", "Details", "Due", "Environment", "Impact", "Note", "Regions", "Severity"`},
		{"constant list item", "en", "custom_fields:\n  Environment: dev\n", `custom_fields.Environment: "dev" is not an item of single list field "Environment"; valid items: "prod", "stg"`},
		{"templated list, good default", "en", "custom_fields:\n  Environment: '{{ or .CommonLabels.env \"stg\" }}'\n", ""},
		{"templated list, bad default", "en", "custom_fields:\n  Environment: '{{ or .CommonLabels.env \"qa\" }}'\n", `custom_fields.Environment: "qa" is not an item`},
		{"templated list constant branch", "en", "custom_fields:\n  Environment: '{{ with .CommonLabels.env }}{{ . }}{{ else }}qa{{ end }}'\n", `"qa" is not an item`},
		{"constant numeric", "ja", "custom_fields:\n  費用: many\n", `custom_fields.費用: "many" is not a number`},
		{"constant date", "en", "custom_fields:\n  Due: soon\n", "is not a date"},
		{"bad assignee", "en", "assignee: bob\n", `assignee: "bob" is not a member of project OPS; members: "alice", "oncall"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake := sinkstest.NewBacklog(apiKey)
			if c.space == "ja" {
				fake.Close()
				fake = sinkstest.NewBacklogJa(apiKey)
				fake.IssueTypes["Bug"] = 2005
			}
			defer fake.Close()
			fake.AllFieldTypes(c.space == "ja")
			_, err := newHarness(t, fake, c.extra)
			if c.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.want)
			require.NotContains(t, err.Error(), apiKey)
		})
	}
}

func TestRequiredCustomFieldRefusedAtStart(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	fake.CustomFields = append(fake.CustomFields, sinkstest.BacklogCustomField{ID: 3009, TypeID: sinkstest.BacklogFieldText, Name: "Customer", Required: true})
	_, err := newHarness(t, fake, "")
	require.ErrorContains(t, err, `custom_fields: "Customer" is required for issue type "Bug"`)
	// Required only for another issue type: fine.
	fake.CustomFields[len(fake.CustomFields)-1].ApplicableIssueTypes = []int64{fake.IssueTypes["Task"]}
	_, err = newHarness(t, fake, "")
	require.NoError(t, err)
}

// A field the issue type requires takes its template's default (the `or`
// default, a branch's constant) when an alert renders it empty or with a
// value the field does not take: Backlog would refuse the create, and the
// alert would have no ticket. A required field whose template has no such
// default is refused at start; every required field left out is named at
// once.
func TestRequiredCustomFieldFallsBackToItsDefault(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	fake.AllFieldTypes(false)
	for i := range fake.CustomFields {
		fake.CustomFields[i].Required = true
	}
	all := "custom_fields:\n" +
		"  Note: '{{ or .CommonLabels.instance \"unknown host\" }}'\n" +
		"  Details: '{{ or .CommonAnnotations.details \"none\" }}'\n" +
		"  Cost: '{{ or .CommonLabels.cost \"5\" }}'\n" +
		"  Due: '{{ if .CommonLabels.due }}{{ .CommonLabels.due }}{{ else }}2030-01-01{{ end }}'\n" +
		"  Environment: '{{ or .CommonLabels.env \"prod\" }}'\n" +
		"  Regions: '{{ or .CommonLabels.region \"tokyo\" }}'\n" +
		"  Impact: users\n" +
		"  Severity: '{{ or .CommonLabels.sev \"sev2\" }}'\n"
	h, err := newHarness(t, fake, all)
	require.NoError(t, err)
	notif := sample("firing")
	a := &notif.Alerts[0]
	a.Labels["env"], a.Labels["cost"], a.Labels["region"] = "dev", "1,000", "nowhere"
	delete(a.Labels, "instance")
	require.NoError(t, h.n.Deliver(context.Background(), notif))
	require.Zero(t, fake.CountStatus(400), "Backlog would have refused the create")
	is := fake.Issues()
	require.Len(t, is, 1)
	require.Equal(t, []string{"5001"}, is[0].Custom["customField_3105"], "Environment: dev is no item, prod is sent")
	require.Equal(t, []string{"5"}, is[0].Custom["customField_3103"], "Cost")
	require.Equal(t, []string{"5011"}, is[0].Custom["customField_3106"], "Regions")
	require.Equal(t, []string{"unknown host"}, is[0].Custom["customField_3101"], "Note")
	require.Equal(t, 1.0, h.fallbacks("custom_fields.Environment"))

	// No default to fall back on: refused at start, naming the field.
	_, err = newHarness(t, fake, strings.Replace(all, "'{{ or .CommonLabels.instance \"unknown host\" }}'", "'{{ .CommonLabels.instance }}'", 1))
	require.ErrorContains(t, err, `custom_fields.Note: issue type "Bug" requires field "Note", and its template has no constant value`)
	_, err = newHarness(t, fake, strings.Replace(all, "'{{ or .CommonLabels.env \"prod\" }}'", "'{{ .CommonLabels.env }}'", 1))
	require.ErrorContains(t, err, `its items: "prod", "stg"`)
	// Every required field left out, at once.
	_, err = newHarness(t, fake, "custom_fields:\n  Impact: users\n")
	require.ErrorContains(t, err, `custom_fields: "Note", "Details", "Cost", "Due", "Environment", "Regions", "Severity" are required for issue type "Bug"`)
}

// A field that does not apply to the configured issue type is refused at
// start (Backlog would ignore or refuse its value on every create); a
// same-named field of the configured type is the one used.
func TestCustomFieldOfAnotherIssueTypeRefusedAtStart(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	fake.CustomFields = append(fake.CustomFields, sinkstest.BacklogCustomField{ID: 3201, TypeID: sinkstest.BacklogFieldText, Name: "Squad",
		ApplicableIssueTypes: []int64{fake.IssueTypes["Task"]}})
	_, err := newHarness(t, fake, "custom_fields:\n  Squad: db\n")
	require.ErrorContains(t, err, `custom_fields.Squad: field "Squad" does not apply to issue type "Bug"`)
	fake.CustomFields = append(fake.CustomFields, sinkstest.BacklogCustomField{ID: 3202, TypeID: sinkstest.BacklogFieldText, Name: "Squad",
		ApplicableIssueTypes: []int64{fake.IssueTypes["Bug"]}})
	h, err := newHarness(t, fake, "custom_fields:\n  Squad: db\n")
	require.NoError(t, err)
	require.NoError(t, h.n.Deliver(context.Background(), sample("firing")))
	require.Equal(t, []string{"db"}, fake.Issues()[0].Custom["customField_3202"])
}

// Every custom field type, in both languages, as add-issue wants it.
func TestCustomFieldTypes(t *testing.T) {
	for _, sp := range spaces {
		t.Run(sp.name, func(t *testing.T) {
			fake := sp.new(apiKey)
			defer fake.Close()
			fake.IssueTypes["Bug"] = 2005
			fake.AllFieldTypes(sp.name == "ja")
			names := map[string]string{"Note": "メモ", "Details": "詳細", "Cost": "費用", "Due": "期限", "Environment": "環境", "Regions": "地域", "Impact": "影響", "Severity": "重大度"}
			n := func(s string) string {
				if sp.name == "ja" {
					return names[s]
				}
				return s
			}
			extra := "custom_fields:\n" +
				"  " + n("Note") + ": '{{ .CommonAnnotations.description }}'\n" +
				"  " + n("Details") + ": '{{ .CommonAnnotations.description }}'\n" +
				"  " + n("Cost") + ": '{{ .CommonLabels.cost }}'\n" +
				"  " + n("Due") + ": '{{ (index .Alerts 0).StartsAt.Format \"2006-01-02T15:04:05Z07:00\" }}'\n" +
				"  " + n("Environment") + ": '{{ .CommonLabels.env }}'\n" +
				"  " + n("Regions") + ": '{{ .CommonLabels.regions }}'\n" +
				"  " + n("Impact") + ": '{{ .CommonLabels.impact }}'\n" +
				"  " + n("Severity") + ": '{{ .CommonLabels.sev }}'\n"
			h, err := newHarness(t, fake, extra)
			require.NoError(t, err)
			notif := sample("firing")
			a := &notif.Alerts[0]
			a.Annotations["description"] = "line one\nline two"
			a.Labels["cost"] = "12.5"
			a.Labels["env"] = "prod"
			a.Labels["regions"] = "tokyo,osaka"
			a.Labels["impact"] = "users, partners"
			a.Labels["sev"] = "sev2"
			require.NoError(t, h.n.Deliver(context.Background(), notif))
			is := fake.Issues()
			require.Len(t, is, 1)
			require.Equal(t, map[string][]string{
				"customField_3101": {"line one line two"},
				"customField_3102": {"line one\nline two"},
				"customField_3103": {"12.5"},
				"customField_3104": {"2026-11-28"},
				"customField_3105": {"5001"},
				"customField_3106": {"5011", "5012"},
				"customField_3107": {"5021"},
				"customField_3108": {"5032"},
			}, is[0].Custom)
			require.Equal(t, map[string]string{"customField_3107_otherValue": "partners"}, is[0].Other)

			// A rendered value that is not an item: the field is left
			// empty, with a warning and a metric, and the issue is created.
			bad := sample("firing")
			bad.Key, bad.Alerts[0].Identity = "am:other", "am:other"
			bad.Alerts[0].Labels["env"] = "dev"
			bad.Alerts[0].Labels["cost"] = "5000"
			require.NoError(t, h.n.Deliver(context.Background(), bad))
			is = fake.Issues()
			require.Len(t, is, 2)
			require.NotContains(t, is[1].Custom, "customField_3105")
			require.NotContains(t, is[1].Custom, "customField_3103")
			require.Equal(t, 1.0, h.fallbacks("custom_fields."+n("Environment")))
			require.Equal(t, 1.0, h.fallbacks("custom_fields."+n("Cost")))
		})
	}
}

// A rendered priority that does not exist falls back to default_priority
// with a metric instead of a dead letter.
func TestRenderedPriorityFallsBack(t *testing.T) {
	for _, sp := range spaces {
		t.Run(sp.name, func(t *testing.T) {
			fake := sp.new(apiKey)
			defer fake.Close()
			fake.IssueTypes["Bug"] = 2005
			h, err := newHarness(t, fake, "priority: '{{ .CommonLabels.severity }}'\ndefault_priority: Low\n")
			require.NoError(t, err)
			require.NoError(t, h.n.Deliver(context.Background(), sample("firing")))
			is := fake.Issues()
			require.Len(t, is, 1)
			require.EqualValues(t, 4, is[0].PriorityID)
			require.Equal(t, 1.0, h.fallbacks("priority"))
		})
	}
}

// Every value written stays within Backlog's limits, cut with "…".
func TestLimits(t *testing.T) {
	for _, sp := range spaces {
		t.Run(sp.name, func(t *testing.T) {
			fake := sp.new(apiKey)
			defer fake.Close()
			fake.IssueTypes["Bug"] = 2005
			h, err := newHarness(t, fake, "on_repeat: comment\nrepeat_comment: '{{ .CommonAnnotations.huge }}'\n")
			require.NoError(t, err)
			notif := sample("firing")
			a := &notif.Alerts[0]
			a.Annotations["summary"] = strings.Repeat("長い要約 ", 200) + "\nsecond line"
			a.Annotations["huge"] = strings.Repeat("x", sinkstest.BacklogMaxBody+500)
			a.Annotations["description"] = strings.Repeat("y", sinkstest.BacklogMaxBody+500)
			ctx := context.Background()
			require.NoError(t, h.n.Deliver(ctx, notif))
			is := fake.Issues()
			require.Len(t, is, 1)
			require.Equal(t, sinkstest.BacklogMaxSummary, len([]rune(is[0].Summary)))
			require.True(t, strings.HasSuffix(is[0].Summary, "…"))
			require.NotContains(t, is[0].Summary, "\n")
			require.LessOrEqual(t, len([]rune(is[0].Description)), sinkstest.BacklogMaxBody)
			require.Contains(t, is[0].Description, "…")
			require.Contains(t, is[0].Description, backlog.Marker(h.n.Destination(), "am:c0ffee", 1), "the marker survives the cut")
			require.NoError(t, h.n.Deliver(ctx, notif))
			is = fake.Issues()
			require.Len(t, is[0].Comments, 1)
			require.Equal(t, sinkstest.BacklogMaxComment, len([]rune(is[0].Comments[0])))
			require.Zero(t, fake.CountStatus(400))
		})
	}
}

// Characters Backlog's API refuses (outside the Basic Multilingual Plane:
// emoji, CJK Extension B kanji) are written as their code points, and
// controls that would hide or reverse text are dropped, in every field,
// comments included: the ticket is created, never dead-lettered for them.
func TestCharactersTheAPIRefusesAreMapped(t *testing.T) {
	for _, sp := range spaces {
		t.Run(sp.name, func(t *testing.T) {
			fake := sp.new(apiKey)
			defer fake.Close()
			fake.IssueTypes["Bug"] = 2005
			h, err := newHarness(t, fake, "on_repeat: comment\nrepeat_comment: 'still 🔥 {{ .CommonAnnotations.summary }}'\n")
			require.NoError(t, err)
			notif := sample("firing")
			a := &notif.Alerts[0]
			a.Annotations["summary"] = "🔥 CPU 99% on 𠮷野家-db\x00\x1b[31m\x7f\u202eevil"
			a.Labels["instance"] = "𠮷野家-1\u2066x\u2069"
			a.Annotations["description"] = "line 1 👨\u200d👩\nline 2\tok\u0085"
			ctx := context.Background()
			require.NoError(t, h.n.Deliver(ctx, notif))
			is := fake.Issues()
			require.Len(t, is, 1)
			require.Contains(t, is[0].Summary, "U+1F525 CPU 99% on U+20BB7野家-db[31mevil")
			require.Contains(t, is[0].Description, "U+20BB7野家-1x")
			require.Contains(t, is[0].Description, "line 2\tok")
			require.Contains(t, is[0].Description, "U+1F468\u200dU+1F469")
			for _, s := range []string{is[0].Summary, is[0].Description} {
				require.False(t, strings.ContainsAny(s, "\x00\x1b\x7f\u0085\u202e\u2066\u2069"), "%q", s)
			}
			a.Annotations["summary"] = "changed 🚨"
			require.NoError(t, h.n.Deliver(ctx, notif))
			is = fake.Issues()
			require.NotEmpty(t, is[0].Comments)
			require.Contains(t, is[0].Comments[len(is[0].Comments)-1], "U+1F6A8")
			require.Zero(t, fake.CountStatus(400), "the fake refuses 4-byte characters as Backlog does")
		})
	}
}

// The default description keeps one table row per label and annotation in
// both notations, whatever the values hold (case 15's class).
func TestDescriptionLayoutSurvivesValues(t *testing.T) {
	values := map[string]string{
		"multiline": "Node memory is filling up (< 10% left)\n  VALUE = 7.3\n  LABELS = map[instance:node1:9100 job:node]",
		"pipes":     "a | b || c",
		"markup":    "*bold* _it_ # not a heading ''x'' [[link]] %%s%%",
		"html":      "<script>alert(1)</script><br>",
		"crlf":      "one\r\ntwo",
	}
	for _, sp := range spaces {
		t.Run(sp.name, func(t *testing.T) {
			fake := sp.new(apiKey)
			defer fake.Close()
			fake.IssueTypes["Bug"] = 2005
			h, err := newHarness(t, fake, "")
			require.NoError(t, err)
			notif := sample("firing")
			for k, v := range values {
				notif.Alerts[0].Annotations[k] = v
			}
			require.NoError(t, h.n.Deliver(context.Background(), notif))
			d := fake.Issues()[0].Description
			golden(t, "description-values-"+sp.name+".golden", strings.ReplaceAll(d, backlog.Marker(h.n.Destination(), "am:c0ffee", 1), "alertfan-MARKER"))
			rows := tableRows(d)
			headers := 4 // markdown: a header and a delimiter row per table
			if sp.name == "ja" {
				headers = 2 // Backlog notation: |…|h
			}
			require.Len(t, rows, 4+3+len(values)+headers, "one row per label and annotation plus header rows:\n%s", d)
			for _, r := range rows {
				require.Equal(t, 2, cells(r, sp.name), "row %q", r)
			}
		})
	}
}

func tableRows(d string) []string {
	var out []string
	for _, l := range strings.Split(d, "\n") {
		if strings.HasPrefix(l, "|") {
			out = append(out, l)
		}
	}
	return out
}

// cells counts unescaped cell separators of a table row.
func cells(row, space string) int {
	row = strings.TrimSuffix(row, "h")
	n := 0
	for i := 0; i < len(row); i++ {
		if space == "en" && row[i] == '\\' {
			i++
			continue
		}
		if row[i] == '|' {
			n++
		}
	}
	if space == "en" && strings.HasPrefix(row, "|---") {
		return 2
	}
	return n - 1
}

func TestRefireCommentShowsTheNewOccurrence(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	h, err := newHarness(t, fake, "")
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, h.n.Deliver(ctx, sample("firing")))
	require.NoError(t, h.n.Deliver(ctx, sample("resolved")))
	again := sample("firing")
	again.Alerts[0].StartsAt = time.Date(2026, 11, 28, 11, 45, 0, 0, time.UTC)
	require.NoError(t, h.n.Deliver(ctx, again))
	is := fake.Issues()
	require.Len(t, is, 1)
	require.Equal(t, []string{"Resolved at 2026-11-28 10:30:00 UTC.", "Firing again at 2026-11-28 11:45:00 UTC."}, is[0].Comments)
}

func TestCommentTemplates(t *testing.T) {
	fake := sinkstest.NewBacklogJa(apiKey)
	defer fake.Close()
	fake.IssueTypes["Bug"] = 2005
	h, err := newHarness(t, fake, "on_repeat: comment\nrepeat_comment: '{{ if .Markdown }}md{{ else }}継続中: {{ .CommonLabels.instance | backlogEscape }}{{ end }}'\nresolved_comment: '復旧しました'\nupdate_description: true\n")
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, h.n.Deliver(ctx, sample("firing")))
	changed := sample("firing")
	changed.Alerts[0].Annotations["summary"] = "Disk /var is 99% full"
	require.NoError(t, h.n.Deliver(ctx, changed))
	require.NoError(t, h.n.Deliver(ctx, sample("resolved")))
	is := fake.Issues()
	require.Equal(t, []string{"継続中: db-1:9100", "復旧しました"}, is[0].Comments)
	require.Contains(t, is[0].Description, "Disk /var is 97% full", "update_description rewrites it on resolve")
	require.Contains(t, is[0].Description, "Ended:")
}

var _ = sinks.StatusFiring

func TestAssignee(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	h, err := newHarness(t, fake, "assignee: '{{ .CommonLabels.owner }}'\n")
	require.NoError(t, err)
	ctx := context.Background()
	n := sample("firing")
	n.Alerts[0].Labels["owner"] = "oncall"
	require.NoError(t, h.n.Deliver(ctx, n))
	other := sample("firing")
	other.Key, other.Alerts[0].Identity = "am:b", "am:b"
	other.Alerts[0].Labels["owner"] = "bob"
	require.NoError(t, h.n.Deliver(ctx, other))
	is := fake.Issues()
	require.Len(t, is, 2)
	require.NotNil(t, is[0].AssigneeID)
	require.EqualValues(t, fake.Users["oncall"], *is[0].AssigneeID)
	require.Nil(t, is[1].AssigneeID, "an unknown rendered assignee leaves the issue unassigned")
	require.Equal(t, 1.0, h.fallbacks("assignee"))
}

// Forget (called when an operator retries dead letters) makes the next
// delivery read the space's names again: a list item an administrator
// just added is used at once, not a minute later.
func TestForgetReadsTheSpaceAgain(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	fake.AllFieldTypes(false)
	h, err := newHarness(t, fake, "custom_fields:\n  Environment: '{{ .CommonLabels.env }}'\n")
	require.NoError(t, err)
	deliver := func(id string) sinkstest.BacklogIssue {
		n := sample("firing")
		n.Key, n.Alerts[0].Identity = "am:"+id, "am:"+id
		n.Alerts[0].Labels["env"] = "dev"
		require.NoError(t, h.n.Deliver(context.Background(), n))
		is := fake.Issues()
		return is[len(is)-1]
	}
	require.Empty(t, deliver("a1").Custom["customField_3105"], "no item dev yet: left empty")
	fake.AddListItem(3105, sinkstest.BacklogItem{ID: 5003, Name: "dev"})
	require.Empty(t, deliver("a2").Custom["customField_3105"], "the names read before are kept")
	h.n.Forget()
	require.Equal(t, []string{"5003"}, deliver("a3").Custom["customField_3105"])
}
