package backlog

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// nulabCustomFields is get-custom-field-list as Nulab's own client
// library tests it (nulab/backlog4j src/test/resources/json/custom_fields.json,
// trimmed): a date field's min, max and initialDate are date strings, a
// numeric field's min and max are numbers.
const nulabCustomFields = `[
 {"id":1,"typeId":1,"name":"Text","description":"","required":false,"applicableIssueTypes":[]},
 {"id":2,"typeId":3,"name":"Numeric","description":"","required":false,"applicableIssueTypes":[],
  "min":1.5,"max":100,"initialValue":10,"unit":"kg"},
 {"id":3,"typeId":3,"name":"Unbounded","description":"","required":false,"applicableIssueTypes":[],
  "min":null,"max":null,"initialValue":null,"unit":null},
 {"id":4,"typeId":4,"name":"Due","description":"","required":false,"applicableIssueTypes":[],
  "min":"2014-06-09T15:00:00Z","max":"2014-07-09T15:00:00Z","initialValueType":3,
  "initialDate":{"id":3,"shift":null,"date":"2014-06-11T15:00:00Z"}},
 {"id":5,"typeId":4,"name":"Open","description":"","required":false,"applicableIssueTypes":[],
  "initialValueType":1},
 {"id":6,"typeId":4,"name":"Odd","description":"","required":false,"applicableIssueTypes":[],
  "min":{"unexpected":true},"max":"not a date"}
]`

// TestCustomFieldListDecodes: a project with a bounded date field used to
// fail the whole list ("cannot unmarshal string into Go struct field
// CustomField.min"), so no issue was ever created, whatever the config.
func TestCustomFieldListDecodes(t *testing.T) {
	var cfs []CustomField
	require.NoError(t, json.Unmarshal([]byte(nulabCustomFields), &cfs))
	require.Len(t, cfs, 6)
	tm := func(s string) *time.Time {
		v, err := time.Parse(time.RFC3339, s)
		require.NoError(t, err)
		return &v
	}
	f := func(v float64) *float64 { return &v }
	cases := []struct {
		name     string
		got      CustomField
		min, max Bound
	}{
		{"text: no bounds", cfs[0], Bound{}, Bound{}},
		{"numeric: numbers", cfs[1], Bound{Num: f(1.5)}, Bound{Num: f(100)}},
		{"numeric: null", cfs[2], Bound{}, Bound{}},
		{"date: instants", cfs[3], Bound{Time: tm("2014-06-09T15:00:00Z")}, Bound{Time: tm("2014-07-09T15:00:00Z")}},
		{"date: absent", cfs[4], Bound{}, Bound{}},
		{"unknown shapes are no bound", cfs[5], Bound{}, Bound{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.min, c.got.Min)
			require.Equal(t, c.max, c.got.Max)
		})
	}
}

// TestDateFieldRange: a rendered date Backlog would refuse is an error of
// convert (the field is then left empty with a counted fallback, or the
// constant refused at start). Backlog gives the bounds as the instants the
// bounding days begin in the space's zone: 2014-06-09T15:00:00Z is
// 2014-06-10 in Tokyo.
func TestDateFieldRange(t *testing.T) {
	lo, hi := time.Date(2014, 6, 9, 15, 0, 0, 0, time.UTC), time.Date(2014, 7, 9, 15, 0, 0, 0, time.UTC)
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	require.NoError(t, err)
	la, err := time.LoadLocation("America/Los_Angeles")
	require.NoError(t, err)
	bounded := CustomField{TypeID: FieldDate, Name: "Due", Min: TimeBound(lo), Max: TimeBound(hi)}
	cases := []struct {
		name  string
		loc   *time.Location
		f     CustomField
		in    string
		error string
	}{
		{"tokyo: first day", tokyo, bounded, "2014-06-10", ""},
		{"tokyo: the day before", tokyo, bounded, "2014-06-09", `2014-06-09 is outside date field "Due"'s range [2014-06-10, 2014-07-10]`},
		{"tokyo: last day", tokyo, bounded, "2014-07-10", ""},
		{"tokyo: the day after", tokyo, bounded, "2014-07-11", "outside"},
		{"tokyo: RFC 3339 in its own offset", tokyo, bounded, "2014-06-10T08:00:00+09:00", ""},
		{"los angeles: the same instants are other days", la, bounded, "2014-06-09", ""},
		{"los angeles: the day before", la, bounded, "2014-06-08", "outside"},
		{"zone unknown: a day that is in range somewhere is sent", nil, bounded, "2014-06-09", ""},
		{"zone unknown: last possible day", nil, bounded, "2014-07-10", ""},
		{"zone unknown: out of range everywhere", nil, bounded, "2014-06-08", "[2014-06-09, 2014-07-10]"},
		{"zone unknown: after the range everywhere", nil, bounded, "2014-07-11", "outside"},
		{"min only", tokyo, CustomField{TypeID: FieldDate, Name: "Due", Min: TimeBound(lo)}, "2099-01-01", ""},
		{"max only", tokyo, CustomField{TypeID: FieldDate, Name: "Due", Max: TimeBound(hi)}, "2014-07-11", "[-, 2014-07-10]"},
		{"a day bound is that day", nil, CustomField{TypeID: FieldDate, Name: "Due", Min: Bound{Time: &lo, dateOnly: true}}, "2014-06-08", "[2014-06-09, -]"},
		{"no bounds", nil, CustomField{TypeID: FieldDate}, "1999-01-01", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &field{CustomField: c.f, conf: "due", loc: c.loc}
			got, err := f.convert(c.in)
			if c.error != "" {
				require.ErrorContains(t, err, c.error)
				return
			}
			require.NoError(t, err)
			require.Len(t, got.values, 1)
		})
	}
}
