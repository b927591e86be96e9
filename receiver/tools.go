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
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
	fmt.Fprintf(w, "%s: SUCCESS: %d receivers, %d targets, storage %s\n", file, len(cfg.Receivers), len(rt.targets), cfg.Storage.Driver)
	if !online {
		return nil
	}
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
	return nil
}

// RoutesTest prints the receivers a label set reaches, like
// `amtool config routes test`.
func RoutesTest(file string, labels []string, w io.Writer) ([]string, error) {
	cfg, err := config.Load(file)
	if err != nil {
		return nil, err
	}
	rt, err := buildRuntime(context.Background(), cfg, deps{
		limiters: sinks.NewLimiters(), logger: slog.New(slog.DiscardHandler),
		bmetrics: backlog.NewMetrics(prometheus.NewRegistry()), offline: true,
	})
	if err != nil {
		return nil, err
	}
	ls := map[string]string{}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q: want name=value", l)
		}
		ls[k] = strings.Trim(v, `"`)
	}
	recv := rt.router.Match(ls)
	fmt.Fprintln(w, strings.Join(recv, ","))
	return recv, nil
}

// AdminClient calls a running alertfan's admin API.
type AdminClient struct {
	URL   string
	Token string
	HTTP  *http.Client
}

func (c *AdminClient) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.URL, "/")+path, nil)
	if err != nil {
		return err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
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

// ListDead prints the dead letters.
func (c *AdminClient) ListDead(ctx context.Context, w io.Writer) error {
	var out struct {
		Data []queue.DeadLetter `json:"data"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/dead-letters", &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTARGET\tKEY\tREASON\tATTEMPTS\tAT\tERROR")
	for _, d := range out.Data {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.Target, d.Key, d.Reason, d.Attempts, d.CreatedAt.Format(time.RFC3339), oneLine(d.Error, 120))
	}
	return tw.Flush()
}

// RetryDead re-queues one dead letter, or all when id is "".
func (c *AdminClient) RetryDead(ctx context.Context, id string, w io.Writer) error {
	path := "/api/v1/dead-letters/retry"
	if id != "" {
		path = "/api/v1/dead-letters/" + id + "/retry"
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

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// HealthCheck asks a running alertfan whether it is healthy.
func HealthCheck(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url, "/")+"/-/healthy", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/-/healthy: %s", url, resp.Status)
	}
	return nil
}
