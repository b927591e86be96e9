package receiver

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/alertfan/alertfan/receiver/config"
	"github.com/alertfan/alertfan/receiver/intake"
	"github.com/alertfan/alertfan/receiver/queue"
	"github.com/alertfan/alertfan/sinks"
)

// pdError answers the way PagerDuty's Events API does, so that senders
// written against PagerDuty show the reason they are used to.
func pdError(w http.ResponseWriter, code int, status, message string, err error) {
	body := map[string]any{"status": status, "message": message}
	var errs []string
	var fes intake.Errors
	var fe *intake.FieldError
	switch {
	case errors.As(err, &fes):
		for _, e := range fes {
			errs = append(errs, e.Message)
		}
	case errors.As(err, &fe):
		errs = append(errs, fe.Error())
	}
	if errs != nil {
		body["errors"] = errs
	}
	writeJSON(w, code, body)
}

// pdIntake is the shared front of the two PagerDuty endpoints: auth by
// intake token or known routing key, the intake rate limit, size limit.
func (s *server) pdIntake(w http.ResponseWriter, r *http.Request) (*runtime, []byte, bool) {
	const input = intake.InputPagerDuty
	rt := s.rt.Load()
	if rt.pdLimiter != nil && !rt.pdLimiter.Allow() {
		s.refuse(r, input, "rate_limited", "over intake.events_per_second")
		w.Header().Set("Retry-After", "1")
		pdError(w, http.StatusTooManyRequests, "throttle event", "Requests for this service are arriving too quickly. Please retry later.", nil)
		return nil, nil, false
	}
	body, err := readBody(w, r, rt.cfg.Intake.MaxBodyBytes)
	if errors.Is(err, errOverloaded) {
		s.overloaded(w, r, input)
		return nil, nil, false
	}
	if errors.Is(err, errTooLarge) {
		s.refuse(r, input, "too_large", "body larger than intake.max_body_bytes")
		pdError(w, http.StatusRequestEntityTooLarge, "invalid event", "Request body is larger than intake.max_body_bytes", nil)
		return nil, nil, false
	}
	if err != nil {
		s.refuse(r, input, "invalid", "could not read request body: "+err.Error())
		pdError(w, http.StatusBadRequest, "invalid event", "Could not read request body", nil)
		return nil, nil, false
	}
	if !utf8.Valid(body) {
		fe := &intake.FieldError{Field: utf8Field(body), Message: "not valid UTF-8"}
		s.refuse(r, input, "invalid", fe.Error())
		pdError(w, http.StatusBadRequest, "invalid event", "Event object is invalid", fe)
		return nil, nil, false
	}
	return rt, body, true
}

// routingKeyName authorizes a PagerDuty sender: a known routing key is a
// credential of its own (Grafana and scripts cannot send a header); else
// the intake token is required when one is set.
func (s *server) routingKeyName(w http.ResponseWriter, r *http.Request, rt *runtime, key string) (string, bool) {
	name, known := rt.pdKeys[sha256.Sum256([]byte(key))]
	if known {
		return name, true
	}
	if rt.cfg.Intake.PagerDuty.RequireKnownKey {
		s.refuse(r, intake.InputPagerDuty, "invalid", "routing key not in intake.pagerduty.routing_keys (require_known_key)")
		pdError(w, http.StatusBadRequest, "invalid event", "Event object is invalid", intake.Errors{{Field: "routing_key", Message: "Invalid routing key"}})
		return "", false
	}
	if !rt.authorized(r, "", s.webBasicAuth.Load()) {
		s.refuse(r, intake.InputPagerDuty, "unauthorized", "routing key not in intake.pagerduty.routing_keys and missing or wrong intake token")
		w.Header().Set("WWW-Authenticate", `Bearer realm="alertfan"`)
		pdError(w, http.StatusUnauthorized, "unauthorized", "Missing or wrong intake token, and the routing key is not one of intake.pagerduty.routing_keys", nil)
		return "", false
	}
	return "", true
}

