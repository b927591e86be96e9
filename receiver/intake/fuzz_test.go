package intake

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"
)

func errorsAs(err error, target any) bool { return errors.As(err, target) }

func seed(f *testing.F, names ...string) {
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"alerts":[{"labels":{"a":"b"}}]}`))
}

// Each decoder either returns a complete, valid result or an error that
// names what is wrong; never a panic, never half a result.

func FuzzDecodeAlertmanager(f *testing.F) {
	seed(f, "alertmanager_firing.json")
	f.Fuzz(func(t *testing.T, body []byte) {
		src, alerts, err := DecodeAlertmanager(body)
		if err != nil {
			if alerts != nil || src.Input != "" {
				t.Fatalf("partial result with error %v", err)
			}
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if len(alerts) == 0 {
			t.Fatal("success without alerts")
		}
		for _, a := range alerts {
			if len(a.Labels) == 0 || a.Identity == "" || (a.Status != "firing" && a.Status != "resolved") || a.StartsAt.IsZero() {
				t.Fatalf("invalid alert accepted: %+v", a)
			}
			for k, v := range a.Labels {
				if k == "" || !utf8.ValidString(k) || !utf8.ValidString(v) {
					t.Fatalf("invalid label accepted: %q=%q", k, v)
				}
			}
		}
	})
}

func FuzzDecodePagerDuty(f *testing.F) {
	seed(f, "pagerduty_trigger.json", "pagerduty_resolve.json")
	f.Add([]byte(`{"routing_key":"R0UT1NGKEY0000000000000000000001","event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info","timestamp":"2015-07-17T08:42:58.315+0000","custom_details":"text"},"links":[{"href":"x"}],"images":[{"src":"https://x"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		res, err := DecodePagerDuty(body, now)
		if err != nil {
			if res != nil {
				t.Fatalf("partial result with error %v", err)
			}
			return
		}
		if len(res.RoutingKey) != 32 || res.DedupKey == "" || len(res.DedupKey) > 255 || res.Alert.Identity == "" || len(res.Alert.Labels) == 0 {
			t.Fatalf("invalid event accepted: %+v", res)
		}
		// What is kept for relaying must encode again as it was taken.
		if p := res.Alert.PagerDuty; p != nil {
			if len(p.CustomDetails) > 0 && !json.Valid(p.CustomDetails) {
				t.Fatalf("invalid custom_details kept: %q", p.CustomDetails)
			}
			if _, err := json.Marshal(res.Alert); err != nil {
				t.Fatalf("kept event does not encode: %v", err)
			}
		}
		if _, err := DecodePagerDutyChange(body, now); err != nil && err.Error() == "" {
			t.Fatal("empty error")
		}
	})
}

func FuzzDecodeMackerel(f *testing.F) {
	seed(f, "mackerel_alert.json", "mackerel_ok.json", "mackerel_host_status.json",
		"mackerel/service.json", "mackerel/query.json", "mackerel/check.json", "mackerel/alertGroup.json")
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, route := range []bool{false, true} {
			res, err := DecodeMackerel(body, route, now)
			if err != nil {
				if res != nil {
					t.Fatalf("partial result with error %v", err)
				}
				continue
			}
			if res.Event == "" {
				t.Fatal("success without event")
			}
			if res.Alert != nil && (res.Alert.Identity == "" || len(res.Alert.Labels) == 0) {
				t.Fatalf("invalid alert accepted: %+v", res.Alert)
			}
			if res.Event == "alert" && res.Alert == nil {
				t.Fatal("alert event without alert")
			}
		}
	})
}
