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

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/exporter-toolkit/web"
	yaml "go.yaml.in/yaml/v2"

	"github.com/alertfan/alertfan/internal/logrun"
	"github.com/alertfan/alertfan/receiver/config"
	"github.com/alertfan/alertfan/receiver/queue"
	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/backlog"
)

// Options configure Run.
type Options struct {
	ConfigFile      string
	ListenAddresses []string
	// SystemdSocket serves on the sockets passed by systemd socket
	// activation (LISTEN_FDS and LISTEN_PID, sd_listen_fds(3)) instead of
	// ListenAddresses: exporter-toolkit's --web.systemd-socket.
	SystemdSocket bool
	WebConfigFile string
	Logger        *slog.Logger
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
	// ShutdownTimeout bounds graceful shutdown as a whole: intake requests
	// in flight and calls in flight to targets (DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
}

type server struct {
	// expireFrom is when this process started: resolve_after expires
	// nothing before it has been up that long (expire).
	expireFrom time.Time
	// expireWake starts an expire pass at once (after a reload).
	expireWake chan struct{}
	// retiredExpiry holds, per retired id ("retired/<destination>"), the
	// resolve_after its receiver had when a reload removed the
	// destination: its open alerts still expire (expire). Written by
	// install under reloadMu.
	retiredExpiry atomic.Pointer[map[string]retiredTarget]
	// unavailableRun and differRun collapse the log of intake requests
	// answered 503 (the store cannot commit; this replica's destinations
	// differ from the deployment's) to a line a minute.
	unavailableRun, differRun logrun.Run
	// routing is held (read) by each intake request from routing to
	// commit, and (write) by install while a load moves stored work and
	// swaps the config in.
	routing sync.RWMutex

	opts     Options
	logger   *slog.Logger
	store    *queue.Store
	reg      *prometheus.Registry
	metrics  *metrics
	rt       atomic.Pointer[runtime]
	limiters *sinks.Limiters
	bmetrics *backlog.Metrics
	reloadMu sync.Mutex
	shutDown atomic.Bool
	// webBasicAuth is whether the web config asks for basic auth; then a
	// basic-auth password is the web user's, not the intake token.
	webBasicAuth atomic.Bool
	// inflight is the body bytes of intake requests being handled.
	inflight atomic.Int64
	health   commitHealth
	// pendingRestart names the settings the last reload could not apply.
	pendingRestart atomic.Pointer[[]string]
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
		opts.ShutdownTimeout = DefaultShutdownTimeout
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
	s := &server{expireWake: make(chan struct{}, 1),
		opts:     opts,
		logger:   logger,
		reg:      reg,
		metrics:  newMetrics(reg),
		limiters: sinks.NewLimiters(),
		bmetrics: backlog.NewMetrics(reg),
	}
	s.webBasicAuth.Store(webBasicAuth)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "alertfan_intake_inflight_body_bytes",
		Help: "Body bytes of intake requests read and being handled now (bounded by intake.max_inflight_body_bytes).",
	}, func() float64 { return float64(s.inflight.Load()) }))
	if (opts.EnableLifecycle || opts.EnableAdminAPI) && !webBasicAuth {
		logger.Warn("The lifecycle or admin API is enabled but --web.config.file sets no basic_auth_users: anyone who reaches the port can call it (unless TLS client certificates are required)")
	}
	store, err := queue.Open(ctx, storeOptions(cfg, slog.New(newQuietHandler(logger.Handler())), reg))
	if err != nil {
		return err
	}
	s.store = store
	if b := store.RateBudget(); b != nil {
		// Replicas on one PostgreSQL database share each key's budget.
		s.limiters.SetBudget(b)
	}
	defer func() {
		// On an error path it stops what started; after shutdown (which
		// closes the store itself, bounded by the timeout) nothing is left.
		if s.shutDown.Load() {
			return
		}
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
	if err := s.install(ctx, rt); err != nil {
		return err
	}
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
	listeners, err := listen(opts)
	if err != nil {
		return err
	}
	serveErr := make(chan error, len(listeners))
	var addrs []string
	for _, l := range listeners {
		if opts.OnListen != nil {
			opts.OnListen(l.Addr())
		}
		addrs = append(addrs, l.Addr().String())
		flags := &web.FlagConfig{
			WebListenAddresses: &[]string{l.Addr().String()},
			WebSystemdSocket:   new(bool),
			WebConfigFile:      &opts.WebConfigFile,
		}
		go func() { serveErr <- web.Serve(l, srv, flags, logger) }()
	}
	s.expireFrom = time.Now()
	go s.expireLoop(ctx)
	logger.Info("alertfan started", "listen", addrs, "systemd_socket", opts.SystemdSocket, "storage", cfg.Storage.Driver, "targets", len(rt.targets))

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
			s.shutdown(srv, store)
			return nil
		}
	}
}