// decodePD is the front both PagerDuty endpoints share: intake checks,
// decoding with PagerDuty-shaped 400s, and the routing key's name (which
// also authorizes the sender).
func decodePD[T any](s *server, w http.ResponseWriter, r *http.Request, start time.Time,
	decode func([]byte, time.Time) (T, error), routingKey func(T) string) (rt *runtime, res T, name string, ok bool) {
	rt, body, ok := s.pdIntake(w, r)
	if !ok {
		return nil, res, "", false
	}
	res, err := decode(body, start.UTC())
	if err != nil {
		s.refuse(r, intake.InputPagerDuty, "invalid", err.Error())
		pdError(w, http.StatusBadRequest, "invalid event", "Event object is invalid", err)
		return nil, res, "", false
	}
	if err := checkLimits(pdLimits(rt.cfg.Intake), pdAlerts(res), func(int) string { return "payload" }); err != nil {
		s.refuse(r, intake.InputPagerDuty, "over_limit", err.Error())
		pdError(w, http.StatusBadRequest, "invalid event", "Event object is over an intake limit", withFields(err))
		return nil, res, "", false
	}
	name, ok = s.routingKeyName(w, r, rt, routingKey(res))
	return rt, res, name, ok
}

// pdLimits are the intake limits for a PagerDuty event: an event that
// PagerDuty would take is taken. Alertmanager's pagerduty_configs put every
// firing alert of a group in custom_details (a 100-alert group is ~100 KB
// in one detail) and never retry a 400, so intake's name and value limits
// for webhooks would lose exactly the big outages' pages; here they rise to
// PagerDuty's event size (intake.PDMaxEventSize), which DecodePagerDuty
// enforces.
func pdLimits(c config.IntakeConfig) config.IntakeConfig {
	c.MaxNameLength = max(c.MaxNameLength, intake.PDMaxEventSize)
	c.MaxLabelValueLength = max(c.MaxLabelValueLength, intake.PDMaxEventSize)
	c.MaxAnnotationValueLength = max(c.MaxAnnotationValueLength, intake.PDMaxEventSize)
	return c
}

// withFields puts each field's name in its message: PagerDuty-shaped
// errors are a list of messages.
func withFields(err error) error {
	var fes intake.Errors
	var fe *intake.FieldError
	switch {
	case errors.As(err, &fes):
		out := make(intake.Errors, len(fes))
		for i, e := range fes {
			out[i] = &intake.FieldError{Field: e.Field, Message: e.Error()}
		}
		return out
	case errors.As(err, &fe):
		return fe
	}
	return err
}

// pdAlerts is the alert a decoded PagerDuty event carries.
func pdAlerts(res any) []sinks.Alert {
	switch v := res.(type) {
	case *intake.PDResult:
		return []sinks.Alert{v.Alert}
	case *intake.PDChange:
		return []sinks.Alert{v.Alert}
	}
	return nil
}

// pdIdentity is the event's identity (intake's), or the legacy one of an
// alert opened before the upgrade and still open under it
// (intake.LegacyPDIdentity).
func (s *server) pdIdentity(ctx context.Context, res *intake.PDResult) (string, error) {
	id := res.Alert.Identity
	legacy := intake.LegacyPDIdentity(res.RoutingKey, res.DedupKey)
	if legacy == id {
		return id, nil
	}
	if st, err := s.store.AlertStatus(ctx, id); err != nil || st != "" {
		return id, err
	}
	st, err := s.store.AlertStatus(ctx, legacy)
	if err != nil {
		return id, err
	}
	if st != "" && st != queue.PhaseResolved {
		return legacy, nil
	}
	return id, nil
}

