// Package sinkstest provides in-process fakes of the PagerDuty Events API
// v2 and the Backlog API v2, written from their documentation: status codes,
// error bodies, rate-limit headers, form encoding. Tests use them, and so
// does `alertfan-demo-targets` for the demo stack.
package sinkstest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// PDEvent is an event as the fake PagerDuty received it.
type PDEvent struct {
	RoutingKey  string          `json:"routing_key"`
	EventAction string          `json:"event_action"`
	DedupKey    string          `json:"dedup_key"`
	Payload     json.RawMessage `json:"payload"`
	Client      string          `json:"client"`
	ClientURL   string          `json:"client_url"`
	Images      json.RawMessage `json:"images"`
	Links       json.RawMessage `json:"links"`
	// Raw is the body as sent.
	Raw      []byte    `json:"-"`
	Change   bool      `json:"-"`
	Received time.Time `json:"-"`
}

// PDResponse scripts one answer of the fake.
type PDResponse struct {
	Status     int
	RetryAfter string
	Body       string
}

// PagerDuty is a fake Events API v2: POST /v2/enqueue and
// POST /v2/change/enqueue.
type PagerDuty struct {
	*httptest.Server

	conns   atomic.Int64 // open connections (OpenConns)
	latency atomic.Int64 // SetLatency, in nanoseconds

	mu       sync.Mutex
	events   []PDEvent
	script   []PDResponse
	down     bool
	attempts int
	// OnEvent, if set, is called with every accepted event (under no lock).
	OnEvent func(PDEvent)
	// CountOnly, set before the first request, keeps no events (Events
	// stays empty; OnEvent still sees each): benchmarks deliver hundreds of
	// thousands, and keeping them would cost the fake's process memory and
	// GC time on the machine being measured.
	CountOnly bool
}

// NewPagerDuty starts a fake on a loopback port.
func NewPagerDuty() *PagerDuty {
	return NewPagerDutyOn(nil)
}

// NewPagerDutyOn starts a fake on l (a loopback port when nil).
func NewPagerDutyOn(l net.Listener) *PagerDuty {
	p := &PagerDuty{}
	mux := http.NewServeMux()
	mux.HandleFunc("/v2/enqueue", func(w http.ResponseWriter, r *http.Request) { p.handle(w, r, false) })
	mux.HandleFunc("/v2/change/enqueue", func(w http.ResponseWriter, r *http.Request) { p.handle(w, r, true) })
	p.Server = startOn(l, mux, &p.conns)
	return p
}

// OpenConns is how many connections to the fake are open. After its only
// client was killed, 0 means every request the client sent before it
// died has been handled (a connection closes after its handler returns).
func (p *PagerDuty) OpenConns() int { return int(p.conns.Load()) }

// startOn starts a fake's server on l (a loopback port when nil), counting
// its open connections in conns when that is not nil.
func startOn(l net.Listener, h http.Handler, conns *atomic.Int64) *httptest.Server {
	s := httptest.NewUnstartedServer(h)
	if l != nil {
		s.Listener.Close()
		s.Listener = l
	}
	if conns != nil {
		s.Config.ConnState = CountConns(conns)
	}
	s.Start()
	return s
}

// CountConns is an http.Server's ConnState hook that keeps n at the
// number of its open connections.
func CountConns(n *atomic.Int64) func(net.Conn, http.ConnState) {
	return func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			n.Add(1)
		case http.StateClosed, http.StateHijacked:
			n.Add(-1)
		}
	}
}

// SetLatency makes every answer wait d first, as a distant API does:
// PagerDuty's events endpoint is a round trip of 100–300 ms from another
// continent. Benchmarks use it to show what bounds deliveries when the
// target, not the CPU, is slow.
func (p *PagerDuty) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// URL of the events endpoint.
func (p *PagerDuty) EventsURL() string { return p.Server.URL + "/v2/enqueue" }

// Script queues answers given before normal handling resumes.
func (p *PagerDuty) Script(rs ...PDResponse) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.script = append(p.script, rs...)
}

// SetDown makes every request fail with 503 (down=true) until cleared.
func (p *PagerDuty) SetDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
}

// Events returns the accepted events.
func (p *PagerDuty) Events() []PDEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]PDEvent(nil), p.events...)
}

// Attempts is how many requests arrived, accepted or not.
func (p *PagerDuty) Attempts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.attempts
}

func pdJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v) //nolint:errcheck
}

