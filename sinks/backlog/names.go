package backlog

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template/parse"
	"time"
)

// Backlog's built-in statuses, priorities and resolutions have the same ids
// in every space, whatever its language; only their names are localized.
// Statuses: get-status-list-of-project
// (https://developer.nulab.com/docs/backlog/api/2/get-status-list-of-project/);
// priorities: get-priority-list
// (https://developer.nulab.com/docs/backlog/api/2/get-priority-list/);
// resolutions: get-resolution-list
// (https://developer.nulab.com/docs/backlog/api/2/get-resolution-list/).
// A configured name that is not in the space's own list is looked up here,
// so the English defaults work in a Japanese space and the other way round.
var (
	builtinStatuses = map[string]int64{
		"open": 1, "未対応": 1,
		"in progress": 2, "処理中": 2,
		"resolved": 3, "処理済み": 3,
		"closed": 4, "完了": 4,
	}
	builtinPriorities = map[string]int64{
		"high": 2, "高": 2,
		"normal": 3, "中": 3,
		"low": 4, "低": 4,
	}
	builtinResolutions = map[string]int64{
		"fixed": 0, "対応済み": 0,
		"won't fix": 1, "wont fix": 1, "対応しない": 1,
		"invalid": 2, "無効": 2,
		"duplicate": 3, "duplication": 3, "重複": 3,
		"cannot reproduce": 4, "再現しない": 4,
	}
)

// Backlog's built-in "Closed" status id.
const statusClosed = 4

// nameTable resolves names of one kind (statuses, priorities, …) to ids:
// the space's own names first, then an id given as a number, then
// Backlog's built-in name of a fixed id in English or Japanese.
type nameTable struct {
	field   string
	ids     map[string]int64
	valid   []string
	builtin map[string]int64
	listed  map[int64]bool
}

func newNameTable(field string, list []Named, builtin map[string]int64) *nameTable {
	t := &nameTable{field: field, ids: map[string]int64{}, builtin: builtin, listed: map[int64]bool{}}
	for _, it := range list {
		t.ids[it.Name] = it.ID
		t.listed[it.ID] = true
		t.valid = append(t.valid, strconv.Quote(it.Name))
	}
	slices.Sort(t.valid)
	return t
}

func (t *nameTable) lookup(name string) (int64, bool) {
	name = strings.TrimSpace(name)
	if id, ok := t.ids[name]; ok {
		return id, true
	}
	if id, err := strconv.ParseInt(name, 10, 64); err == nil && t.listed[id] {
		return id, true
	}
	if id, ok := t.builtin[strings.ToLower(name)]; ok && t.listed[id] {
		return id, true
	}
	return 0, false
}

func (t *nameTable) errorFor(name string) error {
	return &ConfigError{fmt.Errorf("%s: %q does not exist in Backlog; valid names: %s", t.field, name, strings.Join(t.valid, ", "))}
}

func (t *nameTable) must(name string) (int64, error) {
	if id, ok := t.lookup(name); ok {
		return id, nil
	}
	return 0, t.errorFor(name)
}

