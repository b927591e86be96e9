// Package sinkstest provides in-process fakes of the PagerDuty Events API
// v2 and the Backlog API v2, written from their documentation: status codes,
// error bodies, rate-limit headers, form encoding. Tests use them, and so
// does `alertfan-demo-targets` for the demo stack.
package sinkstest

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
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

	mu       sync.Mutex
	events   []PDEvent
	script   []PDResponse
	down     bool
	attempts int
	// OnEvent, if set, is called with every accepted event (under no lock).
	OnEvent func(PDEvent)
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
	p.Server = startOn(l, mux)
	return p
}

func startOn(l net.Listener, h http.Handler) *httptest.Server {
	if l == nil {
		return httptest.NewServer(h)
	}
	s := httptest.NewUnstartedServer(h)
	s.Listener.Close()
	s.Listener = l
	s.Start()
	return s
}

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
	var errs []string
	if len(ev.RoutingKey) != 32 {
		errs = append(errs, "Length of 'routing_key' is incorrect (should be 32 characters)")
	}
	var payload struct {
		Summary  string `json:"summary"`
		Source   string `json:"source"`
		Severity string `json:"severity"`
	}
	if len(ev.Payload) > 0 {
		json.Unmarshal(ev.Payload, &payload) //nolint:errcheck
	}
	if change {
		if payload.Summary == "" {
			errs = append(errs, "'payload.summary' is missing or blank")
		}
	} else {
		switch ev.EventAction {
		case "trigger":
			if payload.Summary == "" {
				errs = append(errs, "'payload.summary' is missing or blank")
			} else if utf8.RuneCountInString(payload.Summary) > 1024 {
				errs = append(errs, "'payload.summary' is too long")
			}
			if payload.Source == "" {
				errs = append(errs, "'payload.source' is missing or blank")
			}
			switch payload.Severity {
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
		if len(ev.DedupKey) > 255 {
			errs = append(errs, "'dedup_key' is too long")
		}
	}
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
	p.events = append(p.events, ev)
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
