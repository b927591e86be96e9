package receiver

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/receiver/queue"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// getData GETs an /api/v1 path and decodes its data into out.
func getData(t *testing.T, ts *testServer, path string, out any) int {
	t.Helper()
	code, body := ts.get(t, path)
	if code != http.StatusOK {
		return code
	}
	var env struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &env), body)
	require.Equal(t, "success", env.Status)
	require.NoError(t, json.Unmarshal(env.Data, out), string(env.Data))
	return code
}

func events(h []queue.HistoryEvent) []string {
	var out []string
	for _, e := range h {
		s := e.Event
		if e.Target != "" {
			s += " " + e.Target
		}
		if e.Action != "" {
			s += " " + e.Action + " " + e.Outcome
		}
		if e.Event == queue.EventAccepted || e.Event == queue.EventStale {
			s += " " + e.Status
		}
		out = append(out, s)
	}
	return out
}

// TestStatusAPI follows one alert through PagerDuty and Backlog, a stale
// HA copy, a dead letter and its retry, on both stores, and reads it back
// from the status API: destinations, references, links and history.
func TestStatusAPI(t *testing.T) {
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			pd := sinkstest.NewPagerDuty()
			defer pd.Close()
			bl := sinkstest.NewBacklog(backlogKey)
			defer bl.Close()
			dir := t.TempDir()
			cfg := strings.Replace(lcConfig(pd.EventsURL(), bl.URL, ""), "        rate_limit_per_minute: 60000\n", "        rate_limit_per_minute: 60000\n        incident_link: https://acme.pagerduty.com/incidents?search={dedup_key}\n", 1)
			ts := startServerIn(t, dir, lcStorage(t, driver, dir)+cfg)
			const id = "am:8a07086b74f3ba78"

			code, _ := ts.post(t, "/webhook", amAlert("firing", "critical", t0))
			require.Equal(t, http.StatusOK, code)
			settle(t, ts)

			var page queue.AlertPage
			getData(t, ts, "/api/v1/alerts", &page)
			require.Len(t, page.Alerts, 1)
			a := page.Alerts[0]
			require.Equal(t, id, a.Identity)
			require.Equal(t, "firing", a.Status)
			require.Equal(t, "alertmanager", a.Input)
			require.Equal(t, "DiskFull", a.Labels["alertname"])
			require.Len(t, a.Destinations, 2)
			byKind := map[string]queue.Destination{}
			for _, d := range a.Destinations {
				byKind[d.Kind] = d
				require.Equal(t, queue.DestDelivered, d.State, d.Target)
				require.Equal(t, "both", d.Receiver)
				require.Equal(t, "triggered", d.Phase)
			}
			sent := pd.Events()
			require.Len(t, sent, 1)
			require.Equal(t, sent[0].DedupKey, byKind["pagerduty"].Ref, "PagerDuty ref is the dedup_key sent")
			require.Equal(t, "https://acme.pagerduty.com/incidents?search="+url.QueryEscape(sent[0].DedupKey), byKind["pagerduty"].Link)
			issues := bl.Issues()
			require.Len(t, issues, 1)
			require.Equal(t, issues[0].Key, byKind["backlog"].Ref)
			require.Equal(t, bl.URL+"/view/"+issues[0].Key, byKind["backlog"].Link)

			// Resolve, then a stale HA copy of the firing.
			code, _ = ts.post(t, "/webhook", amAlert("resolved", "critical", t0, func(a *sinkstest.WebhookAlert) { a.EndsAt = t0.Add(time.Minute) }))
			require.Equal(t, http.StatusOK, code)
			settle(t, ts)
			code, _ = ts.post(t, "/webhook", amAlert("firing", "critical", t0))
			require.Equal(t, http.StatusOK, code)

			// A dead letter: PagerDuty refuses the next event for good.
			pd.Script(sinkstest.PDResponse{Status: http.StatusBadRequest, Body: `{"status":"invalid event","message":"Event object is invalid","errors":["Length of 'routing_key' is incorrect"]}`})
			code, _ = ts.post(t, "/webhook", amAlert("firing", "critical", t0.Add(time.Hour)))
			require.Equal(t, http.StatusOK, code)
			settle(t, ts)

			var dead queue.AlertPage
			getData(t, ts, "/api/v1/alerts?state=dead", &dead)
			require.Len(t, dead.Alerts, 1)
			var deadID int64
			for _, d := range dead.Alerts[0].Destinations {
				if d.Kind == "pagerduty" {
					require.Equal(t, queue.DestDead, d.State)
					require.Equal(t, "client_error", d.LastReason)
					require.Contains(t, d.LastError, "Event object is invalid")
					deadID = d.DeadLetter
				}
			}
			require.NotZero(t, deadID)
			code, _ = ts.post(t, "/api/v1/dead-letters/"+strconv.FormatInt(deadID, 10)+"/retry", nil)
			require.Equal(t, http.StatusOK, code)
			settle(t, ts)

			var got queue.AlertView
			require.Equal(t, http.StatusOK, getData(t, ts, "/api/v1/alerts/"+url.PathEscape(id), &got))
			for _, d := range got.Destinations {
				require.Equal(t, queue.DestDelivered, d.State, d.Target)
			}
			require.Equal(t, []string{
				"accepted both/backlog/0 triggered",
				"accepted both/pagerduty/0 triggered",
				"call both/backlog/0 created success",
				"call both/pagerduty/0 trigger success",
				"accepted both/backlog/0 resolved",
				"accepted both/pagerduty/0 resolved",
				"call both/backlog/0 closed success",
				"call both/pagerduty/0 resolve success",
				"stale triggered",
				"accepted both/backlog/0 triggered",
				"accepted both/pagerduty/0 triggered",
				"call both/backlog/0 reopened success",
				"call both/pagerduty/0 trigger dead",
				"retried both/pagerduty/0",
				"call both/pagerduty/0 trigger success",
			}, sortCalls(events(got.History)))
			for _, e := range got.History {
				switch {
				case e.Event == queue.EventAccepted:
					require.Equal(t, "route.routes[0]", e.Route)
					require.Equal(t, "DiskFull", e.Labels["alertname"])
				case e.Event == queue.EventCall && e.Outcome == queue.OutcomeDead:
					require.Equal(t, http.StatusBadRequest, e.HTTPStatus)
					require.Equal(t, "client_error", e.Reason)
				case e.Event == queue.EventCall && e.Target == "both/pagerduty/0":
					require.Equal(t, http.StatusAccepted, e.HTTPStatus)
					require.NotEmpty(t, e.Ref)
				}
			}
			// Unknown, or no identity at all (PostgreSQL refused the query
			// itself: a 503 instead of a 404).
			for _, unknown := range []string{"am:doesnotexist", "am:\x00", "am:\xff"} {
				code, body := ts.get(t, "/api/v1/alerts/"+url.PathEscape(unknown))
				require.Equal(t, http.StatusNotFound, code, "%q: %s", unknown, body)
			}
		})
	}
}

