package receiver

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/alertfan/alertfan/receiver/intake"
	"github.com/alertfan/alertfan/receiver/queue"
	"github.com/alertfan/alertfan/receiver/ui"
	"github.com/alertfan/alertfan/sinks"
)

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	// The control endpoints refuse a browser's cross-site request
	// (Sec-Fetch-Site / Origin, Go's CrossOriginProtection): a page an
	// operator visits while their browser holds alertfan's basic-auth
	// credentials cannot retry, drop or reload. Clients that send neither
	// header (amtool-like CLIs, curl, alertfan queue) are not affected.
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.logger.Warn("Refused a cross-origin request to a control endpoint", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"), "route", r.Pattern)
		writeError(w, http.StatusForbidden, "cross-origin request refused: control endpoints accept requests from alertfan's own page or from clients that are not browsers", nil)
	}))
	guard := func(h http.HandlerFunc) http.Handler { return csrf.Handler(h) }
	// Intake paths refuse them too: senders (Alertmanager, PagerDuty
	// clients, Mackerel, Grafana) are servers and send neither header, and
	// a page must not page on-call, or resolve an incident, through a
	// browser that holds the web layer's credentials or sits inside the
	// network (a text/plain form needs no CORS preflight).
	intakeCSRF := http.NewCrossOriginProtection()
	intakeCSRF.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.logger.Warn("Refused a cross-origin request to an intake path", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"), "route", r.Pattern)
		writeError(w, http.StatusForbidden, "cross-origin request refused: intake paths accept requests from senders that are not browsers", nil)
	}))
	in := func(input string, h http.HandlerFunc) http.Handler { return intakeCSRF.Handler(s.bounded(input, h)) }
	mux.Handle("POST /webhook", in(intake.InputAlertmanager, s.handleWebhook))
	mux.Handle("POST /webhook/{receiver}", in(intake.InputAlertmanager, s.handleWebhook))
	mux.Handle("POST /v2/enqueue", in(intake.InputPagerDuty, s.handlePagerDuty))
	mux.Handle("POST /v2/change/enqueue", in(intake.InputPagerDuty, s.handlePagerDutyChange))
	mux.Handle("POST /mackerel", in(intake.InputMackerel, s.handleMackerel))
	mux.Handle("POST /mackerel/{token}", in(intake.InputMackerel, s.handleMackerel))
	mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "alertfan is Healthy.\n") //nolint:errcheck
	})
	mux.HandleFunc("GET /-/ready", s.handleReady)
	mux.Handle("POST /-/reload", guard(s.handleReload))
	mux.Handle("PUT /-/reload", guard(s.handleReload))
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(s.reg, promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg})))
	mux.HandleFunc("GET /api/v1/dead-letters", s.handleDeadList)
	mux.Handle("POST /api/v1/dead-letters/retry", guard(s.handleDeadRetry))
	mux.Handle("POST /api/v1/dead-letters/{id}/retry", guard(s.handleDeadRetry))
	mux.Handle("DELETE /api/v1/dead-letters/{id}", guard(s.handleDeadDrop))
	mux.HandleFunc("GET /api/v1/dead-letters/{id}", s.handleDeadShow)
	mux.HandleFunc("GET /api/v1/queue", s.handleQueueList)
	mux.HandleFunc("GET /api/v1/alerts", s.handleAlertList)
	mux.HandleFunc("GET /api/v1/alerts/{identity...}", s.handleAlertShow)
	mux.HandleFunc("GET /api/v1/status/config", s.handleConfig)
	mux.HandleFunc("GET /api/v1/routes", s.handleRoutes)
	mux.HandleFunc("GET /api/v1/ratelimits", s.handleRateLimits)
	mux.Handle("POST /api/v1/preview", guard(s.handlePreview))
	for pattern, h := range s.opts.Handlers {
		mux.Handle(pattern, h)
	}
	// The status page (receiver/ui): the page at / and its assets.
	page := ui.Handler()
	mux.Handle("GET /{$}", page)
	mux.Handle("GET /static/", page)
	return mux
}

