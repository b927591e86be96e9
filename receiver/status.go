package receiver

import (
	"errors"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/alertmanager/matcher/compat"
	"github.com/prometheus/alertmanager/pkg/labels"

	"github.com/alertfan/alertfan/receiver/queue"
	"github.com/alertfan/alertfan/receiver/route"
	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/backlog"
	"github.com/alertfan/alertfan/sinks/pagerduty"
)

// The status API: what happened to every alert (its destinations and
// history), the loaded config, the route tree and the rate limits. All of
// it is read-only and served behind the web config's authentication, like
// every path; the status page at / is built on it.

// alertStates are the values of GET /api/v1/alerts?state=.
var alertStates = []string{queue.DestQueued, queue.DestRetrying, queue.DestDelivered, queue.DestDead, "none", "firing", "acknowledged", "resolved"}

// parseMatchers reads the matchers of a listing: one selector
// (matchers={a="b",c=~"d"}) and/or repeated filter=a="b" params, in
// Alertmanager's matcher syntax (as amtool takes them).
func parseMatchers(r *http.Request) (labels.Matchers, error) {
	var out labels.Matchers
	q := r.URL.Query()
	for _, s := range q["matchers"] {
		if strings.TrimSpace(s) == "" {
			continue
		}
		ms, err := compat.Matchers(s, "api")
		if err == nil && len(ms) == 0 && strings.Join(strings.Fields(s), "") != "{}" {
			// The classic parser reads an unbalanced "{" as no matcher at
			// all: a filter that would match everything.
			err = errors.New("no matcher in a selector that is not empty")
		}
		if err != nil {
			return nil, errors.New("matchers: " + strconv.Quote(s) + ": " + err.Error())
		}
		out = append(out, ms...)
	}
	for _, s := range q["filter"] {
		if strings.TrimSpace(s) == "" {
			continue // as an empty matchers=: no filter
		}
		m, err := compat.Matcher(s, "api")
		if err != nil {
			return nil, errors.New("filter: " + strconv.Quote(s) + ": " + err.Error())
		}
		out = append(out, m)
	}
	return out, nil
}

func (s *server) handleAlertList(w http.ResponseWriter, r *http.Request) {
	ms, err := parseMatchers(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	q := r.URL.Query()
	aq := queue.AlertQuery{Receiver: q.Get("receiver"), State: q.Get("state"), Page: q.Get("page")}
	if aq.State != "" && !slices.Contains(alertStates, aq.State) {
		writeError(w, http.StatusBadRequest, "state: must be one of "+strings.Join(alertStates, ", ")+", got "+strconv.Quote(aq.State), nil)
		return
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit: must be an integer from 1 to 1000, got "+strconv.Quote(l), nil)
			return
		}
		aq.Limit = n
	}
	if len(ms) > 0 {
		aq.Match = func(ls map[string]string) bool { return ms.Matches(route.LabelSet(ls)) }
	}
	page, err := s.store.ListAlerts(r.Context(), aq)
	switch {
	case errors.Is(err, queue.ErrBadCursor):
		writeError(w, http.StatusBadRequest, err.Error(), nil)
	case err != nil:
		s.logger.Warn("Listing alerts failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "store unavailable", nil)
	default:
		writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": page})
	}
}

func (s *server) handleAlertShow(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("identity")
	if id == "" {
		writeError(w, http.StatusBadRequest, "identity: required (URL-escaped, as GET /api/v1/alerts lists it)", nil)
		return
	}
	a, err := s.store.Alert(r.Context(), id)
	switch {
	case errors.Is(err, queue.ErrUnknownAlert):
		writeError(w, http.StatusNotFound, "no alert with identity "+strconv.Quote(id), nil)
	case err != nil:
		s.logger.Warn("Reading an alert failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "store unavailable", nil)
	default:
		writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": a})
	}
}

// handleConfig answers the running config, every secret as <secret>
// (prometheus/common's Secret marshals so), and the password of any URL
// written with one (https://user:pass@host) as well.
func (s *server) handleConfig(w http.ResponseWriter, _ *http.Request) {
	rt := s.rt.Load()
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": map[string]any{
		"yaml":      redactURLsInText(rt.cfg.String()),
		"file":      rt.cfg.Filename,
		"loaded_at": rt.loadedAt,
	}})
}