// sortCalls makes a history comparable: calls to the two destinations run
// in parallel, so within a run of calls (or of accepted rows) they are put
// in the targets' order.
func sortCalls(ev []string) []string {
	out := append([]string(nil), ev...)
	for i := 0; i < len(out); {
		j := i
		kind := strings.Fields(out[i])[0]
		for j < len(out) && strings.Fields(out[j])[0] == kind && kind != "retried" && kind != "stale" {
			j++
		}
		if j == i {
			i++
			continue
		}
		seg := out[i:j]
		for a := 1; a < len(seg); a++ {
			for b := a; b > 0 && seg[b] < seg[b-1]; b-- {
				seg[b], seg[b-1] = seg[b-1], seg[b]
			}
		}
		i = j
	}
	return out
}

// TestAlertListFilters checks matchers, receiver and state filters,
// pagination and their errors.
func TestAlertListFilters(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), ""))
	for _, name := range []string{"A", "B", "C", "D", "E"} {
		code, _ := ts.post(t, "/webhook", firing("Alert"+name, "host-"+strings.ToLower(name)))
		require.Equal(t, http.StatusOK, code)
	}
	settle(t, ts)

	names := func(p queue.AlertPage) []string {
		var out []string
		for _, a := range p.Alerts {
			out = append(out, a.Labels["alertname"])
		}
		return out
	}
	cases := []struct {
		query string
		want  []string
	}{
		{"", []string{"AlertE", "AlertD", "AlertC", "AlertB", "AlertA"}},
		{"?matchers=" + url.QueryEscape(`{alertname=~"Alert[AB]"}`), []string{"AlertB", "AlertA"}},
		{"?filter=" + url.QueryEscape(`instance="host-c"`), []string{"AlertC"}},
		{"?filter=" + url.QueryEscape(`alertname=AlertD`) + "&filter=" + url.QueryEscape(`instance!="host-d"`), nil},
		{"?receiver=oncall&state=delivered", []string{"AlertE", "AlertD", "AlertC", "AlertB", "AlertA"}},
		{"?receiver=nobody", nil},
		{"?state=dead", nil},
		{"?state=firing", []string{"AlertE", "AlertD", "AlertC", "AlertB", "AlertA"}},
	}
	for _, c := range cases {
		t.Run(c.query, func(t *testing.T) {
			var p queue.AlertPage
			require.Equal(t, http.StatusOK, getData(t, ts, "/api/v1/alerts"+c.query, &p))
			require.Equal(t, c.want, names(p))
		})
	}

	// Pages of two, in order, without repeats.
	var all []string
	next := ""
	for i := 0; i < 5; i++ {
		var p queue.AlertPage
		getData(t, ts, "/api/v1/alerts?limit=2&page="+url.QueryEscape(next), &p)
		all = append(all, names(p)...)
		if next = p.Next; next == "" {
			break
		}
	}
	require.Equal(t, []string{"AlertE", "AlertD", "AlertC", "AlertB", "AlertA"}, all)

	bad := []struct{ query, field string }{
		{"?matchers=" + url.QueryEscape(`{alertname=~"(}`), "matchers"},
		{"?filter=" + url.QueryEscape(`=x`), "filter"},
		{"?matchers=" + url.QueryEscape(`{`), "matchers"},
		{"?filter=" + url.QueryEscape(`a=~"a{1000000}"`), "filter"},
		{"?state=sleeping", "state"},
		{"?limit=0", "limit"},
		{"?limit=abc", "limit"},
		{"?page=%21%21", "page"},
	}
	for _, b := range bad {
		t.Run("bad"+b.query, func(t *testing.T) {
			code, body := ts.get(t, "/api/v1/alerts"+b.query)
			require.Equal(t, http.StatusBadRequest, code, body)
			var e errorBody
			require.NoError(t, json.Unmarshal([]byte(body), &e))
			require.True(t, strings.HasPrefix(e.Error, b.field+":"), e.Error)
		})
	}
}

