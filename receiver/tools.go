package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	commoncfg "github.com/prometheus/common/config"

	"github.com/alertfan/alertfan/receiver/config"
	"github.com/alertfan/alertfan/receiver/queue"
	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/backlog"
	"github.com/alertfan/alertfan/sinks/pagerduty"
)

// CheckConfig validates a config file: syntax, defaults, references,
// templates. With online it also resolves every Backlog name through the
// API and checks that each PagerDuty URL answers.
func CheckConfig(ctx context.Context, file string, online bool, w io.Writer) error {
	cfg, err := config.Load(file)
	if err != nil {
		return err
	}
	d := deps{
		limiters: sinks.NewLimiters(),
		logger:   slog.New(slog.DiscardHandler),
		bmetrics: backlog.NewMetrics(prometheus.NewRegistry()),
		offline:  true,
	}
	rt, err := buildRuntime(ctx, cfg, d)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	summary := fmt.Sprintf("%d receivers, %d targets, storage %s", len(cfg.Receivers), len(rt.targets), cfg.Storage.Driver)
	for _, warning := range rt.warnings {
		fmt.Fprintf(w, "%s: WARNING: %s\n", file, warning)
	}
	if !online {
		fmt.Fprintf(w, "%s: SUCCESS: %s\n", file, summary)
		return nil
	}
	// SUCCESS only once every target answered: a script that looks for
	// it must not find it above a FAILED target.
	fmt.Fprintf(w, "%s: valid: %s; checking each target online\n", file, summary)
	var errs []string
	for _, id := range slices.Sorted(maps.Keys(rt.targets)) {
		t := rt.targets[id]
		octx, cancel := context.WithTimeout(ctx, 20*time.Second)
		var cerr error
		switch n := t.Sink.(type) {
		case *backlog.Notifier:
			cerr = n.Check(octx)
		case *pagerduty.Notifier:
			cerr = n.Ping(octx)
		}
		cancel()
		if cerr != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", id, cerr))
			fmt.Fprintf(w, "  %s: FAILED: %v\n", id, cerr)
			continue
		}
		fmt.Fprintf(w, "  %s: OK\n", id)
	}
	if len(errs) > 0 {
		return errors.New("online check failed: " + strings.Join(errs, "; "))
	}
	fmt.Fprintf(w, "%s: SUCCESS: %s, every target answered\n", file, summary)
	return nil
}

// NewHTTPClient builds the client the CLI talks to a running alertfan
// with: prometheus/common's HTTP client config (basic auth, bearer token
// file, TLS CA and client certificate, proxy), as amtool's
// --http.config.file. An empty file is a plain client.
func NewHTTPClient(file string) (*http.Client, error) {
	if file == "" {
		return &http.Client{Timeout: 30 * time.Second}, nil
	}
	cfg, _, err := commoncfg.LoadHTTPConfigFile(file)
	if err != nil {
		return nil, fmt.Errorf("http config %s: %w", file, err)
	}
	c, err := commoncfg.NewClientFromConfig(*cfg, "alertfan")
	if err != nil {
		return nil, fmt.Errorf("http config %s: %w", file, err)
	}
	c.Timeout = 30 * time.Second
	return c, nil
}

// AdminClient calls a running alertfan's admin API.
type AdminClient struct {
	URL  string
	HTTP *http.Client
}

func (c *AdminClient) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.URL, "/")+path, nil)
	if err != nil {
		return err
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			return fmt.Errorf("%s %s: %d: %s", method, path, resp.StatusCode, eb.Error)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return json.Unmarshal(b, out)
}

