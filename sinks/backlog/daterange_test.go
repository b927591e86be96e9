package backlog_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// A date custom field with a min/max range, as Backlog returns it (the
// bounds as strings, the instants the bounding days begin in the space's
// zone). It used to break the decoding of the whole custom field list, so
// every delivery failed, even with a config that does not use the field.
// A rendered date outside the range is left empty with a counted fallback
// (Backlog would refuse the create); a constant one is refused at start.
func TestDateFieldWithRange(t *testing.T) {
	cases := []struct {
		name     string
		timezone string
		extra    string
		due      string
		// startErr is the error at start ("" none); want the Due value
		// sent ("" none, with a fallback counted).
		startErr, want string
	}{
		{"an unused bounded field does not stop deliveries", "Asia/Tokyo", "", "", "", ""},
		{"rendered, in range", "Asia/Tokyo", "custom_fields:\n  Due: '{{ .CommonLabels.due }}'\n", "2026-12-01", "", "2026-12-01"},
		{"rendered, first day in Tokyo", "Asia/Tokyo", "custom_fields:\n  Due: '{{ .CommonLabels.due }}'\n", "2026-11-01", "", "2026-11-01"},
		{"rendered, before the range: fallback", "Asia/Tokyo", "custom_fields:\n  Due: '{{ .CommonLabels.due }}'\n", "2026-10-31", "", ""},
		{"rendered, after the range: fallback", "Asia/Tokyo", "custom_fields:\n  Due: '{{ .CommonLabels.due }}'\n", "2027-01-01", "", ""},
		{"rendered, last day in Los Angeles", "America/Los_Angeles", "custom_fields:\n  Due: '{{ .CommonLabels.due }}'\n", "2026-12-31", "", "2026-12-31"},
		{"unknown zone: in range somewhere is sent", "Mars/Olympus_Mons", "custom_fields:\n  Due: '{{ .CommonLabels.due }}'\n", "2026-11-01", "", "2026-11-01"},
		{"constant out of range: refused at start", "Asia/Tokyo", "custom_fields:\n  Due: '2026-10-01'\n", "", `custom_fields.Due: 2026-10-01 is outside date field "Due"'s range [2026-11-01, 2026-12-31]`, ""},
		{"constant in range", "Asia/Tokyo", "custom_fields:\n  Due: '2026-11-15'\n", "", "", "2026-11-15"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake := sinkstest.NewBacklog(apiKey)
			defer fake.Close()
			fake.Timezone = c.timezone
			fake.CustomFields = append(fake.CustomFields, sinkstest.BacklogCustomField{
				ID: 3104, TypeID: sinkstest.BacklogFieldDate, Name: "Due", MinDate: "2026-11-01", MaxDate: "2026-12-31"})
			h, err := newHarness(t, fake, c.extra)
			if c.startErr != "" {
				require.ErrorContains(t, err, c.startErr)
				return
			}
			require.NoError(t, err)
			notif := sample("firing")
			if c.due != "" {
				notif.Alerts[0].Labels["due"] = c.due
			}
			require.NoError(t, h.n.Deliver(context.Background(), notif))
			is := fake.Issues()
			require.Len(t, is, 1)
			if c.want == "" {
				require.NotContains(t, is[0].Custom, "customField_3104")
				if c.due != "" {
					require.Equal(t, 1.0, h.fallbacks("custom_fields.Due"))
				}
				return
			}
			require.Equal(t, []string{c.want}, is[0].Custom["customField_3104"])
			require.Zero(t, h.fallbacks("custom_fields.Due"))
		})
	}
}
