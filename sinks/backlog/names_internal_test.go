package backlog

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestConstantOutputs(t *testing.T) {
	cases := []struct {
		text string
		want []string
	}{
		{"High", []string{"High"}},
		{" 中 ", []string{"中"}},
		{`{{ if eq .CommonLabels.severity "critical" }}High{{ else }}Normal{{ end }}`, []string{"High", "Normal"}},
		{`{{ if eq .CommonLabels.severity "critical" }}高{{ else if eq .CommonLabels.severity "warning" }}中{{ else }}Lowest{{ end }}`, []string{"高", "中", "Lowest"}},
		{`{{ with .CommonLabels.env }}{{ . }}{{ else }}prod{{ end }}`, []string{"prod"}},
		{`{{ .CommonLabels.env }}`, nil},
		{`{{ if .CommonLabels.env }}env-{{ .CommonLabels.env }}{{ end }}`, nil},
		{`{{ range .Alerts }}x{{ end }}`, nil},
		{`{{ if .CommonLabels.x }}A{{ end }}-suffix`, nil},
		{`  {{ if .CommonLabels.x }} A {{ else }}B{{ end }}
`, []string{"A", "B"}},
		{`{{ if .CommonLabels.x }}pre-{{ if .CommonLabels.y }}A{{ end }}{{ end }}`, nil},
		{`{{ if unknownFunc . }}A{{ end }}`, []string{"A"}},
		{`{{ if`, nil},
		{`{{ if .CommonLabels.page }}{{ "High" }}{{ else }}{{ "Low" }}{{ end }}`, []string{"High", "Low"}},
		{`{{ or .CommonLabels.priority "Normal" }}`, []string{"Normal"}},
		{`{{ .CommonLabels.env | or "stg" }}`, []string{"stg"}},
		{`{{ if .CommonLabels.x }}{{ or .CommonLabels.y "A" "B" }}{{ else }}C{{ end }}`, []string{"A", "B", "C"}},
	}
	for _, c := range cases {
		t.Run(c.text, func(t *testing.T) {
			require.Equal(t, c.want, constantOutputs(c.text))
		})
	}
}

func TestEscaping(t *testing.T) {
	cases := []struct {
		name, in, rule, kind, want string
	}{
		{"md cell newline and pipe", "a\n  b | c", RuleMarkdown, kindCell, `a<br>  b \| c`},
		{"md cell emphasis and html", "*x* <script>", RuleMarkdown, kindCell, `\*x\* \<script\>`},
		{"md cell word underscore kept", "runbook_url", RuleMarkdown, kindCell, "runbook_url"},
		{"md cell leading underscore", "_x_", RuleMarkdown, kindCell, `\_x\_`},
		{"md text heading and list", "# h\n- item\n1. one", RuleMarkdown, kindText, "\\# h\n\\- item\n1\\. one"},
		{"md text map brackets", "LABELS = map[a:b]", RuleMarkdown, kindText, `LABELS = map\[a:b\]`},
		{"backlog cell pipe and newline", "a|b\nc", RuleBacklog, kindCell, "a｜b&br;c"},
		{"backlog cell markup", "''b'' [[x]] {code}", RuleBacklog, kindCell, "'\u200b'b'\u200b' [\u200b[x]\u200b] {\u200bcode}"},
		{"backlog text selector copies clean", `sum(rate(http_requests_total{job="api"}[5m])) jsonpath={.items[*]}`, RuleBacklog, kindText, `sum(rate(http_requests_total{job="api"}[5m])) jsonpath={.items[*]}`},
		{"backlog text blocks and macros", "{quote}x{/quote} &color(red) { y } #image(a.png)", RuleBacklog, kindText, "{\u200bquote}x{\u200b/quote} &\u200bcolor(red) { y } #\u200bimage(a.png)"},
		{"backlog text heading", "* not a heading\n- not a list", RuleBacklog, kindText, "\u200b* not a heading\n\u200b- not a list"},
		{"backlog text html passes", "<b>x</b>", RuleBacklog, kindText, "<b>x</b>"},
		{"plain fields keep the value", "a|*b*\nc", RulePlain, kindCell, "a|*b*\nc"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, applyRule(sentinelOpen+c.kind+c.in+sentinelClose, c.rule))
		})
	}
}