// QueueRow is one line of `alertfan queue list`: a dead letter (ID set)
// or a delivery still owed.
type QueueRow struct {
	ID          int64             `json:"id,omitempty"`
	State       string            `json:"state"`
	Target      string            `json:"target"`
	Key         string            `json:"key"`
	Alertname   string            `json:"alertname,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Attempts    int               `json:"attempts,omitempty"`
	Reason      string            `json:"reason,omitempty"`
	Error       string            `json:"error,omitempty"`
	NextAttempt *time.Time        `json:"next_attempt,omitempty"`
	At          time.Time         `json:"at"`
}

// ListOptions filter `alertfan queue list`.
type ListOptions struct {
	State    string // "" (all), pending, retrying, dead
	Receiver string
	Output   string // table (default) or json
}

// List prints the queue: deliveries owed and dead letters.
func (c *AdminClient) List(ctx context.Context, o ListOptions, w io.Writer) error {
	var rows []QueueRow
	q := url.Values{}
	if o.Receiver != "" {
		q.Set("receiver", o.Receiver)
	}
	if o.State == "" || o.State == queue.StatePending || o.State == queue.StateRetrying {
		var out struct {
			Data []queue.Entry `json:"data"`
		}
		if err := c.do(ctx, http.MethodGet, "/api/v1/queue?"+q.Encode(), &out); err != nil {
			return err
		}
		for _, e := range out.Data {
			if o.State != "" && e.State != o.State {
				continue
			}
			rows = append(rows, QueueRow{State: e.State, Target: e.Target, Key: e.Key, Alertname: e.Alertname, Labels: e.Labels,
				Attempts: e.Attempts, Error: e.LastError, NextAttempt: e.NextAttempt, At: e.UpdatedAt})
		}
	}
	if o.State == "" || o.State == queue.StateDead {
		var out struct {
			Data []queue.DeadLetter `json:"data"`
		}
		if err := c.do(ctx, http.MethodGet, "/api/v1/dead-letters?"+q.Encode(), &out); err != nil {
			return err
		}
		for _, d := range out.Data {
			rows = append(rows, deadRow(d))
		}
	}
	if o.Output == "json" {
		if rows == nil {
			rows = []QueueRow{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tTARGET\tALERTNAME\tLABELS\tATTEMPTS\tNEXT ATTEMPT\tERROR")
	for _, r := range rows {
		id, next := "-", "-"
		if r.ID > 0 {
			id = strconv.FormatInt(r.ID, 10)
		}
		if r.NextAttempt != nil {
			next = r.NextAttempt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", id, r.State, r.Target, orDash(r.Alertname), oneLine(formatLabels(r.Labels), 80), r.Attempts, next, oneLine(r.Error, 120))
	}
	return tw.Flush()
}

func deadRow(d queue.DeadLetter) QueueRow {
	return QueueRow{ID: d.ID, State: queue.StateDead, Target: d.Target, Key: d.Key, Alertname: d.Alertname, Labels: d.Labels,
		Attempts: d.Attempts, Reason: d.Reason, Error: d.Error, At: d.CreatedAt}
}

// Show prints one dead letter in full.
func (c *AdminClient) Show(ctx context.Context, id, output string, w io.Writer) error {
	var out struct {
		Data queue.DeadLetter `json:"data"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/dead-letters/"+url.PathEscape(id), &out); err != nil {
		return err
	}
	r := deadRow(out.Data)
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID:\t%d\nState:\t%s\nTarget:\t%s\nAlertname:\t%s\nLabels:\t%s\nIdentity key:\t%s\nAttempts:\t%d\nReason:\t%s\nLast error:\t%s\nDead since:\t%s\nNext attempt:\tnone (retry it with: alertfan queue retry %d)\n",
		r.ID, r.State, r.Target, orDash(r.Alertname), formatLabels(r.Labels), r.Key, r.Attempts, r.Reason, oneLine(r.Error, 2000), r.At.Format(time.RFC3339), r.ID)
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// formatLabels renders labels as Alertmanager does: {a="b", c="d"}.
func formatLabels(ls map[string]string) string {
	if len(ls) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(ls))
	for _, k := range slices.Sorted(maps.Keys(ls)) {
		parts = append(parts, k+"="+strconv.Quote(ls[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// RetryDead re-queues one dead letter, or all when id is "".
func (c *AdminClient) RetryDead(ctx context.Context, id string, w io.Writer) error {
	path := "/api/v1/dead-letters/retry"
	if id != "" {
		path = "/api/v1/dead-letters/" + url.PathEscape(id) + "/retry"
	}
	var out struct {
		Retried int `json:"retried"`
	}
	if err := c.do(ctx, http.MethodPost, path, &out); err != nil {
		return err
	}
	fmt.Fprintf(w, "re-queued %d\n", out.Retried)
	return nil
}

// DropDead deletes one dead letter.
func (c *AdminClient) DropDead(ctx context.Context, id string, w io.Writer) error {
	var out struct {
		Dropped int `json:"dropped"`
	}
	if err := c.do(ctx, http.MethodDelete, "/api/v1/dead-letters/"+url.PathEscape(id), &out); err != nil {
		return err
	}
	fmt.Fprintf(w, "dropped %d\n", out.Dropped)
	return nil
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// HealthCheck asks a running alertfan whether it is healthy, with the
// client from NewHTTPClient (nil: a plain one).
func HealthCheck(ctx context.Context, baseURL string, hc *http.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(baseURL, "/")+"/-/healthy", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/-/healthy: %s", baseURL, resp.Status)
	}
	return nil
}
