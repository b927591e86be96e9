package receiver

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// lossyProxy forwards every request to the fake PagerDuty; for the
// requests lose picks, the fake processes the event but the answer is lost
// (502 after the event was recorded), after hold runs.
type lossyProxy struct {
	*httptest.Server
	mu   sync.Mutex
	lose func(body []byte) bool
	hold func()
}

func newLossyProxy(t *testing.T, pd *sinkstest.PagerDuty) *lossyProxy {
	p := &lossyProxy{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		resp, err := http.Post(pd.Server.URL+r.URL.Path, "application/json", bytes.NewReader(body))
		if err != nil {
			w.WriteHeader(502)
			return
		}
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		p.mu.Lock()
		lose, hold := p.lose, p.hold
		p.mu.Unlock()
		if lose != nil && lose(body) {
			p.mu.Lock()
			p.lose = nil
			p.mu.Unlock()
			if hold != nil {
				hold()
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(502)
			io.WriteString(w, `{"status":"error","message":"Bad gateway"}`)
			return
		}
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		w.Write(rb)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *lossyProxy) loseNext(match string, hold func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lose = func(b []byte) bool { return strings.Contains(string(b), match) }
	p.hold = hold
}

func keysOf(pd *sinkstest.PagerDuty) []string {
	var out []string
	for _, e := range pd.Events() {
		out = append(out, e.EventAction+":"+e.DedupKey)
	}
	return out
}

// A trigger that failed (503) and whose alert resolved before a retry
// succeeded must not leave its key behind: the next occurrence's trigger
// that loses its answer is retried, with newer content, under its own
// first key — one incident, resolved.
func TestFailedTriggersKeyDoesNotOutliveItsOccurrence(t *testing.T) {
	for _, withEarlier := range []bool{false, true} {
		name := "control: no earlier failed trigger"
		if withEarlier {
			name = "earlier occurrence's trigger failed, then resolved"
		}
		t.Run(name, func(t *testing.T) {
			pd := sinkstest.NewPagerDuty()
			defer pd.Close()
			px := newLossyProxy(t, pd)
			ts := startServer(t, pdConfig(px.URL+"/v2/enqueue", "        dedup_key: '{{ .CommonAnnotations.summary }}'\n"))
			send := func(ev string) {
				code, body := ts.post(t, "/v2/enqueue", []byte(ev))
				require.Equal(t, 202, code, "%v", body)
			}
			ev := func(action, summary string) string {
				if summary == "" {
					return `{"routing_key":"` + testRoutingKey + `","event_action":"` + action + `","dedup_key":"srv-1"}`
				}
				return `{"routing_key":"` + testRoutingKey + `","event_action":"` + action + `","dedup_key":"srv-1","payload":{"summary":"` + summary + `","source":"web-1","severity":"critical"}}`
			}
			if withEarlier {
				pd.SetDown(true)
				send(ev("trigger", "Disk 80% full"))
				require.Eventually(t, func() bool { return pd.Attempts() >= 1 }, 10*time.Second, 10*time.Millisecond)
				send(ev("resolve", ""))
				time.Sleep(time.Second) // the retry finds the resolve: nothing sent (503 said nothing was opened)
				pd.SetDown(false)
				time.Sleep(500 * time.Millisecond)
				require.Empty(t, pd.Events())
			}
			// New occurrence: its trigger reaches PagerDuty, the answer is lost;
			// an update arrives before the retry.
			release := make(chan struct{})
			px.loseNext("Disk 91% full", func() {
				go func() {
					send(ev("trigger", "Disk 95% full"))
					close(release)
				}()
				<-release
			})
			send(ev("trigger", "Disk 91% full"))
			require.Eventually(t, func() bool { return len(pd.Events()) >= 2 }, 10*time.Second, 10*time.Millisecond)
			send(ev("resolve", ""))
			require.Eventually(t, func() bool { return len(pd.Events()) >= 3 }, 10*time.Second, 10*time.Millisecond)
			time.Sleep(300 * time.Millisecond)
			t.Logf("events: %v", keysOf(pd))
			for _, e := range pd.Events() {
				require.Equal(t, "Disk 91% full", e.DedupKey, "%v", keysOf(pd))
			}
		})
	}
}

// A trigger whose answer was lost to a timeout (uncertain: PagerDuty may
// hold the incident open), then, before its retry, the alert resolves and
// fires again (a later startsAt: a new occurrence, a dedup_key template
// that separates occurrences). The old occurrence's possible incident is
// resolved under its key, and the new occurrence gets its own.
func TestNewOccurrenceIsNotFoldedIntoAnUncertainOne(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	t1 := t0.Add(10 * time.Minute)
	k0, k1 := "DiskFull-"+strconv.FormatInt(t0.Unix(), 10), "DiskFull-"+strconv.FormatInt(t1.Unix(), 10)
	actions := func(pd *sinkstest.PagerDuty) []string {
		var acts []string
		for _, e := range pd.Events() {
			acts = append(acts, e.EventAction)
		}
		return acts
	}
	for _, c := range []struct {
		name  string
		extra string
		got   func(*sinkstest.PagerDuty) []string
		want  []string
	}{
		{"a dedup_key template separating occurrences", "        dedup_key: '{{ (index .Alerts 0).Labels.alertname }}-{{ (index .Alerts 0).StartsAt.Unix }}'\n",
			keysOf, []string{"trigger:" + k0, "resolve:" + k0, "trigger:" + k1, "resolve:" + k1}},
		{"the default dedup_key", "", actions, []string{"trigger", "resolve", "trigger", "resolve"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			pd := sinkstest.NewPagerDuty()
			defer pd.Close()
			px := newLossyProxy(t, pd)
			ts := startServer(t, pdConfig(px.URL+"/v2/enqueue", "        timeout: 300ms\n"+c.extra))
			gk, gl := `{}:{alertname="DiskFull"}`, map[string]string{"alertname": "DiskFull"}
			post := func(a sinkstest.WebhookAlert) {
				code, body := ts.post(t, "/webhook", sinkstest.Webhook("oncall", gk, gl, a))
				require.Equal(t, 200, code, "%v", body)
			}
			px.loseNext("firing", func() {
				// While the first trigger's answer is on its way (and
				// lost): the alert resolves and fires again.
				post(sinkstest.NamedAlert("DiskFull", "critical", "web-1", "resolved", t0))
				post(sinkstest.NamedAlert("DiskFull", "critical", "web-1", "firing", t1))
				time.Sleep(600 * time.Millisecond) // past the target's timeout
			})
			post(sinkstest.NamedAlert("DiskFull", "critical", "web-1", "firing", t0))
			require.Eventually(t, func() bool { return len(pd.Events()) >= 2 }, 10*time.Second, 10*time.Millisecond)
			time.Sleep(500 * time.Millisecond)
			post(sinkstest.NamedAlert("DiskFull", "critical", "web-1", "resolved", t1))
			time.Sleep(time.Second)
			t.Logf("events: %v", keysOf(pd))
			require.Equal(t, c.want, c.got(pd))
		})
	}
}

func TestDedupKeyTemplateReloadedWhileOpen(t *testing.T) {
	for _, failFirst := range []bool{false, true} {
		t.Run(map[bool]string{false: "open", true: "trigger failed"}[failFirst], func(t *testing.T) {
			pd := sinkstest.NewPagerDuty()
			defer pd.Close()
			cfg := func(v string) string {
				return pdConfig(pd.EventsURL(), "        dedup_key: '"+v+"-{{ .CommonLabels.instance }}'\n")
			}
			ts := startServer(t, cfg("v1"))
			t0 := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
			gk, gl := `{}:{alertname="DiskFull"}`, map[string]string{"alertname": "DiskFull"}
			post := func(a sinkstest.WebhookAlert) {
				code, body := ts.post(t, "/webhook", sinkstest.Webhook("oncall", gk, gl, a))
				require.Equal(t, 200, code, "%v", body)
			}
			al := func(st string, at time.Time, summary string) sinkstest.WebhookAlert {
				a := sinkstest.NamedAlert("DiskFull", "critical", "web-1", st, at)
				a.Annotations["summary"] = summary
				return a
			}
			if failFirst {
				pd.SetDown(true)
			}
			post(al("firing", t0, "s1"))
			if failFirst {
				require.Eventually(t, func() bool { return pd.Attempts() >= 1 }, 10*time.Second, 10*time.Millisecond)
			} else {
				require.Eventually(t, func() bool { return len(pd.Events()) == 1 }, 10*time.Second, 10*time.Millisecond)
			}
			require.NoError(t, os.WriteFile(ts.cfg, []byte(readFile(t, ts.cfg, "v1-", "v2-")), 0o600))
			code, body := ts.post(t, "/-/reload", nil)
			require.Equal(t, 200, code, "%v", body)
			pd.SetDown(false)
			post(al("firing", t0, "s2"))
			require.Eventually(t, func() bool { return len(pd.Events()) >= 2 || (failFirst && len(pd.Events()) >= 1) }, 10*time.Second, 10*time.Millisecond)
			time.Sleep(300 * time.Millisecond)
			post(al("resolved", t0, "s2"))
			time.Sleep(500 * time.Millisecond)
			post(al("firing", t0.Add(10*time.Minute), "s3"))
			time.Sleep(500 * time.Millisecond)
			t.Logf("events: %v", keysOf(pd))
			evs := keysOf(pd)
			require.Equal(t, "trigger:v2-web-1", evs[len(evs)-1])
			for _, e := range evs[:len(evs)-1] {
				require.True(t, strings.HasSuffix(e, ":v1-web-1"), "%v", evs)
			}
		})
	}
}

func readFile(t *testing.T, path, old, new string) string {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.ReplaceAll(string(b), old, new)
}