func TestFieldConvert(t *testing.T) {
	lo, hi := 0.0, 10.0
	items := []Named{{ID: 11, Name: "prod"}, {ID: 12, Name: "stg"}}
	long := make([]rune, 300)
	for i := range long {
		long[i] = 'あ'
	}
	cases := []struct {
		name  string
		f     CustomField
		in    string
		want  fieldValue
		error string
	}{
		{"text one line, cut", CustomField{TypeID: FieldText}, "a\nb " + string(long), fieldValue{values: []string{"a b " + string(long[:250]) + "…"}}, ""},
		{"sentence keeps lines", CustomField{TypeID: FieldSentence}, "a\nb", fieldValue{values: []string{"a\nb"}}, ""},
		{"numeric", CustomField{TypeID: FieldNumeric, Min: NumBound(lo), Max: NumBound(hi)}, " 7.50 ", fieldValue{values: []string{"7.5"}}, ""},
		{"numeric out of range", CustomField{TypeID: FieldNumeric, Min: NumBound(lo), Max: NumBound(hi)}, "11", fieldValue{}, "outside the field's range [0, 10]"},
		{"numeric not a number", CustomField{TypeID: FieldNumeric}, "lots", fieldValue{}, `"lots" is not a number`},
		{"date", CustomField{TypeID: FieldDate}, "2026-11-29", fieldValue{values: []string{"2026-11-29"}}, ""},
		{"date from RFC 3339", CustomField{TypeID: FieldDate}, "2026-11-29T23:30:00+09:00", fieldValue{values: []string{"2026-11-29"}}, ""},
		{"date in its own offset, not UTC's", CustomField{TypeID: FieldDate}, "2026-11-28T08:00:00+09:00", fieldValue{values: []string{"2026-11-28"}}, ""},
		{"date bad", CustomField{TypeID: FieldDate}, "tomorrow", fieldValue{}, "is not a date"},
		{"numeric NaN", CustomField{TypeID: FieldNumeric, Min: NumBound(lo), Max: NumBound(hi)}, "NaN", fieldValue{}, `"NaN" is not a number`},
		{"numeric Inf", CustomField{TypeID: FieldNumeric}, "-Infinity", fieldValue{}, `is not a number`},
		{"numeric hex", CustomField{TypeID: FieldNumeric}, "0x1p4", fieldValue{}, `is not a number`},
		{"list by name", CustomField{TypeID: FieldList, Items: items}, "prod", fieldValue{values: []string{"11"}}, ""},
		{"list by name, case", CustomField{TypeID: FieldList, Items: items}, "STG", fieldValue{values: []string{"12"}}, ""},
		{"list by id", CustomField{TypeID: FieldList, Items: items}, "12", fieldValue{values: []string{"12"}}, ""},
		{"list unknown", CustomField{TypeID: FieldList, Name: "Environment", Items: items}, "dev", fieldValue{}, `"dev" is not an item of single list field "Environment"; valid items: "prod", "stg"`},
		{"multi", CustomField{TypeID: FieldMulti, Items: items}, "prod, stg,prod", fieldValue{values: []string{"11", "12"}}, ""},
		{"multi unknown", CustomField{TypeID: FieldMulti, Items: items}, "prod,dev", fieldValue{}, `"dev" is not an item`},
		{"multi item with a comma in its name", CustomField{TypeID: FieldMulti, Items: []Named{{ID: 21, Name: "Tokyo, Japan"}, {ID: 22, Name: "Osaka"}}}, "Tokyo, Japan", fieldValue{values: []string{"21"}}, ""},
		{"checkbox with other", CustomField{TypeID: FieldCheckbox, Items: items, AllowInput: true}, "prod\ndev\nqa", fieldValue{values: []string{"11"}, other: "dev, qa"}, ""},
		{"checkbox without other", CustomField{TypeID: FieldCheckbox, Items: items}, "dev", fieldValue{}, "valid items"},
		{"radio", CustomField{TypeID: FieldRadio, Items: items}, "stg", fieldValue{values: []string{"12"}}, ""},
		{"radio other", CustomField{TypeID: FieldRadio, Items: items, AllowInput: true}, "dev", fieldValue{other: "dev"}, ""},
		{"list other is not a thing", CustomField{TypeID: FieldList, Items: items, AllowInput: true}, "dev", fieldValue{}, "valid items"},
		{"empty sends nothing", CustomField{TypeID: FieldList, Items: items}, "  ", fieldValue{}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &field{CustomField: c.f, conf: "x"}
			got, err := f.convert(c.in)
			if c.error != "" {
				require.ErrorContains(t, err, c.error)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}