func (s *server) handlePagerDuty(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	const input = intake.InputPagerDuty
	rt, res, name, ok := decodePD(s, w, r, start, intake.DecodePagerDuty, func(p *intake.PDResult) string { return p.RoutingKey })
	if !ok {
		return
	}
	s.stripReserved(r, input, []sinks.Alert{res.Alert})
	a := res.Alert
	if name != "" {
		a.Labels["routing_key_name"] = name
	}
	// The store reads before the commit share its deadline: a database
	// that hangs gets the sender a 503 within the commit timeout, not a
	// request held until the connection gives up.
	cctx, cancel := s.commitContext(r)
	defer cancel()
	if id, err := s.pdIdentity(cctx, res); err != nil {
		s.storeUnavailable(w, input, err)
		return
	} else {
		a.Identity = id
	}
	if !res.HasPayload {
		// An acknowledge or resolve without payload is rendered with the
		// trigger's labels; the targets that hold the trigger open get it
		// whatever it routes to (sticky destinations, in the queue).
		if b, found, err := s.store.RecallLabels(cctx, a.Identity); err != nil {
			s.storeUnavailable(w, input, err)
			return
		} else if found {
			var ls map[string]string
			if json.Unmarshal(b, &ls) == nil && len(ls) > 0 {
				a.Labels = ls
			}
		}
	}
	s.logDropped(r.Context(), rt, input, []sinks.Alert{a}, "")
	src := sinks.Source{Input: input, Receiver: name}
	if err := s.accept(cctx, src, []sinks.Alert{a}, ""); err != nil {
		s.storeUnavailable(w, input, err)
		return
	}
	s.accepted(r, input, start)
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "success", "message": "Event processed", "dedup_key": res.DedupKey})
}

func (s *server) handlePagerDutyChange(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	const input = intake.InputPagerDuty
	_, res, name, ok := decodePD(s, w, r, start, intake.DecodePagerDutyChange, func(p *intake.PDChange) string { return p.RoutingKey })
	if !ok {
		return
	}
	s.stripReserved(r, input, []sinks.Alert{res.Alert})
	if name != "" {
		res.Alert.Labels["routing_key_name"] = name
	}
	cctx, cancel := s.commitContext(r)
	defer cancel()
	if err := s.accept(cctx, sinks.Source{Input: input, Receiver: name}, []sinks.Alert{res.Alert}, ""); err != nil {
		s.storeUnavailable(w, input, err)
		return
	}
	s.accepted(r, input, start)
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "success", "message": "Change event processed"})
}

func (s *server) handleMackerel(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	const input = intake.InputMackerel
	rt, body, ok := s.intakeRequest(w, r, input, r.PathValue("token"))
	if !ok {
		return
	}
	res, err := intake.DecodeMackerel(body, rt.cfg.Intake.Mackerel.RouteOtherEvents, start.UTC())
	if err != nil {
		s.refuse(r, input, "invalid", err.Error())
		writeError(w, http.StatusBadRequest, "invalid Mackerel webhook", err)
		return
	}
	if res.Alert != nil {
		if err := checkLimits(rt.cfg.Intake, []sinks.Alert{*res.Alert}, func(int) string { return "alert" }); err != nil {
			s.refuse(r, input, "over_limit", err.Error())
			writeError(w, http.StatusBadRequest, "over an intake limit", err)
			return
		}
	}
	if res.Alert == nil {
		s.metrics.notifications.WithLabelValues(input, "ignored").Inc()
		writeJSON(w, http.StatusOK, map[string]any{"status": "success", "ignored": true, "event": res.Event})
		return
	}
	s.stripReserved(r, input, []sinks.Alert{*res.Alert})
	s.logDropped(r.Context(), rt, input, []sinks.Alert{*res.Alert}, "")
	cctx, cancel := s.commitContext(r)
	defer cancel()
	if err := s.accept(cctx, sinks.Source{Input: input}, []sinks.Alert{*res.Alert}, ""); err != nil {
		s.storeUnavailable(w, input, err)
		return
	}
	s.accepted(r, input, start)
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "alerts": 1})
}
