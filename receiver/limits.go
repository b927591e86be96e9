package receiver

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/alertfan/alertfan/receiver/config"
	"github.com/alertfan/alertfan/receiver/intake"
	"github.com/alertfan/alertfan/sinks"
)

// bounded keeps the bodies being handled within
// intake.max_inflight_body_bytes: decoding costs a multiple of the body, so
// this bounds intake memory. Bytes are reserved as they are read, not as a
// request announces them, so a sender that opens connections and sends
// slowly (or announces 4 MiB and sends one byte) holds only what it sent —
// on the PagerDuty endpoints the credential is inside the body and cannot
// be checked first. Beyond the bound the sender is told to retry: 503, or
// 429 with PagerDuty's body for the Events v2 endpoints.
func (s *server) bounded(input string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.rt.Load().cfg.Intake
		rr := &reservingReader{r: r.Body, s: s, max: c.MaxInflightBodyBytes}
		r.Body = rr
		defer func() { s.inflight.Add(-rr.n) }()
		h(w, r)
	}
}

// overloaded answers a request whose body did not fit the in-flight bound.
func (s *server) overloaded(w http.ResponseWriter, r *http.Request, input string) {
	s.refuse(r, input, "overloaded", "bodies in flight over intake.max_inflight_body_bytes")
	w.Header().Set("Retry-After", "1")
	if input == intake.InputPagerDuty {
		pdError(w, http.StatusTooManyRequests, "throttle event", "Requests for this service are arriving too quickly. Please retry later.", nil)
		return
	}
	writeError(w, http.StatusServiceUnavailable, "too many requests in flight (intake.max_inflight_body_bytes); retry later", nil)
}

// errOverloaded is a body read past the in-flight bound.
var errOverloaded = errors.New("bodies in flight over intake.max_inflight_body_bytes")

// reservingReader reserves in-flight bytes as the body is read.
type reservingReader struct {
	r   io.ReadCloser
	s   *server
	max int64
	n   int64 // reserved, released by bounded when the request ends
}

func (rr *reservingReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	if n > 0 {
		if rr.s.inflight.Add(int64(n)) > rr.max {
			rr.s.inflight.Add(-int64(n))
			return 0, errOverloaded
		}
		rr.n += int64(n)
	}
	return n, err
}

func (rr *reservingReader) Close() error { return rr.r.Close() }

// cutAnnotations cuts, in place, every annotation value of alerts longer
// than intake.max_annotation_value_length to the limit, ending in "…"
// (3 bytes) within it, and returns how many it cut. Used for Alertmanager
// messages: Alertmanager never retries a 400 and resends a group whole, so
// refusing a message for one alert's long annotation (a description that
// templates a large $value, a runbook pasted in) would lose every page of
// its group for good. Annotations are content only — no identity, no
// routing — so a cut one is the alert as it was, shorter.
func cutAnnotations(c config.IntakeConfig, alerts []sinks.Alert) int {
	n := 0
	for i := range alerts {
		for k, v := range alerts[i].Annotations {
			if len(v) > c.MaxAnnotationValueLength && c.MaxAnnotationValueLength > len("…") {
				alerts[i].Annotations[k] = sinks.CutBytes(v, c.MaxAnnotationValueLength-len("…")) + "…"
				n++
			}
		}
	}
	return n
}

// checkLimits enforces intake's per-request limits on decoded alerts;
// field(i) names alert i in the sender's terms. The error names the field
// and the limit.
func checkLimits(c config.IntakeConfig, alerts []sinks.Alert, field func(i int) string) error {
	if len(alerts) > c.MaxAlertsPerNotification {
		return &intake.FieldError{Field: "alerts", Message: fmt.Sprintf("%d alerts, over intake.max_alerts_per_notification (%d)", len(alerts), c.MaxAlertsPerNotification)}
	}
	var errs intake.Errors
	for i, a := range alerts {
		f := field(i)
		if len(a.Labels) > c.MaxLabelsPerAlert {
			errs = append(errs, &intake.FieldError{Field: f + ".labels", Message: fmt.Sprintf("%d labels, over intake.max_labels_per_alert (%d)", len(a.Labels), c.MaxLabelsPerAlert)})
			continue
		}
		errs = append(errs, checkPairs(c, f+".labels", a.Labels, "label", "max_label_value_length", c.MaxLabelValueLength)...)
		errs = append(errs, checkPairs(c, f+".annotations", a.Annotations, "annotation", "max_annotation_value_length", c.MaxAnnotationValueLength)...)
		if len(errs) >= 10 {
			break
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func checkPairs(c config.IntakeConfig, field string, m map[string]string, what, valueLimit string, maxValue int) intake.Errors {
	var errs intake.Errors
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if len(k) > c.MaxNameLength {
			errs = append(errs, &intake.FieldError{Field: field, Message: fmt.Sprintf("%s name %s is %d bytes, over intake.max_name_length (%d)", what, strconv.Quote(sinks.Abbreviate(k, 32)), len(k), c.MaxNameLength)})
			continue
		}
		if len(m[k]) > maxValue {
			errs = append(errs, &intake.FieldError{Field: field + "." + k, Message: fmt.Sprintf("%s value is %d bytes, over intake.%s (%d)", what, len(m[k]), valueLimit, maxValue)})
		}
	}
	return errs
}

// utf8Field finds the JSON field whose string holds invalid UTF-8 (a
// value's path like alerts[0].labels.instance, or an object's path plus
// "(name)" when a key is invalid); "" when none is found.
func utf8Field(body []byte) string {
	found := ""
	intake.WalkJSON(body, func(st intake.JSONStep) bool {
		if utf8.Valid(st.Raw) {
			return true
		}
		switch {
		case st.Key:
			found = strconv.Quote(st.Token.(string)) + " (name)"
			if st.Parent != "" {
				found = st.Parent + "." + found
			}
		case st.Path != "":
			found = st.Path
		default:
			found = "body"
		}
		return false
	})
	return found
}
