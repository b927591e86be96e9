package receiver

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/alertfan/alertfan/receiver/config"
	"github.com/alertfan/alertfan/receiver/queue"
	"github.com/alertfan/alertfan/receiver/route"
	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/backlog"
	"github.com/alertfan/alertfan/sinks/pagerduty"
)

// notifier is what the receiver needs from a sink beyond delivery.
type notifier interface {
	queue.Sink
	// Grouped reports whether work is keyed by Alertmanager group rather
	// than by alert.
	Grouped() bool
	// Destination names where the config sends (sinks.DestinationID).
	Destination() string
}

var (
	_ notifier = (*pagerduty.Notifier)(nil)
	_ notifier = (*backlog.Notifier)(nil)
)

type target struct {
	queue.Target
	grouped bool
}

// runtime is everything derived from one config; a reload builds a new one
// and swaps it in whole, so a request sees one config from start to end.
type runtime struct {
	cfg       *config.Config
	router    *route.Route
	receivers map[string][]target
	targets   map[string]queue.Target
	tokenSums [][32]byte
	hasToken  bool
	// pdKeys maps sha256(routing key) to its configured name.
	pdKeys    map[[32]byte]string
	pdLimiter *rate.Limiter
	// loadedAt is when this config was loaded (start or reload).
	loadedAt time.Time
	// warnings are what the config allows but users rarely mean
	// (sharedBacklogProjects), logged at load and printed by check-config.
	warnings []string
}

// deps are what building a runtime needs beyond the config.
type deps struct {
	limiters  *sinks.Limiters
	transport http.RoundTripper
	logger    *slog.Logger
	issues    backlog.IssueStore
	bmetrics  *backlog.Metrics
	offline   bool
	// holdBroken, at start, keeps a Backlog target whose names the API
	// refuses (401, 404, a missing name) as a target that is not ready
	// instead of failing; a reload still refuses such a config.
	holdBroken  bool
	targetReady *prometheus.GaugeVec
}

// TargetID names one destination: stable across reloads while the
// receiver's list of configs keeps its order.
func TargetID(receiver, kind string, index int) string {
	return fmt.Sprintf("%s/%s/%d", receiver, kind, index)
}

func buildRuntime(ctx context.Context, cfg *config.Config, d deps) (*runtime, error) {
	tree, err := route.New(cfg.Route)
	if err != nil {
		return nil, err
	}
	tmpl, err := loadTemplates(cfg.Templates)
	if err != nil {
		return nil, err
	}
	rt := &runtime{
		cfg:       cfg,
		router:    tree,
		receivers: map[string][]target{},
		targets:   map[string]queue.Target{},
		pdKeys:    map[[32]byte]string{},
		loadedAt:  time.Now().UTC(),
	}
	d.limiters.Reset()
	for _, r := range cfg.Receivers {
		rt.receivers[r.Name] = nil
		for i, pc := range r.PagerdutyConfigs {
			id := TargetID(r.Name, "pagerduty", i)
			n, err := pagerduty.New(pc, tmpl, d.limiters, d.transport, d.logger.With("target", id), pagerduty.WithTarget(id))
			if err != nil {
				return nil, fmt.Errorf("receivers %q: pagerduty_configs[%d]: %w", r.Name, i, err)
			}
			rt.add(r.Name, id, "pagerduty", n)
		}
		for i, bc := range r.BacklogConfigs {
			id := TargetID(r.Name, "backlog", i)
			bd := backlog.Deps{
				ID: id, Template: tmpl, Limiters: d.limiters, Transport: d.transport,
				Logger: d.logger.With("target", id), Issues: d.issues, Metrics: d.bmetrics, Offline: d.offline,
				ClosedIssues: time.Duration(cfg.Storage.Retention.ClosedIssues),
			}
			n, err := backlog.New(ctx, bc, bd)
			if err != nil && d.holdBroken && !d.offline {
				// Templates and config are fine if it builds offline: the
				// API refused; hold the target, not the process.
				bd.Offline = true
				if off, oerr := backlog.New(ctx, bc, bd); oerr == nil {
					rt.add(r.Name, id, "backlog", newGatedSink(off, id, off.Check, err, d.logger, d.targetReady.WithLabelValues(id, "backlog")))
					continue
				}
			}
			if err != nil {
				return nil, fmt.Errorf("receivers %q: backlog_configs[%d]: %w", r.Name, i, err)
			}
			rt.add(r.Name, id, "backlog", n)
		}
	}
	// bearer_token_file may list several tokens, one per line, so that a
	// token can be rotated without refusing anyone: add the new one,
	// reload, move the senders over, remove the old one, reload.
	for _, t := range strings.Split(string(cfg.Intake.BearerToken), "\n") {
		if t = strings.TrimSpace(t); t != "" {
			rt.tokenSums = append(rt.tokenSums, sha256.Sum256([]byte(t)))
		}
	}
	rt.hasToken = len(rt.tokenSums) > 0
	rt.warnings = sharedBacklogProjects(cfg, rt)
	for _, w := range rt.warnings {
		d.logger.Warn(w)
	}
	for name, k := range cfg.Intake.PagerDuty.RoutingKeys {
		rt.pdKeys[sha256.Sum256([]byte(k))] = name
	}
	if eps := cfg.Intake.EventsPerSecond; eps > 0 {
		rt.pdLimiter = rate.NewLimiter(rate.Limit(eps), max(1, int(eps)))
	}
	return rt, nil
}