// TestStatusConfigRoutesRateLimits reads the config (secrets hidden), the
// route tree and the rate limits.
func TestStatusConfigRoutesRateLimits(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	bl := sinkstest.NewBacklog(backlogKey)
	defer bl.Close()
	ts := startServer(t, lcConfig(pd.EventsURL(), bl.URL, ""))

	var cfg struct {
		YAML     string    `json:"yaml"`
		File     string    `json:"file"`
		LoadedAt time.Time `json:"loaded_at"`
	}
	getData(t, ts, "/api/v1/status/config", &cfg)
	require.Contains(t, cfg.YAML, "<secret>")
	require.NotContains(t, cfg.YAML, testRoutingKey)
	require.NotContains(t, cfg.YAML, backlogKey)
	require.Equal(t, ts.cfg, cfg.File)
	require.WithinDuration(t, time.Now(), cfg.LoadedAt, time.Minute)

	var routes struct {
		Route     routeNode      `json:"route"`
		Receivers []receiverView `json:"receivers"`
	}
	getData(t, ts, "/api/v1/routes", &routes)
	require.Equal(t, "default", routes.Route.Receiver)
	require.Len(t, routes.Route.Routes, 1)
	require.Equal(t, []string{`severity="critical"`}, routes.Route.Routes[0].Matchers)
	require.Equal(t, "both", routes.Route.Routes[0].Receiver)
	require.Len(t, routes.Receivers, 2)
	require.Len(t, routes.Receivers[1].Targets, 2)
	for _, tg := range routes.Receivers[1].Targets {
		require.NotContains(t, tg.Destination, testRoutingKey)
	}

	var limits []rateLimitView
	getData(t, ts, "/api/v1/ratelimits", &limits)
	require.Len(t, limits, 2)
	for _, l := range limits {
		require.Equal(t, 60000, l.PerMinute, l.Target)
		require.Equal(t, "both", l.Receiver)
		require.NotContains(t, l.Key, testRoutingKey)
	}
}

// TestStatusAPIGroupMode: in group mode one call serves the group; each
// member's history shows its own acceptance and the group's calls.
func TestStatusAPIGroupMode(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), "        mode: group\n"))
	a := sinkstest.NamedAlert("DiskFull", "critical", "db-1", "firing", t0)
	b := sinkstest.NamedAlert("DiskFull", "critical", "db-2", "firing", t0)
	const group = `{}:{alertname="DiskFull"}`
	code, _ := ts.post(t, "/webhook", sinkstest.Webhook("oncall", group, map[string]string{"alertname": "DiskFull"}, a, b))
	require.Equal(t, http.StatusOK, code)
	settle(t, ts)

	var got queue.AlertView
	require.Equal(t, http.StatusOK, getData(t, ts, "/api/v1/alerts/"+url.PathEscape("am:"+b.Fingerprint), &got))
	require.Len(t, got.Destinations, 1)
	d := got.Destinations[0]
	require.Equal(t, group, d.Key)
	require.Equal(t, queue.DestDelivered, d.State)
	require.Equal(t, pd.Events()[0].DedupKey, d.Ref)
	require.Equal(t, []string{"accepted oncall/pagerduty/0 triggered", "call oncall/pagerduty/0 trigger success"}, events(got.History))
	require.Equal(t, "route", got.History[0].Route)
}

