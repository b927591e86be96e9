// Package receiver owns alertfan's HTTP server and its wiring: the intake
// endpoints, routing each alert to its receivers' targets, handing the work
// to the durable queue, health, readiness, reload, metrics and the admin API.
package receiver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/exporter-toolkit/web"
	yaml "go.yaml.in/yaml/v2"

	"github.com/alertfan/alertfan/receiver/config"
	"github.com/alertfan/alertfan/receiver/queue"
	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/backlog"
)

// Options configure Run.
type Options struct {
	ConfigFile      string
	ListenAddresses []string
	WebConfigFile   string
	Logger          *slog.Logger
	// Transport is used for every call to a target; nil means the default.
	Transport http.RoundTripper
	// OnListen, when set, is told each address the server listens on.
	OnListen func(addr net.Addr)
	// EnableLifecycle serves POST /-/reload (SIGHUP always reloads).
	EnableLifecycle bool
	// EnableAdminAPI serves the admin API's writes (dead-letter retry and
	// drop); reads are always served.
	EnableAdminAPI bool
	// CommitTimeout bounds an intake request's wait for its commit (then
	// 503) and the readiness probe; default 10s.
	CommitTimeout time.Duration
	// ProbeInterval is how often readiness commits an empty transaction
	// when intake has not committed; default 5s.
	ProbeInterval time.Duration
	// Handlers are extra routes (pattern → handler) on the server, behind
	// the same web layer; `alertfan --demo` serves /-/demo/ with them.
	Handlers map[string]http.Handler
	// ShutdownTimeout bounds graceful shutdown of HTTP and of running
	// deliveries.
	ShutdownTimeout time.Duration
}

type server struct {
	opts     Options
	logger   *slog.Logger
	store    *queue.Store
	reg      *prometheus.Registry
	metrics  *metrics
	rt       atomic.Pointer[runtime]
	limiters *sinks.Limiters
	bmetrics *backlog.Metrics
	reloadMu sync.Mutex
	// webBasicAuth is whether the web config asks for basic auth; then a
	// basic-auth password is the web user's, not the intake token.
	webBasicAuth atomic.Bool
	// inflight is the body bytes of intake requests being handled.
	inflight atomic.Int64
	health   commitHealth
	// pendingRestart names the settings the last reload could not apply.
	pendingRestart atomic.Pointer[[]string]
	tlogMu         sync.Mutex
	tlogs          map[string]*targetLog
}

// Run loads the config, opens the store, serves until ctx is done, then
// shuts down gracefully. SIGHUP reloads the config.
func Run(ctx context.Context, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if len(opts.ListenAddresses) == 0 {
		opts.ListenAddresses = []string{":9095"}
	}
	if opts.CommitTimeout <= 0 {
		opts.CommitTimeout = 10 * time.Second
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = 5 * time.Second
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	if opts.Transport == nil {
		opts.Transport = targetTransport()
	}
	logger := opts.Logger
	if opts.WebConfigFile != "" {
		if err := web.Validate(opts.WebConfigFile); err != nil {
			return fmt.Errorf("web config %s: %w", opts.WebConfigFile, err)
		}
	}
	cfg, err := config.Load(opts.ConfigFile)
	if err != nil {
		return err
	}
	webBasicAuth, err := webUsesBasicAuth(opts.WebConfigFile)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		versioncollector.NewCollector("alertfan"),
	)
	s := &server{
		opts:     opts,
		logger:   logger,
		reg:      reg,
		metrics:  newMetrics(reg),
		limiters: sinks.NewLimiters(),
		bmetrics: backlog.NewMetrics(reg),
	}
	s.webBasicAuth.Store(webBasicAuth)
	if (opts.EnableLifecycle || opts.EnableAdminAPI) && !webBasicAuth {
		logger.Warn("The lifecycle or admin API is enabled but --web.config.file sets no basic_auth_users: anyone who reaches the port can call it (unless TLS client certificates are required)")
	}
	store, err := queue.Open(ctx, storeOptions(cfg, slog.New(newQuietHandler(logger.Handler())), reg))
	if err != nil {
		return err
	}
	s.store = store
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), opts.ShutdownTimeout)
		defer cancel()
		if err := store.Close(sctx); err != nil {
			logger.Warn("Store did not close cleanly", "err", err)
		}
	}()
	startDeps := s.deps()
	startDeps.holdBroken = true
	rt, err := buildRuntime(ctx, cfg, startDeps)
	if err != nil {
		return fmt.Errorf("%s: %w", opts.ConfigFile, err)
	}
	s.install(rt)
	s.metrics.reloadOK.Set(1)
	s.metrics.reloadTimestamp.SetToCurrentTime()
	if err := store.Start(ctx); err != nil {
		return err
	}
	s.health.ok, s.health.since, s.health.okAt = true, time.Now(), time.Now()
	s.metrics.storeCanCommit.Set(1)
	go s.probeLoop(ctx)

	srv := &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, len(opts.ListenAddresses))
	for _, addr := range opts.ListenAddresses {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		if opts.OnListen != nil {
			opts.OnListen(l.Addr())
		}
		flags := &web.FlagConfig{
			WebListenAddresses: &[]string{addr},
			WebSystemdSocket:   new(bool),
			WebConfigFile:      &opts.WebConfigFile,
		}
		go func() { serveErr <- web.Serve(l, srv, flags, logger) }()
	}
	logger.Info("alertfan started", "listen", opts.ListenAddresses, "storage", cfg.Storage.Driver, "targets", len(rt.targets))

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			if err := s.reload(ctx); err != nil {
				logger.Error("Reload failed; keeping the running configuration", "err", err)
			}
		case err := <-serveErr:
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http server: %w", err)
			}
		case <-ctx.Done():
			logger.Info("Shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), opts.ShutdownTimeout)
			defer cancel()
			// Stop taking requests first so nothing is accepted that the
			// store can no longer commit.
			if err := srv.Shutdown(sctx); err != nil {
				logger.Warn("HTTP shutdown", "err", err)
			}
			return nil
		}
	}
}