// listen opens the server's listeners: one per listen address, or the
// sockets a socket-activation launcher passed (systemd's LISTEN_FDS for
// this process's LISTEN_PID; https://www.freedesktop.org/software/systemd/man/latest/sd_listen_fds.html).
// Errors name the address, or say that no socket was passed.
func listen(opts Options) ([]net.Listener, error) {
	if opts.SystemdSocket {
		passed, err := activation.Listeners()
		if err != nil {
			return nil, fmt.Errorf("--web.systemd-socket: %w", err)
		}
		var out []net.Listener
		for _, l := range passed {
			if l != nil { // a passed file that is no stream socket
				out = append(out, l)
			}
		}
		if len(out) == 0 {
			return nil, errors.New("--web.systemd-socket: no listening socket was passed to this process (LISTEN_FDS and LISTEN_PID unset or for another process)")
		}
		return out, nil
	}
	var out []net.Listener
	for _, addr := range opts.ListenAddresses {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		out = append(out, l)
	}
	return out, nil
}

// DefaultShutdownTimeout fits Docker's default 10 s stop grace period with
// room for the process to exit.
const DefaultShutdownTimeout = 7 * time.Second

// shutdown stops within opts.ShutdownTimeout: readiness goes false and
// workers start no new call at once; intake requests in flight are
// answered (new ones are refused) while calls in flight finish; what is
// left at the deadline is cancelled and stays in the queue for the next
// start. Nothing accepted is lost, nothing is left running.
func (s *server) shutdown(srv *http.Server, store *queue.Store) {
	s.shutDown.Store(true)
	start := time.Now()
	s.logger.Info("Shutting down: intake closed, finishing calls in flight", "timeout", s.opts.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- store.StopWorkers(sctx) }()
	if err := srv.Shutdown(sctx); err != nil {
		s.logger.Warn("HTTP shutdown did not finish in time", "err", err)
	}
	if err := <-stopped; err != nil {
		s.logger.Warn("Deliveries still running at the shutdown deadline were cancelled; they are retried after restart", "err", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- store.Close(sctx) }()
	// Cancelled calls get a second to be recorded as such; the process
	// never takes longer than the timeout plus that second.
	late := time.NewTimer(time.Until(start.Add(s.opts.ShutdownTimeout + time.Second)))
	defer late.Stop()
	select {
	case err := <-closed:
		if err != nil {
			s.logger.Warn("Store did not close cleanly", "err", err)
		}
	case <-late.C:
		// The store hangs (PostgreSQL away): what was not recorded stays
		// in the queue, and the process exits on time.
		s.logger.Warn("Store did not close within the shutdown timeout; exiting anyway")
	}
	s.logger.Info("Stopped", "took", time.Since(start).Round(time.Millisecond))
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
		MaxAge:       time.Duration(d.MaxAge),
		Retention:    retention(cfg.Storage.Retention),
		NoHistory:    !cfg.Storage.History,
		Logger:       logger,
		Registerer:   reg,
	}
}

func (s *server) deps() deps {
	return deps{limiters: s.limiters, transport: s.opts.Transport, logger: s.logger, issues: s.store, bmetrics: s.bmetrics, targetReady: s.metrics.targetReady}
}

func (s *server) install(ctx context.Context, rt *runtime) error {
	// No intake routes while the stored work moves to the new ids and
	// the new config is swapped in (see accept).
	s.routing.Lock()
	if err := s.store.SetTargets(ctx, rt.targets); err != nil {
		s.routing.Unlock()
		return err
	}
	old := s.rt.Swap(rt)
	s.routing.Unlock()
	s.retire(old, rt)
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
	return nil
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
	// A resolve_after set or lowered by the reload applies now, not after
	// the pass the old config scheduled (up to 30 s away).
	select {
	case s.expireWake <- struct{}{}:
	default:
	}
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
	if err := s.install(ctx, rt); err != nil {
		return err
	}
	// Queued work meets the new rate limits now, not at the times planned
	// under the old ones.
	if err := s.store.Replan(ctx); err != nil {
		s.logger.Warn("Could not re-plan queued work after the reload; it runs at its planned times", "err", err)
	}
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
// Calls beyond MaxConnsPerHost wait for a connection instead of dialing
// one that the idle pool would close again: with every worker on one
// target (up to workers × 16 calls), that churn was 7% of a drain's CPU.
func targetTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 512
	t.MaxIdleConnsPerHost = 128
	t.MaxConnsPerHost = 128
	t.IdleConnTimeout = 90 * time.Second
	return t
}

// retention passes storage.retention to the store.
func retention(r config.RetentionConfig) queue.Retention {
	return queue.Retention{
		CompletedJobs:  time.Duration(r.CompletedJobs),
		ResolvedStates: time.Duration(r.ResolvedStates),
		ClosedIssues:   time.Duration(r.ClosedIssues),
		DeadLetters:    time.Duration(r.DeadLetters),
		History:        time.Duration(r.History),
	}
}