// redactURLsInText hides, in YAML text, the passwords of URLs and the
// values of their queries (redactURL).
func redactURLsInText(s string) string {
	s = urlPassword.ReplaceAllString(s, "$1:<secret>@")
	return urlWithQuery.ReplaceAllStringFunc(s, func(u string) string {
		return urlQuery.ReplaceAllString(u, "$1<secret>")
	})
}

// urlWithQuery finds a URL with a query in YAML text.
var urlWithQuery = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'"?]*\?[^\s'"]*`)

// urlPassword finds the user:password@ of a URL in YAML text.
var urlPassword = regexp.MustCompile(`(://[^:/@\s'"]*):[^@/\s'"]+@`)

// redactURL hides the password of a URL written with one, and the values
// of its query: a target URL's query may carry a key
// (`?routing_key=…`), and alertfan cannot tell which parameter does.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return urlQuery.ReplaceAllString(urlPassword.ReplaceAllString(s, "$1:<secret>@"), "$1<secret>")
	}
	query := u.RawQuery
	u.RawQuery = ""
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "<secret>")
		s = strings.Replace(u.String(), "%3Csecret%3E", "<secret>", 1)
	} else if query != "" {
		s = u.String()
	}
	if query != "" {
		s += "?" + urlQuery.ReplaceAllString("?"+query, "$1<secret>")[1:]
	}
	return s
}

// urlQuery finds the values of a URL's query parameters ("?k=" or "&k="
// then the value) in a URL or in YAML text.
var urlQuery = regexp.MustCompile(`([?&][^=&\s'"#?]+=)[^&\s'"#]+`)

// routeNode is a route tree node as GET /api/v1/routes shows it.
type routeNode struct {
	Path     string       `json:"path"`
	Receiver string       `json:"receiver"`
	Matchers []string     `json:"matchers,omitempty"`
	Continue bool         `json:"continue,omitempty"`
	Routes   []*routeNode `json:"routes,omitempty"`
}

func treeOf(r *route.Route) *routeNode {
	n := &routeNode{Path: r.Path, Receiver: r.Receiver, Continue: r.Continue}
	for _, m := range r.Matchers {
		n.Matchers = append(n.Matchers, m.String())
	}
	for _, c := range r.Routes {
		n.Routes = append(n.Routes, treeOf(c))
	}
	return n
}

type receiverView struct {
	Name    string       `json:"name"`
	Targets []targetView `json:"targets"`
}

type targetView struct {
	ID          string `json:"id"`
	Kind        string `json:"kind"`
	Destination string `json:"destination"`
	Grouped     bool   `json:"grouped,omitempty"`
}

func (s *server) handleRoutes(w http.ResponseWriter, _ *http.Request) {
	rt := s.rt.Load()
	recvs := []receiverView{}
	for _, rc := range rt.cfg.Receivers {
		v := receiverView{Name: rc.Name, Targets: []targetView{}}
		for _, t := range rt.receivers[rc.Name] {
			v.Targets = append(v.Targets, targetView{ID: t.ID, Kind: t.Kind, Destination: t.Destination, Grouped: t.grouped})
		}
		recvs = append(recvs, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": map[string]any{
		"route":     treeOf(rt.router),
		"receivers": recvs,
	}})
}

// rateLimited is a sink whose calls go through a rate limiter.
type rateLimited interface {
	RateLimit() sinks.LimiterState
}

var (
	_ rateLimited = (*pagerduty.Notifier)(nil)
	_ rateLimited = (*backlog.Notifier)(nil)
)

type rateLimitView struct {
	Target   string `json:"target"`
	Receiver string `json:"receiver"`
	Kind     string `json:"kind"`
	// Key names the limited destination without its secret
	// (sinks.DestinationID: a hash of the routing key or the space).
	Key string `json:"key"`
	sinks.LimiterState
	// Queued counts the alerts (keys) with a delivery owed to the target.
	Queued int `json:"queued"`
}

func (s *server) handleRateLimits(w http.ResponseWriter, r *http.Request) {
	rt := s.rt.Load()
	queued, err := s.store.PendingByTarget(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store unavailable", nil)
		return
	}
	out := []rateLimitView{}
	for _, id := range slices.Sorted(maps.Keys(rt.targets)) {
		t := rt.targets[id]
		v := rateLimitView{Target: id, Receiver: t.Receiver, Kind: t.Kind, Key: t.Destination, Queued: queued[id]}
		if rl, ok := t.Sink.(rateLimited); ok {
			v.LimiterState = rl.RateLimit()
		}
		if v.NextSlot.IsZero() {
			v.NextSlot = time.Now().UTC()
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": out})
}