// constantOutputs returns every constant text a template can render: the
// whole text when it has no action, else the text of each branch (if,
// else, with, range) that holds no action, trimmed. A template such as
// `{{ if eq .CommonLabels.severity "critical" }}High{{ else }}Normal{{ end }}`
// gives High and Normal, which can be checked against Backlog at start.
func constantOutputs(text string) []string {
	if !strings.Contains(text, "{{") {
		return []string{strings.TrimSpace(text)}
	}
	tr := parse.New("t")
	tr.Mode = parse.SkipFuncCheck
	trees := map[string]*parse.Tree{}
	if _, err := tr.Parse(text, "{{", "}}", trees); err != nil {
		return nil
	}
	var out []string
	add := func(s string) {
		if s = strings.TrimSpace(s); s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	// walk visits a list whose output is the whole rendered value (a
	// branch of an if/with/range that is alone in a list that is itself
	// the whole value): a constant list there is a value the template can
	// render. Text around a control node makes its branches fragments.
	var walk func(l *parse.ListNode, branch bool)
	walk = func(l *parse.ListNode, branch bool) {
		if l == nil {
			return
		}
		allText := true
		var sb strings.Builder
		var controls []parse.Node
		for _, n := range l.Nodes {
			switch n := n.(type) {
			case *parse.TextNode:
				sb.Write(n.Text)
				continue
			case *parse.ActionNode:
				// {{ "High" }} is text too.
				if s, ok := stringAction(n); ok {
					sb.WriteString(s)
					continue
				}
			}
			allText = false
			controls = append(controls, n)
		}
		if allText {
			if branch {
				add(sb.String())
			}
			return
		}
		if len(controls) != 1 || strings.TrimSpace(sb.String()) != "" {
			return // the value is built from parts: no branch is a whole value
		}
		switch n := controls[0].(type) {
		case *parse.ActionNode:
			// {{ or .CommonLabels.env "prod" }}: "prod" is a whole value.
			cmds := n.Pipe.Cmds
			if len(n.Pipe.Decl) == 0 && len(cmds) > 0 {
				c := cmds[len(cmds)-1]
				if id, ok := c.Args[0].(*parse.IdentifierNode); ok && id.Ident == "or" {
					for _, a := range c.Args[1:] {
						if sn, ok := a.(*parse.StringNode); ok {
							add(sn.Text)
						}
					}
				}
			}
		case *parse.IfNode:
			walk(n.List, true)
			walk(n.ElseList, true)
		case *parse.WithNode:
			walk(n.List, true)
			walk(n.ElseList, true)
		}
	}
	walk(tr.Root, false)
	return out
}

// stringAction reports whether an action only prints a string constant.
func stringAction(n *parse.ActionNode) (string, bool) {
	if len(n.Pipe.Decl) > 0 || len(n.Pipe.Cmds) != 1 || len(n.Pipe.Cmds[0].Args) != 1 {
		return "", false
	}
	sn, ok := n.Pipe.Cmds[0].Args[0].(*parse.StringNode)
	if !ok {
		return "", false
	}
	return sn.Text, true
}

// Custom field types, the typeId of get-custom-field-list
// (https://developer.nulab.com/docs/backlog/api/2/get-custom-field-list/).
const (
	FieldText     = 1
	FieldSentence = 2
	FieldNumeric  = 3
	FieldDate     = 4
	FieldList     = 5
	FieldMulti    = 6
	FieldCheckbox = 7
	FieldRadio    = 8
)

var fieldTypeNames = map[int]string{
	FieldText: "text", FieldSentence: "sentence", FieldNumeric: "numeric", FieldDate: "date",
	FieldList: "single list", FieldMulti: "multiple list", FieldCheckbox: "checkbox", FieldRadio: "radio",
}

// field is a configured custom field resolved against the project.
type field struct {
	CustomField
	conf string // the config key
	// loc is the space's time zone (get-space's timezone), which a date
	// field's bounds are days of; nil when alertfan does not know it.
	loc *time.Location
	// required is set when the configured issue type requires the field;
	// orElse is then the value sent when the template renders one Backlog
	// would refuse or none: the first constant the template can render
	// (its `or` default, a branch's text), checked at start.
	required bool
	orElse   fieldValue
}

// fieldValue is what one custom field sends: customField_{id} values
// (repeated for multiple list and checkbox) and the "other" text.
type fieldValue struct {
	values []string
	other  string
}

// empty reports a value that sends nothing.
func (v fieldValue) empty() bool { return len(v.values) == 0 && v.other == "" }

func (f *field) items() string {
	names := make([]string, 0, len(f.Items))
	for _, it := range f.Items {
		names = append(names, strconv.Quote(it.Name))
	}
	s := strings.Join(names, ", ")
	if f.allowsOther() {
		s += " (or any other text: the field has an \"other\" choice)"
	}
	return s
}

func (f *field) allowsOther() bool {
	return f.AllowInput && (f.TypeID == FieldCheckbox || f.TypeID == FieldRadio)
}

func (f *field) item(name string) (int64, bool) {
	name = strings.TrimSpace(name)
	for _, it := range f.Items {
		if it.Name == name {
			return it.ID, true
		}
	}
	for _, it := range f.Items {
		if strings.EqualFold(it.Name, name) {
			return it.ID, true
		}
	}
	if id, err := strconv.ParseInt(name, 10, 64); err == nil {
		for _, it := range f.Items {
			if it.ID == id {
				return id, true
			}
		}
	}
	return 0, false
}

// dateLayouts are the forms a rendered date may take; Backlog wants
// yyyy-MM-dd (add-issue).
var dateLayouts = []string{"2006-01-02", time.RFC3339Nano, "2006-01-02 15:04:05 MST", "2006-01-02 15:04:05", "2006/01/02"}

// convert turns a rendered value into what add-issue takes for the field
// (https://developer.nulab.com/docs/backlog/api/2/add-issue/): item ids for
// list, checkbox and radio fields (multiple list and checkbox values are
// separated by commas or newlines), the "other" text where the field has
// one, a number for numeric fields, yyyy-MM-dd for dates, one line of at
// most 255 characters for text. An empty value sends nothing.
func (f *field) convert(v string) (fieldValue, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return fieldValue{}, nil
	}
	kind := fieldTypeNames[f.TypeID]
	switch f.TypeID {
	case FieldText:
		s, _ := truncate(oneLine(v), maxTextField)
		return fieldValue{values: []string{s}}, nil
	case FieldSentence:
		s, _ := truncate(v, maxBody)
		return fieldValue{values: []string{s}}, nil
	case FieldNumeric:
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || !decimalNumber.MatchString(v) || math.IsNaN(n) || math.IsInf(n, 0) {
			return fieldValue{}, fmt.Errorf("custom_fields.%s: %q is not a number (numeric field %q takes a decimal)", f.conf, v, f.Name)
		}
		if (f.Min.Num != nil && n < *f.Min.Num) || (f.Max.Num != nil && n > *f.Max.Num) {
			return fieldValue{}, fmt.Errorf("custom_fields.%s: %v is outside the field's range [%s, %s]", f.conf, n, fmtBound(f.Min.Num), fmtBound(f.Max.Num))
		}
		return fieldValue{values: []string{strconv.FormatFloat(n, 'f', -1, 64)}}, nil
	case FieldDate:
		for _, l := range dateLayouts {
			if t, err := time.Parse(l, v); err == nil {
				// The day in the value's own offset: 2026-11-28T08:00:00+09:00
				// is the 28th in a Japanese space, not the 27th in UTC.
				day := t.Format(dayLayout)
				lo, hi := f.dayRange()
				if (lo != "" && day < lo) || (hi != "" && day > hi) {
					return fieldValue{}, fmt.Errorf("custom_fields.%s: %s is outside date field %q's range [%s, %s]", f.conf, day, f.Name, or(lo, "-"), or(hi, "-"))
				}
				return fieldValue{values: []string{day}}, nil
			}
		}
		return fieldValue{}, fmt.Errorf("custom_fields.%s: %q is not a date (want yyyy-MM-dd or RFC 3339; date field %q)", f.conf, v, f.Name)
	case FieldList, FieldRadio:
		if id, ok := f.item(v); ok {
			return fieldValue{values: []string{strconv.FormatInt(id, 10)}}, nil
		}
		if f.allowsOther() {
			s, _ := truncate(oneLine(v), maxTextField)
			return fieldValue{other: s}, nil
		}
		return fieldValue{}, fmt.Errorf("custom_fields.%s: %q is not an item of %s field %q; valid items: %s", f.conf, v, kind, f.Name, f.items())
	case FieldMulti, FieldCheckbox:
		var fv fieldValue
		var others []string
		// A whole value that names an item is that item, even with a comma
		// in its name ("Tokyo, Japan"); else items are separated by commas
		// or line breaks.
		parts := strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == '\n' })
		if _, ok := f.item(strings.TrimSpace(v)); ok {
			parts = []string{v}
		}
		for _, part := range parts {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			if id, ok := f.item(part); ok {
				s := strconv.FormatInt(id, 10)
				if !slices.Contains(fv.values, s) {
					fv.values = append(fv.values, s)
				}
				continue
			}
			if f.allowsOther() {
				others = append(others, part)
				continue
			}
			return fieldValue{}, fmt.Errorf("custom_fields.%s: %q is not an item of %s field %q; valid items: %s", f.conf, part, kind, f.Name, f.items())
		}
		if len(others) > 0 {
			fv.other, _ = truncate(strings.Join(others, ", "), maxTextField)
		}
		return fv, nil
	}
	return fieldValue{}, fmt.Errorf("custom_fields.%s: field %q has type %d, which alertfan does not know", f.conf, f.Name, f.TypeID)
}

