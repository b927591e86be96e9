package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// demoBacklogKey is the API key the in-process fake Backlog accepts.
const demoBacklogKey = "demo-backlog-api-key"

// demoConfig routes every alert to both demo destinations; %s are the fake
// PagerDuty events URL and the fake Backlog's root URL.
const demoConfig = `# alertfan --demo: every alert goes to a fake PagerDuty and a fake Backlog
# served by this process on loopback.
storage:
  driver: sqlite
  path: %s
route:
  receiver: demo
receivers:
  - name: demo
    pagerduty_configs:
      - routing_key: demo0routing0key0000000000000000
        url: %s
    backlog_configs:
      - api_url: %s
        api_key: ` + demoBacklogKey + `
        project: OPS
        issue_type: Bug
        resolution: Fixed
`

// demo is alertfan --demo: the fake PagerDuty and Backlog the tests use,
// on loopback ports, and a config that sends every alert to both.
type demo struct {
	pd     *sinkstest.PagerDuty
	bl     *sinkstest.Backlog
	dir    string
	config string
}

func startDemo(logger *slog.Logger) (*demo, error) {
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pl.Close()
		return nil, err
	}
	d := &demo{pd: sinkstest.NewPagerDutyOn(pl), bl: sinkstest.NewBacklogOn(bl, demoBacklogKey)}
	d.pd.OnEvent = func(e sinkstest.PDEvent) {
		logger.Info("Demo PagerDuty received an event", "action", e.EventAction, "dedup_key", e.DedupKey)
	}
	d.bl.AfterCreate = func(is *sinkstest.BacklogIssue) {
		logger.Info("Demo Backlog created an issue", "key", is.Key, "summary", is.Summary)
	}
	if d.dir, err = os.MkdirTemp("", "alertfan-demo"); err != nil {
		d.close()
		return nil, err
	}
	d.config = filepath.Join(d.dir, "config.yml")
	store, err := filepath.Abs(filepath.Join("data", "alertfan-demo.db"))
	if err != nil {
		d.close()
		return nil, err
	}
	cfg := fmt.Sprintf(demoConfig, store, d.pd.EventsURL(), d.bl.URL)
	if err := os.WriteFile(d.config, []byte(cfg), 0o600); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// handlers show what the demo destinations received.
func (d *demo) handlers() map[string]http.Handler {
	return map[string]http.Handler{
		"GET /-/demo/events": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { writeDemoJSON(w, d.pd.Events()) }),
		"GET /-/demo/issues": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			out := []demoIssue{}
			for _, is := range d.bl.Issues() {
				out = append(out, demoIssue{Key: is.Key, Summary: is.Summary, Status: d.bl.StatusName(is.StatusID), Description: is.Description, Comments: is.Comments, Created: is.Created})
			}
			writeDemoJSON(w, out)
		}),
	}
}

// demoIssue is a Backlog issue as /-/demo/issues shows it.
type demoIssue struct {
	Key         string    `json:"key"`
	Summary     string    `json:"summary"`
	Status      string    `json:"status"`
	Description string    `json:"description"`
	Comments    []string  `json:"comments,omitempty"`
	Created     time.Time `json:"created"`
}

func (d *demo) close() {
	d.pd.Close()
	d.bl.Close()
	if d.dir != "" {
		os.RemoveAll(d.dir)
	}
}

func writeDemoJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v) //nolint:errcheck
}