func (p *PagerDuty) handle(w http.ResponseWriter, r *http.Request, change bool) {
	if d := time.Duration(p.latency.Load()); d > 0 {
		time.Sleep(d)
	}
	p.mu.Lock()
	p.attempts++
	if r.Method != http.MethodPost {
		p.mu.Unlock()
		w.Header().Set("Allow", "POST")
		pdJSON(w, http.StatusMethodNotAllowed, map[string]string{"status": "method not allowed", "message": "Only POST is allowed"})
		return
	}
	if len(p.script) > 0 {
		s := p.script[0]
		p.script = p.script[1:]
		p.mu.Unlock()
		io.Copy(io.Discard, r.Body) //nolint:errcheck
		if s.RetryAfter != "" {
			w.Header().Set("Retry-After", s.RetryAfter)
		}
		body := s.Body
		if body == "" {
			switch {
			case s.Status == http.StatusTooManyRequests:
				body = `{"status":"throttle event","message":"Requests for this service are arriving too quickly.  Please retry later."}`
			case s.Status == http.StatusBadRequest:
				body = `{"status":"invalid event","message":"Event object is invalid","errors":["'payload.summary' is missing or blank"]}`
			default:
				body = `{"status":"error","message":"Internal server error"}`
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(s.Status)
		io.WriteString(w, body) //nolint:errcheck
		return
	}
	if p.down {
		p.mu.Unlock()
		io.Copy(io.Discard, r.Body) //nolint:errcheck
		pdJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "error", "message": "Service Unavailable"})
		return
	}
	p.mu.Unlock()

	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		pdJSON(w, http.StatusBadRequest, map[string]any{"status": "invalid event", "message": "Event object is invalid", "errors": []string{"could not read body"}})
		return
	}
	var ev PDEvent
	if err := json.Unmarshal(raw, &ev); err != nil {
		pdJSON(w, http.StatusBadRequest, map[string]any{"status": "invalid event", "message": "Event object is invalid", "errors": []string{"Invalid JSON"}})
		return
	}
	if len(raw) > 512000 {
		pdJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"status": "invalid event", "message": "Event object is too large"})
		return
	}
	errs := validatePD(&ev, change)
	if len(errs) > 0 {
		pdJSON(w, http.StatusBadRequest, map[string]any{"status": "invalid event", "message": "Event object is invalid", "errors": errs})
		return
	}
	ev.Raw = raw
	ev.Change = change
	ev.Received = time.Now()
	if !change && ev.DedupKey == "" {
		ev.DedupKey = strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	p.mu.Lock()
	if !p.CountOnly {
		p.events = append(p.events, ev)
	}
	hook := p.OnEvent
	p.mu.Unlock()
	if hook != nil {
		hook(ev)
	}
	if change {
		pdJSON(w, http.StatusAccepted, map[string]string{"status": "success", "message": "Change event processed"})
		return
	}
	pdJSON(w, http.StatusAccepted, map[string]string{"status": "success", "message": "Event processed", "dedup_key": ev.DedupKey})
}

// validatePD checks an event as PagerDuty documents it
// (https://developer.pagerduty.com/docs/send-alert-event,
// https://developer.pagerduty.com/docs/send-change-event): required fields,
// lengths, the severity and action enumerations, ISO 8601 timestamps, and
// links/images as arrays of objects with their required href/src.
// custom_details may be any JSON value.
func validatePD(ev *PDEvent, change bool) []string {
	var errs []string
	if len(ev.RoutingKey) != 32 {
		errs = append(errs, "Length of 'routing_key' is incorrect (should be 32 characters)")
	}
	if strings.IndexFunc(ev.RoutingKey, func(r rune) bool {
		return !('0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z')
	}) >= 0 {
		errs = append(errs, "'routing_key' cannot contain non-alphanumeric characters.")
	}
	var payload struct {
		Summary   *string `json:"summary"`
		Source    *string `json:"source"`
		Severity  *string `json:"severity"`
		Timestamp *string `json:"timestamp"`
		Component *string `json:"component"`
		Group     *string `json:"group"`
		Class     *string `json:"class"`
	}
	if len(ev.Payload) > 0 && string(ev.Payload) != "null" {
		if err := json.Unmarshal(ev.Payload, &payload); err != nil {
			errs = append(errs, "'payload' is invalid: "+err.Error())
		}
	}
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	if ts := str(payload.Timestamp); ts != "" && !isISO8601(ts) {
		errs = append(errs, "'payload.timestamp' is not a valid ISO 8601 timestamp")
	}
	if change {
		if strings.TrimSpace(str(payload.Summary)) == "" {
			errs = append(errs, "'payload.summary' is missing or blank")
		}
		return append(errs, checkContext("links", ev.Links, "href")...)
	}
	switch ev.EventAction {
	case "trigger":
		switch summary := str(payload.Summary); {
		case strings.TrimSpace(summary) == "":
			errs = append(errs, "'payload.summary' is missing or blank")
		case utf8.RuneCountInString(summary) > 1024:
			errs = append(errs, "'payload.summary' is too long")
		}
		if strings.TrimSpace(str(payload.Source)) == "" {
			errs = append(errs, "'payload.source' is missing or blank")
		}
		switch str(payload.Severity) {
		case "critical", "error", "warning", "info":
		default:
			errs = append(errs, "'payload.severity' is invalid (must be one of: critical, error, warning, info)")
		}
	case "acknowledge", "resolve":
		if ev.DedupKey == "" {
			errs = append(errs, "'dedup_key' is missing or blank")
		}
	default:
		errs = append(errs, "'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
	}
	if utf8.RuneCountInString(ev.DedupKey) > 255 {
		errs = append(errs, "'dedup_key' is too long")
	}
	errs = append(errs, checkContext("links", ev.Links, "href")...)
	errs = append(errs, checkContext("images", ev.Images, "src")...)
	return errs
}

// checkContext checks links or images: an array of objects, each with its
// required field as a non-empty string.
func checkContext(name string, raw json.RawMessage, required string) []string {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var items []map[string]any
	if err := json.Unmarshal(raw, &items); err != nil {
		return []string{"'" + name + "' must be an array of objects"}
	}
	for i, it := range items {
		if s, ok := it[required].(string); !ok || s == "" {
			return []string{fmt.Sprintf("'%s[%d].%s' is missing or blank", name, i, required)}
		}
		for k, v := range it {
			if _, ok := v.(string); !ok {
				return []string{fmt.Sprintf("'%s[%d].%s' must be a string", name, i, k)}
			}
		}
	}
	return nil
}

var iso8601 = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)?$`)

func isISO8601(s string) bool { return iso8601.MatchString(s) }