func storeOptions(cfg *config.Config, logger *slog.Logger, reg prometheus.Registerer) queue.Options {
	d := cfg.Delivery
	return queue.Options{
		Driver:       cfg.Storage.Driver,
		Path:         cfg.Storage.Path,
		DSN:          string(cfg.Storage.DSN),
		MaxConns:     cfg.Storage.MaxConnections,
		Workers:      d.Workers,
		MaxAttempts:  d.MaxAttempts,
		MinBackoff:   time.Duration(d.MinBackoff),
		MaxBackoff:   time.Duration(d.MaxBackoff),
		JobTimeout:   time.Duration(d.JobTimeout),
		RescueAfter:  time.Duration(d.RescueAfter),
		PollInterval: time.Duration(d.PollInterval),
		Logger:       logger,
		Registerer:   reg,
	}
}

func (s *server) deps() deps {
	return deps{limiters: s.limiters, transport: s.opts.Transport, logger: s.logger, issues: s.store, bmetrics: s.bmetrics, targetReady: s.metrics.targetReady}
}

func (s *server) install(rt *runtime) {
	old := s.rt.Swap(rt)
	s.store.SetTargets(s.logged(rt.targets))
	counts := map[string]float64{}
	for _, t := range rt.targets {
		counts[t.Kind]++
	}
	for _, k := range queue.Kinds {
		s.metrics.targets.WithLabelValues(k).Set(counts[k])
	}
	if old != nil {
		for id, t := range old.targets {
			if _, kept := rt.targets[id]; !kept {
				s.metrics.targetReady.DeleteLabelValues(id, t.Kind)
			}
		}
	}
	for id, t := range rt.targets {
		ready := 1.0
		if g, ok := t.Sink.(*gatedSink); ok && g.notReady() != "" {
			ready = 0
		}
		s.metrics.targetReady.WithLabelValues(id, t.Kind).Set(ready)
	}
	for name, ts := range rt.receivers {
		s.metrics.routed.WithLabelValues(name)
		if len(ts) == 0 {
			s.metrics.dropped.WithLabelValues(name)
		}
		for _, t := range ts {
			if t.Kind == "backlog" {
				s.bmetrics.Init(name)
			}
		}
	}
}

// reload swaps in a new config only if all of it builds; otherwise the
// running one stays and the reload gauge goes to 0.
func (s *server) reload(ctx context.Context) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	err := s.reloadLocked(ctx)
	if b, werr := webUsesBasicAuth(s.opts.WebConfigFile); werr == nil {
		s.webBasicAuth.Store(b)
	}
	if err != nil {
		s.metrics.reloadOK.Set(0)
		return err
	}
	s.metrics.reloadOK.Set(1)
	s.metrics.reloadTimestamp.SetToCurrentTime()
	s.logger.Info("Configuration reloaded", "file", s.opts.ConfigFile)
	return nil
}

func (s *server) reloadLocked(ctx context.Context) error {
	cfg, err := config.Load(s.opts.ConfigFile)
	if err != nil {
		return err
	}
	// Storage and delivery settings are fixed for the process (the store
	// and its workers are built from them at start): the rest of the file
	// is applied, these keep their running values, and each one that
	// differs is reported by name until a restart applies it.
	old := s.rt.Load().cfg
	restart := append(changedKeys("storage", old.Storage, cfg.Storage), changedKeys("delivery", old.Delivery, cfg.Delivery)...)
	cfg.Storage, cfg.Delivery = old.Storage, old.Delivery
	rt, err := buildRuntime(ctx, cfg, s.deps())
	if err != nil {
		return fmt.Errorf("%s: %w", s.opts.ConfigFile, err)
	}
	s.install(rt)
	s.metrics.restartRequired.Reset()
	for _, k := range restart {
		s.metrics.restartRequired.WithLabelValues(k).Set(1)
	}
	s.pendingRestart.Store(&restart)
	if len(restart) > 0 {
		s.logger.Warn("Configuration reloaded, but these settings need a restart to take effect; the running values stay until then", "keys", restart)
	}
	return nil
}

// changedKeys names, as prefix.yaml_key, each field of two config structs
// that differs. Values are never part of the answer (a DSN is a secret).
func changedKeys(prefix string, a, b any) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []string
	for i := 0; i < va.NumField(); i++ {
		f := va.Type().Field(i)
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if name == "" || name == "-" {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, prefix+"."+name)
		}
	}
	return out
}

// webUsesBasicAuth reads whether the exporter-toolkit web config has
// basic_auth_users. (exporter-toolkit re-reads the file on each request;
// alertfan on start and on reload.)
func webUsesBasicAuth(file string) (bool, error) {
	if file == "" {
		return false, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return false, fmt.Errorf("web config %s: %w", file, err)
	}
	var c struct {
		Users map[string]any `yaml:"basic_auth_users"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return false, fmt.Errorf("web config %s: %w", file, err)
	}
	return len(c.Users) > 0, nil
}

// targetTransport keeps enough idle connections per target host for the
// concurrent deliveries; Go's default keeps 2 and would redial constantly.
func targetTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 512
	t.MaxIdleConnsPerHost = 128
	t.IdleConnTimeout = 90 * time.Second
	return t
}