// TestStatusAPINoDestination: an alert whose route has no target is
// accepted, and the history says it went nowhere.
func TestStatusAPINoDestination(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	bl := sinkstest.NewBacklog(backlogKey)
	defer bl.Close()
	ts := startServer(t, lcConfig(pd.EventsURL(), bl.URL, ""))
	code, _ := ts.post(t, "/webhook", amAlert("firing", "warning", t0))
	require.Equal(t, http.StatusOK, code)
	code, _ = ts.post(t, "/webhook", amAlert("firing", "warning", t0)) // a repeat: no new row
	require.Equal(t, http.StatusOK, code)
	var page queue.AlertPage
	getData(t, ts, "/api/v1/alerts?state=none", &page)
	require.Len(t, page.Alerts, 1)
	require.Empty(t, page.Alerts[0].Destinations)
	var got queue.AlertView
	getData(t, ts, "/api/v1/alerts/am:8a07086b74f3ba78", &got)
	require.Equal(t, []string{"accepted triggered"}, events(got.History))
	require.Empty(t, pd.Events())
}

// TestControlEndpointsRefuseCrossSite: a page on another origin cannot make
// the operator's browser retry a dead letter or reload, nor post alerts;
// the CLI and senders (no Origin, no Sec-Fetch-Site) and alertfan's own
// page can.
func TestControlEndpointsRefuseCrossSite(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), ""))
	cases := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		want    int
	}{
		{"cross-site form retry", http.MethodPost, "/api/v1/dead-letters/retry", map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Content-Type": "application/x-www-form-urlencoded"}, http.StatusForbidden},
		{"cross-origin retry, no fetch metadata", http.MethodPost, "/api/v1/dead-letters/retry", map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"cross-site reload", http.MethodPost, "/-/reload", map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"cross-site drop", http.MethodDelete, "/api/v1/dead-letters/1", map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"same-origin page", http.MethodPost, "/api/v1/dead-letters/retry", map[string]string{"Sec-Fetch-Site": "same-origin"}, http.StatusOK},
		{"CLI", http.MethodPost, "/api/v1/dead-letters/retry", nil, http.StatusOK},
		{"cross-site intake (a text/plain form)", http.MethodPost, "/webhook", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example", "Content-Type": "text/plain"}, http.StatusForbidden},
		{"cross-origin PagerDuty intake, no fetch metadata", http.MethodPost, "/v2/enqueue", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"cross-site Mackerel intake", http.MethodPost, "/mackerel", map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"a sender (no browser headers)", http.MethodPost, "/webhook", nil, http.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body *strings.Reader
			if c.method == http.MethodPost && !strings.HasPrefix(c.path, "/api") && !strings.HasPrefix(c.path, "/-") {
				body = strings.NewReader(string(firing("X", "h")))
			} else {
				body = strings.NewReader("")
			}
			req, err := http.NewRequest(c.method, ts.URL+c.path, body)
			require.NoError(t, err)
			for k, v := range c.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, c.want, resp.StatusCode)
		})
	}
}

// TestRedactURLPasswords: a URL written with a password shows it nowhere.
func TestRedactURLPasswords(t *testing.T) {
	for in, want := range map[string]string{
		"http://u:pw@127.0.0.1:1/v2/enqueue":                     "http://u:<secret>@127.0.0.1:1/v2/enqueue",
		"https://events.pagerduty.com/v2":                        "https://events.pagerduty.com/v2",
		"http://onlyuser@host/x":                                 "http://onlyuser@host/x",
		"http://h/v2/enqueue?routing_key=R0UT1NGQSECRET&token=Q": "http://h/v2/enqueue?routing_key=<secret>&token=<secret>",
		"http://u:pw@h/x?k=v":                                    "http://u:<secret>@h/x?k=<secret>",
		"http://h/x?flag":                                        "http://h/x?flag",
	} {
		require.Equal(t, want, redactURL(in))
	}
	require.Equal(t, "url: http://h/v2/enqueue?routing_key=<secret>&x=<secret>\n  api_url: 'https://u:<secret>@b/?k=<secret>'",
		redactURLsInText("url: http://h/v2/enqueue?routing_key=R0UT1NGQSECRET&x=y\n  api_url: 'https://u:p@b/?k=v'"))
	require.Equal(t, "url: http://u:<secret>@h/x\n  other: 'https://a:<secret>@b'", urlPassword.ReplaceAllString("url: http://u:pw@h/x\n  other: 'https://a:b@b'", "$1:<secret>@"))
}