// errorBody is every intake error answer: a message and, for bad input,
// each field that is wrong.
type errorBody struct {
	Status string               `json:"status"`
	Error  string               `json:"error"`
	Errors []*intake.FieldError `json:"errors,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v) //nolint:errcheck
}

func writeError(w http.ResponseWriter, code int, msg string, err error) {
	body := errorBody{Status: "error", Error: msg}
	var fe *intake.FieldError
	var fes intake.Errors
	switch {
	case errors.As(err, &fes):
		body.Errors = fes
		body.Error = msg + ": " + fes.Error()
	case errors.As(err, &fe):
		body.Errors = []*intake.FieldError{fe}
		body.Error = msg + ": " + fe.Error()
	}
	writeJSON(w, code, body)
}

// IntakeTokenHeader carries the intake token when the Authorization header
// is taken by the web layer's basic auth (Alertmanager:
// http_config.http_headers).
const IntakeTokenHeader = "X-Alertfan-Token"

// authorized checks the intake token on an intake path. The token may come
// as a path segment (Mackerel), as the X-Alertfan-Token header, as a bearer
// token, or as the basic-auth password when the web layer does not use
// basic auth itself (then the password is the web user's, checked by
// exporter-toolkit, and not a carrier of the token). Digests are compared
// in constant time so neither content nor length leaks through timing.
func (rt *runtime) authorized(r *http.Request, pathToken string, webBasicAuth bool) bool {
	if !rt.hasToken {
		return true
	}
	var cand string
	switch {
	case pathToken != "":
		cand = pathToken
	case r.Header.Get(IntakeTokenHeader) != "":
		cand = r.Header.Get(IntakeTokenHeader)
	case bearer(r) != "":
		cand = bearer(r)
	case !webBasicAuth:
		if _, p, ok := r.BasicAuth(); ok {
			cand = p
		}
	}
	if cand == "" {
		return false
	}
	// Every token is compared, whichever matches, so the time taken says
	// nothing about which one or how much of it matched.
	sum := sha256.Sum256([]byte(cand))
	ok := 0
	for _, ts := range rt.tokenSums {
		ok |= subtle.ConstantTimeCompare(sum[:], ts[:])
	}
	return ok == 1
}

// bearer is the token of an "Authorization: Bearer …" header; the scheme
// is case-insensitive (RFC 7235, section 2.1).
func bearer(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// readBody reads at most limit bytes; more is errTooLarge.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, errTooLarge
	}
	return b, err
}

var errTooLarge = errors.New("body too large")

// intakeRequest is what every input handler has in common: auth, size
// limit, decode.
func (s *server) intakeRequest(w http.ResponseWriter, r *http.Request, input, pathToken string) (*runtime, []byte, bool) {
	rt := s.rt.Load()
	if !rt.authorized(r, pathToken, s.webBasicAuth.Load()) {
		s.refuse(r, input, "unauthorized", "missing or wrong intake token")
		w.Header().Set("WWW-Authenticate", `Bearer realm="alertfan"`)
		writeError(w, http.StatusUnauthorized, "unauthorized: missing or wrong intake token", nil)
		return nil, nil, false
	}
	body, err := readBody(w, r, rt.cfg.Intake.MaxBodyBytes)
	if errors.Is(err, errOverloaded) {
		s.overloaded(w, r, input)
		return nil, nil, false
	}
	if errors.Is(err, errTooLarge) {
		s.refuse(r, input, "too_large", "body larger than intake.max_body_bytes")
		writeError(w, http.StatusRequestEntityTooLarge, "request body is larger than intake.max_body_bytes", nil)
		return nil, nil, false
	}
	if err != nil {
		s.refuse(r, input, "invalid", "could not read request body: "+err.Error())
		writeError(w, http.StatusBadRequest, "could not read request body", nil)
		return nil, nil, false
	}
	if !utf8.Valid(body) {
		fe := &intake.FieldError{Field: utf8Field(body), Message: "not valid UTF-8"}
		s.refuse(r, input, "invalid", fe.Error())
		writeError(w, http.StatusBadRequest, "invalid request body", fe)
		return nil, nil, false
	}
	return rt, body, true
}

func (s *server) handleWebhook(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	const input = intake.InputAlertmanager
	rt, body, ok := s.intakeRequest(w, r, input, "")
	if !ok {
		return
	}
	src, alerts, err := intake.DecodeAlertmanager(body)
	if err != nil {
		s.refuse(r, input, "invalid", err.Error())
		writeError(w, http.StatusBadRequest, "invalid Alertmanager webhook", err)
		return
	}
	if limit := rt.cfg.Intake.MaxAlertsPerNotification; len(alerts) > limit {
		// Alertmanager never retries a 400 and sends a group whole at every
		// repeat (webhook max_alerts 0, its default), so refusing a group
		// larger than the limit would lose its page for good. It is cut to
		// the limit instead, as Alertmanager's own max_alerts cuts it: the
		// alerts left out count in truncatedAlerts, so a group-mode target
		// never resolves on this message.
		n := len(alerts)
		alerts = keepFiringFirst(alerts, limit)
		src.TruncatedAlerts += uint64(n - limit)
		s.metrics.overLimit.Add(float64(n - limit))
		s.logger.Warn("Alertmanager message over intake.max_alerts_per_notification: taken with its first alerts (firing first), the rest left out as with Alertmanager's max_alerts; in alert mode the alerts left out are not delivered. Raise intake.max_alerts_per_notification above the largest group, or set max_alerts on the webhook_configs",
			"receiver", src.Receiver, "alerts", n, "kept", limit, "group_key", sinks.Abbreviate(src.GroupKey, 256))
	}
	if n := cutAnnotations(rt.cfg.Intake, alerts); n > 0 {
		s.metrics.annotationsCut.Add(float64(n))
		s.logger.Warn("Alertmanager message with annotations over intake.max_annotation_value_length: taken with them cut to the limit (ending in …), not refused, since Alertmanager never retries a 400 and its group's pages would be lost",
			"receiver", src.Receiver, "cut", n, "limit", rt.cfg.Intake.MaxAnnotationValueLength, "group_key", sinks.Abbreviate(src.GroupKey, 256))
	}
	if err := checkLimits(rt.cfg.Intake, alerts, func(i int) string { return fmt.Sprintf("alerts[%d]", i) }); err != nil {
		s.refuse(r, input, "over_limit", err.Error())
		writeError(w, http.StatusBadRequest, "over an intake limit", err)
		return
	}
	s.stripReserved(r, input, alerts)
	forced := r.PathValue("receiver")
	if forced != "" {
		if rt.router.GuardedBy(forced, ReservedLabels...) {
			// The receiver's routes all require a label only alertfan sets
			// (an authenticated PagerDuty sender's routing_key_name): the
			// path must not reach it around them.
			s.refuse(r, input, "unauthorized", "receiver "+quote(forced)+" is reachable only by authenticated senders")
			writeError(w, http.StatusForbidden, "receiver "+quote(forced)+" is reachable only through routes on "+strings.Join(ReservedLabels, ", ")+"; post to /webhook", nil)
			return
		}
		if _, ok := rt.receivers[forced]; !ok {
			s.refuse(r, input, "unknown_receiver", "receiver "+quote(forced)+" is not configured")
			writeError(w, http.StatusNotFound, "receiver "+quote(forced)+" is not configured", nil)
			return
		}
	}
	s.logDropped(r.Context(), rt, input, alerts, forced)
	cctx, cancel := s.commitContext(r)
	defer cancel()
	if err := s.accept(cctx, src, alerts, forced); err != nil {
		s.storeUnavailable(w, input, err)
		return
	}
	s.accepted(r, input, start)
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "alerts": len(alerts)})
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func (s *server) storeUnavailable(w http.ResponseWriter, input string, err error) {
	if errors.Is(err, queue.ErrTargetsDiffer) {
		// The store commits; this replica's configuration is not the
		// deployment's (a rolling reload under way). Another replica, or
		// this one once reloaded, takes the sender's retry.
		s.metrics.notifications.WithLabelValues(input, "config_differs").Inc()
		if log, first, failing, n := s.differRun.Failed(time.Now()); log {
			s.logger.Warn("Refusing intake (503, the sender retries): this replica's destinations differ from those of the configuration a replica of this deployment loaded last; counted in alertfan_notifications_received_total{outcome=\"config_differs\"}, logged once a minute",
				"input", input, "first", first, "refusing_for", failing.Round(time.Second), "refused", n, "err", err)
		}
		w.Header().Set("Retry-After", "5")
		unavailable(w, input, err.Error())
		return
	}
	s.commitResult(err)
	s.metrics.notifications.WithLabelValues(input, "store_unavailable").Inc()
	// One line when requests start failing and one a minute while they
	// do (a sender retrying through an outage is a line per request);
	// accepted logs the end.
	if log, first, failing, n := s.unavailableRun.Failed(time.Now()); log {
		s.logger.Error("Could not commit accepted alerts; answering 503 so the sender retries (counted in alertfan_notifications_received_total{outcome=\"store_unavailable\"}, logged once a minute until a request is accepted)",
			"input", input, "first", first, "failing_for", failing.Round(time.Second), "refused", n, "err", err)
	}
	w.Header().Set("Retry-After", "5")
	unavailable(w, input, "the store cannot commit right now; retry later")
}

// unavailable answers 503 in the shape the sender's API uses for its
// errors: PagerDuty's Events API ({"status", "message"}, see pdError) on
// its endpoints, so that a client written against it (go-pagerduty's
// EventsAPIV2Error, pdagent) shows the message; alertfan's own
// {"status": "error", "error"} elsewhere.
func unavailable(w http.ResponseWriter, input, msg string) {
	if input == intake.InputPagerDuty {
		pdError(w, http.StatusServiceUnavailable, "unavailable", msg, nil)
		return
	}
	writeError(w, http.StatusServiceUnavailable, msg, nil)
}

// accept routes every alert and commits the resulting work in one
// transaction. It returns nil only when all of it is durable.
//
// Routing gives each alert the targets its labels reach now; the queue adds
// every target that holds the alert open (sticky destinations), drops
// updates older than what it accepted (staleness), and folds repeats.
func (s *server) accept(ctx context.Context, src sinks.Source, alerts []sinks.Alert, forced string) error {
	// Routing and its commit hold routing's read lock and use the config
	// installed now, not the one the request began with: a reload that
	// gives ids other destinations (install) moves the stored work first,
	// and an alert routed by the old config after that would be written
	// under an id that now sends elsewhere.
	s.routing.RLock()
	defer s.routing.RUnlock()
	rt := s.rt.Load()
	now := time.Now().UTC()
	in := &queue.Intake{Updates: make([]queue.Update, 0, len(alerts))}
	type group struct {
		t       target
		members []int
	}
	var groups []*group
	byTarget := map[string]*group{}
	for i := range alerts {
		a := alerts[i]
		s.metrics.alerts.WithLabelValues(src.Input, a.Status).Inc()
		labels, err := json.Marshal(a.Labels)
		if err != nil {
			return err
		}
		u := queue.Update{
			Identity: a.Identity,
			Input:    src.Input,
			Want:     wantOf(&a),
			StartsAt: a.StartsAt,
			EndsAt:   a.EndsAt,
			Ordered:  src.Input != intake.InputPagerDuty,
			Labels:   labels,
		}
		single := func(t queue.Target) (queue.Item, error) {
			return newItem(t, &sinks.Notification{Key: a.Identity, Source: src, Alerts: []sinks.Alert{a}, AcceptedAt: now})
		}
		receivers := []string{forced}
		u.Routes = map[string]string{forced: "POST /webhook/" + forced}
		if forced == "" {
			receivers, u.Routes = receivers[:0], map[string]string{}
			for _, n := range rt.router.Matches(a.Labels) {
				if _, seen := u.Routes[n.Receiver]; !seen {
					u.Routes[n.Receiver] = n.Path
					receivers = append(receivers, n.Receiver)
				}
			}
		}
		for _, recv := range receivers {
			s.metrics.routed.WithLabelValues(recv).Inc()
			targets := rt.receivers[recv]
			if len(targets) == 0 {
				s.metrics.dropped.WithLabelValues(recv).Inc()
				continue
			}
			for _, t := range targets {
				if t.grouped && src.GroupKey != "" {
					g, ok := byTarget[t.ID]
					if !ok {
						g = &group{t: t}
						byTarget[t.ID] = g
						groups = append(groups, g)
					}
					g.members = append(g.members, i)
					continue
				}
				it, err := single(t.Target)
				if err != nil {
					return err
				}
				u.Items = append(u.Items, it)
			}
		}
		if a.Identity != "" && !a.OneOff() {
			u.Sticky = func(id string) (queue.Item, bool) {
				t, ok := stickyTarget(s.store, id)
				if !ok {
					return queue.Item{}, false
				}
				it, err := single(t)
				return it, err == nil
			}
		}
		in.Updates = append(in.Updates, u)
	}
	for _, g := range groups {
		build := func(keep []bool) (queue.Item, bool) {
			var members []sinks.Alert
			for j, m := range g.members {
				if keep == nil || keep[j] {
					members = append(members, alerts[m])
				}
			}
			if len(members) == 0 {
				return queue.Item{}, false
			}
			it, err := newItem(g.t.Target, groupNotification(src, members, now))
			return it, err == nil
		}
		it, ok := build(nil)
		if !ok {
			continue
		}
		held := src.TruncatedAlerts > 0 && allResolved(alerts, g.members)
		if held {
			s.metrics.heldResolves.WithLabelValues(g.t.Receiver).Inc()
			s.logger.Warn("Group not resolved: every alert the message lists has resolved, but it left alerts out (truncatedAlerts; webhook_configs max_alerts), and those may still fire. The group resolves with a message that lists all its alerts resolved; set max_alerts above the group's size",
				"receiver", g.t.Receiver, "target", g.t.ID, "listed", len(g.members), "truncatedAlerts", src.TruncatedAlerts, "group_key", sinks.Abbreviate(src.GroupKey, 256))
		}
		in.Groups = append(in.Groups, queue.GroupItem{Item: it, Members: g.members, Rebuild: build, Held: held})
	}
	if src.GroupKey != "" {
		// The store keys a group's state by a bounded form of its key
		// (queue.StoreKey); the payloads keep the whole key.
		in.GroupKey = queue.StoreKey(src.GroupKey)
		in.StickyGroup = func(id string) (queue.Item, bool) {
			t, ok := stickyTarget(s.store, id)
			if !ok || len(alerts) == 0 {
				return queue.Item{}, false
			}
			it, err := newItem(t, groupNotification(src, alerts, now))
			return it, err == nil
		}
	}
	res, err := s.store.Accept(ctx, in)
	if err != nil {
		return err
	}
	for input, n := range res.StaleByInput {
		s.metrics.stale.WithLabelValues(input).Add(float64(n))
		s.logger.Debug("Dropped stale alert updates: older than what was accepted for the alert", "input", input, "count", n)
	}
	s.metrics.sticky.Add(float64(res.Sticky))
	s.metrics.notifications.WithLabelValues(src.Input, "accepted").Inc()
	return nil
}

// stickyTarget is the target an update goes to because it holds the
// alert open. A destination no longer configured that this process serves
// no sink for (retired before a restart, or by another replica's reload)
// is a target with no kind: the update is written on its row, owed with no
// job (queue: putItem), and goes out if the destination is put back
// (queue: SetTargets) — Alertmanager sends a resolve once.
func stickyTarget(store *queue.Store, id string) (queue.Target, bool) {
	if t, ok := store.Target(id); ok {
		return t, true
	}
	if strings.HasPrefix(id, queue.RetiredPrefix) {
		return queue.Target{ID: id}, true
	}
	return queue.Target{}, false
}

// groupNotification is what a group-mode target is sent for alerts of the
// message's group: keyed by the whole group key (PagerDuty's dedup_key is
// its sha256), with the count of alerts the message left out, which keeps
// the group from resolving (sinks.Notification.Truncated).
func groupNotification(src sinks.Source, alerts []sinks.Alert, now time.Time) *sinks.Notification {
	return &sinks.Notification{Key: src.GroupKey, Source: src, Alerts: alerts, Truncated: src.TruncatedAlerts, AcceptedAt: now}
}

// keepFiringFirst is the first n of alerts, firing ones before resolved
// ones, each in the message's order: a page left out is worse than a
// resolve left out (resolve_after ends what no resolve reaches).
func keepFiringFirst(alerts []sinks.Alert, n int) []sinks.Alert {
	kept := make([]sinks.Alert, 0, n)
	for _, firing := range []bool{true, false} {
		for _, a := range alerts {
			if len(kept) < n && (a.Status != sinks.StatusResolved) == firing {
				kept = append(kept, a)
			}
		}
	}
	return kept
}

// allResolved reports whether every alert of alerts that members index
// is resolved.
func allResolved(alerts []sinks.Alert, members []int) bool {
	for _, m := range members {
		if alerts[m].Status != sinks.StatusResolved {
			return false
		}
	}
	return true
}

// wantOf is the lifecycle phase an alert's update asks its targets for.
func wantOf(a *sinks.Alert) queue.Phase {
	switch {
	case a.OneOff():
		return queue.PhaseEvent
	case a.Status == sinks.StatusResolved:
		return queue.PhaseResolved
	case a.Action == sinks.ActionAcknowledge:
		return queue.PhaseAcknowledged
	}
	return queue.PhaseTriggered
}

func newItem(t queue.Target, n *sinks.Notification) (queue.Item, error) {
	b, err := json.Marshal(n)
	if err != nil {
		return queue.Item{}, err
	}
	want := queue.PhaseTriggered
	switch {
	case n.Truncated > 0:
		// A group message that left alerts out: they may fire, so the
		// group does, even when the one alert it lists resolved.
	case len(n.Alerts) == 1:
		want = wantOf(&n.Alerts[0])
	case n.Status() == sinks.StatusResolved:
		want = queue.PhaseResolved
	}
	return queue.Item{Target: t.ID, Kind: t.Kind, Key: queue.StoreKey(n.Key), Want: want, Digest: n.Digest(), Payload: b, Priority: n.Priority()}, nil
}

func (s *server) handleReload(w http.ResponseWriter, r *http.Request) {
	if !s.opts.EnableLifecycle {
		s.logger.Warn("Refused reload over HTTP: the lifecycle API is off (--web.enable-lifecycle)", "remote", r.RemoteAddr)
		writeError(w, http.StatusForbidden, "Lifecycle API is not enabled; start alertfan with --web.enable-lifecycle, or send SIGHUP", nil)
		return
	}
	if err := s.reload(r.Context()); err != nil {
		s.logger.Error("Reload failed; keeping the running configuration", "err", err)
		http.Error(w, "failed to reload config: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if p := s.pendingRestart.Load(); p != nil && len(*p) > 0 {
		io.WriteString(w, "OK; these settings need a restart to take effect: "+strings.Join(*p, ", ")+"\n") //nolint:errcheck
		return
	}
	io.WriteString(w, "OK\n") //nolint:errcheck
}

// ReservedLabels are set by alertfan from how a sender authenticated;
// a sender cannot supply them (they are removed from every input).
var ReservedLabels = []string{"routing_key_name"}

// stripReserved removes reserved labels a sender put on its alerts, so that
// no sender can reach a route meant for authenticated ones.
func (s *server) stripReserved(r *http.Request, input string, alerts []sinks.Alert) {
	n := 0
	for i := range alerts {
		for _, l := range ReservedLabels {
			if _, ok := alerts[i].Labels[l]; ok {
				delete(alerts[i].Labels, l)
				n++
			}
		}
	}
	if n > 0 {
		s.metrics.reservedRemoved.WithLabelValues(input).Add(float64(n))
		s.logger.Warn("Removed labels the sender may not set", "input", input, "labels", ReservedLabels, "count", n, "remote", r.RemoteAddr)
	}
}

// refuse logs a refused intake request at warn, with the reason and the
// sender's address (never the body or a credential),
// and counts it by outcome.
func (s *server) refuse(r *http.Request, input, outcome, reason string) {
	s.metrics.notifications.WithLabelValues(input, outcome).Inc()
	s.logger.Warn("Refused intake request", "input", input, "outcome", outcome, "reason", reason, "remote", r.RemoteAddr, "route", r.Pattern) // the pattern: a Mackerel path holds the token
}