// sharedBacklogProjects warns of Backlog targets of different receivers
// that write to one project in one mode: each keeps its own issue per
// alert, so an alert that reaches both — a route with continue: true, or a
// Mackerel or PagerDuty alert whose severity moves it from one receiver to
// the other — gets two issues there (two fresh helpers). Put one
// backlog_configs entry in a receiver both routes reach instead.
func sharedBacklogProjects(cfg *config.Config, rt *runtime) []string {
	by := map[string][]string{}
	var dests []string
	for _, r := range cfg.Receivers {
		for i := range r.BacklogConfigs {
			id := TargetID(r.Name, "backlog", i)
			t, ok := rt.targets[id]
			if !ok || t.Destination == "" {
				continue
			}
			if len(by[t.Destination]) == 0 {
				dests = append(dests, t.Destination)
			}
			by[t.Destination] = append(by[t.Destination], id)
		}
	}
	var out []string
	for _, d := range dests {
		if ids := by[d]; len(ids) > 1 {
			out = append(out, fmt.Sprintf("Backlog targets %s write to the same project in the same mode and keep an issue each per alert: an alert that reaches more than one of them (a route with continue: true, or a severity that moves it between receivers) gets an issue from each; route such alerts to one receiver with one backlog_configs entry",
				strings.Join(ids, ", ")))
		}
	}
	return out
}

func (rt *runtime) add(receiver, id, kind string, n notifier) {
	t := target{Target: queue.Target{ID: id, Kind: kind, Receiver: receiver, Sink: n, Destination: n.Destination()}, grouped: n.Grouped()}
	rt.receivers[receiver] = append(rt.receivers[receiver], t)
	rt.targets[id] = t.Target
}

// loadTemplates loads Alertmanager's default templates, alertfan's Backlog
// defaults, then the user's files, so users can override either.
func loadTemplates(files []string) (*template.Template, error) {
	tmpl, err := sinks.FromGlobs(nil, backlog.TemplateFuncs)
	if err != nil {
		return nil, fmt.Errorf("default templates: %w", err)
	}
	if err := tmpl.Parse(strings.NewReader(backlog.DefaultTemplates)); err != nil {
		return nil, fmt.Errorf("backlog default templates: %w", err)
	}
	for _, f := range files {
		if err := tmpl.FromGlob(f); err != nil {
			return nil, fmt.Errorf("templates: %s: %w", f, err)
		}
	}
	return tmpl, nil
}