const dayLayout = "2006-01-02"

// Offsets of the earliest and the latest time zones in use (UTC−12,
// UTC+14).
var (
	westmost = time.FixedZone("UTC-12", -12*3600)
	eastmost = time.FixedZone("UTC+14", 14*3600)
)

// dayRange is a date field's first and last allowed day (yyyy-MM-dd, ""
// for none). Backlog gives a bound as an instant, the first moment of the
// bounding day in the space's time zone ("2014-06-09T15:00:00Z" is
// 2014-06-10 in Asia/Tokyo), so it is read in that zone. When the zone is
// not known, the range is widened to what the bound could mean in any
// zone (the min's day at UTC−12, the max's at UTC+14): a day refused then
// is out of range wherever the space is, and a day Backlog might take is
// never refused.
func (f *field) dayRange() (lo, hi string) {
	day := func(b Bound, wide *time.Location) string {
		if b.Time == nil {
			return ""
		}
		switch {
		case b.dateOnly:
			return b.Time.Format(dayLayout)
		case f.loc != nil:
			return b.Time.In(f.loc).Format(dayLayout)
		default:
			return b.Time.In(wide).Format(dayLayout)
		}
	}
	return day(f.Min, westmost), day(f.Max, eastmost)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// decimalNumber is what a numeric field takes: Go's ParseFloat also reads
// NaN, Inf and hexadecimal floats, which Backlog does not.
var decimalNumber = regexp.MustCompile(`^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$`)

func fmtBound(b *float64) string {
	if b == nil {
		return "-"
	}
	return strconv.FormatFloat(*b, 'f', -1, 64)
}
