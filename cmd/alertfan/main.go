// Command alertfan receives alerts from Alertmanager, PagerDuty Events v2
// senders and Mackerel, and fans them out to PagerDuty and Backlog.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/alertfan/alertfan/receiver"
)

// defaultGOGC is the garbage collector's target when the environment
// does not set GOGC. It is above Go's default (100) and Prometheus's own
// (75): alertfan's heap is small and short-lived (requests, renders,
// acks), and at 100 a queue draining to a fast target spent a fifth of its
// CPU collecting; at 200, 7–28% less CPU per drained event for 15–18 MiB
// more at peak (BENCHMARKS.md, "The garbage collector's target").
const defaultGOGC = 200

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGOGC)
	}
	os.Exit(run(os.Args[1:]))
}

// Release builds stamp the version with -ldflags (see Dockerfile); a plain
// `go build` still says what it is rather than printing nothing.
func init() {
	if version.Version == "" {
		version.Version = "dev"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version.Version = bi.Main.Version
		}
	}
}

func run(args []string) int {
	app := kingpin.New("alertfan", "Fans alerts from Alertmanager, PagerDuty Events v2 senders and Mackerel out to PagerDuty and Backlog, durably.")
	app.Version(version.Print("alertfan"))
	app.HelpFlag.Short('h')

	serve := app.Command("serve", "Run the server (default).").Default()
	configFile := app.Flag("config.file", "alertfan configuration file.").Default("config.yml").String()
	shutdownTimeout := serve.Flag("shutdown-timeout", "On SIGTERM: how long intake requests and calls in flight may take before they are cancelled (and retried after restart); the process exits within this plus one second. Keep that under the container's stop grace period (Docker: 10s).").
		Default(receiver.DefaultShutdownTimeout.String()).Duration()
	webFlags := kingpinflag.AddFlags(app, ":9095")
	enableLifecycle := app.Flag("web.enable-lifecycle", "Serve POST /-/reload (SIGHUP always reloads).").Bool()
	demoMode := app.Flag("demo", "Demo mode: serve a fake PagerDuty and Backlog in this process on loopback and send every alert to both (ignores --config.file; store data/alertfan-demo.db). GET /-/demo/events and /-/demo/issues show what they received.").Bool()
	enableAdminAPI := app.Flag("web.enable-admin-api", "Serve the admin API's writes: dead-letter retry and drop (alertfan queue retry|drop).").Bool()
	logCfg := &promslog.Config{}
	promslogflag.AddFlags(app, logCfg)

	check := app.Command("check-config", "Check a configuration file.")
	checkFile := check.Arg("file", "Configuration file.").Required().String()
	checkOnline := check.Flag("online", "Also resolve Backlog names and check that targets answer.").Bool()

	routes := app.Command("routes", "Route tree tools.")
	routesTest := routes.Command("test", "Print the receivers a label set (or the alerts of a webhook JSON file) reaches, as amtool config routes test; with --render the payload each target would get. Sends nothing.")
	routesLabels := routesTest.Arg("labels", "Labels as name=value.").Strings()
	routesVerify := routesTest.Flag("verify.receivers", "Comma-separated receivers the labels must reach (as a set); exit 1 when they differ.").String()
	routesTree := routesTest.Flag("tree", "Print the route tree with the path the labels take marked.").Bool()
	routesRender := routesTest.Flag("render", "Print, per target, the exact payload alertfan would send (PagerDuty event JSON with the routing key as <secret>; Backlog create form fields).").Bool()
	routesOnline := routesTest.Flag("online", "With --render: resolve Backlog names to ids through the Backlog API (read-only calls).").Bool()
	routesAnnotations := routesTest.Flag("annotation", "Annotation as name=value (repeatable).").Strings()
	routesStatus := routesTest.Flag("status", "Alert status: firing or resolved.").Enum("firing", "resolved")
	routesFile := routesTest.Flag("alerts.file", `Alertmanager webhook JSON (or {"labels","annotations","status"}) to test instead of labels; - reads stdin.`).String()

	queue := app.Command("queue", "Inspect and act on a running alertfan's queue.")
	queueURL := queue.Flag("alertfan.url", "URL of the running alertfan.").Default("http://localhost:9095").Envar("ALERTFAN_URL").String()
	queueHTTPConfig := queue.Flag("http.config.file", "HTTP client configuration file (basic auth, bearer token file, TLS CA, proxy), as amtool's.").Envar("ALERTFAN_HTTP_CONFIG_FILE").String()
	queueList := queue.Command("list", "List deliveries still owed and dead letters.")
	queueListState := queueList.Flag("state", "Only this state: pending, retrying or dead.").Enum("pending", "retrying", "dead")
	queueListReceiver := queueList.Flag("receiver", "Only this receiver.").String()
	queueListOutput := queueList.Flag("output", "Output format: table or json.").Short('o').Default("table").Enum("table", "json")
	queueShow := queue.Command("show", "Show one dead letter: the alert, its labels, attempts and last error.")
	queueShowID := queueShow.Arg("id", "Dead letter id (from queue list).").Required().String()
	queueShowOutput := queueShow.Flag("output", "Output format: table or json.").Short('o').Default("table").Enum("table", "json")
	queueRetry := queue.Command("retry", "Re-queue dead letters (needs --web.enable-admin-api on the server).")
	queueRetryID := queueRetry.Arg("id", "Dead letter id.").String()
	queueRetryAll := queueRetry.Flag("all", "Re-queue every dead letter.").Bool()
	queueDrop := queue.Command("drop", "Delete a dead letter without delivering it (needs --web.enable-admin-api on the server).")
	queueDropID := queueDrop.Arg("id", "Dead letter id.").Required().String()

	health := app.Command("healthcheck", "Exit 0 when a running alertfan answers /-/healthy (for container HEALTHCHECKs).")
	healthURL := health.Flag("alertfan.url", "URL of the running alertfan.").Default("http://127.0.0.1:9095").Envar("ALERTFAN_URL").String()
	healthHTTPConfig := health.Flag("http.config.file", "HTTP client configuration file (basic auth, bearer token file, TLS CA, proxy), as amtool's.").Envar("ALERTFAN_HTTP_CONFIG_FILE").String()

	app.Command("version", "Print version information.")

	cmd, err := app.Parse(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var logger *slog.Logger
	switch cmd {
	case serve.FullCommand():
		logger = promslog.New(logCfg)
		logger.Info("Starting alertfan", "version", version.Info(), "build_context", version.BuildContext())
		var handlers map[string]http.Handler
		if *demoMode {
			d, derr := startDemo(logger)
			if derr != nil {
				err = derr
				break
			}
			defer d.close()
			*configFile = d.config
			handlers = d.handlers()
			logger.Info("Demo mode: every alert goes to the fake PagerDuty and Backlog in this process; see /-/demo/events and /-/demo/issues",
				"pagerduty", d.pd.EventsURL(), "backlog", d.bl.URL)
		}
		err = receiver.Run(ctx, receiver.Options{
			Handlers:        handlers,
			ConfigFile:      *configFile,
			ListenAddresses: *webFlags.WebListenAddresses,
			SystemdSocket:   *webFlags.WebSystemdSocket,
			WebConfigFile:   *webFlags.WebConfigFile,
			Logger:          logger,
			ShutdownTimeout: *shutdownTimeout,
			EnableLifecycle: *enableLifecycle,
			EnableAdminAPI:  *enableAdminAPI,
		})
	case check.FullCommand():
		err = receiver.CheckConfig(ctx, *checkFile, *checkOnline, os.Stdout)
	case routesTest.FullCommand():
		err = receiver.RoutesTest(ctx, receiver.RoutesTestOptions{
			ConfigFile: *configFile, Labels: *routesLabels, Annotations: *routesAnnotations, Status: *routesStatus,
			AlertsFile: *routesFile, Verify: *routesVerify, Tree: *routesTree, Render: *routesRender, Online: *routesOnline,
		}, os.Stdout)
		if errors.Is(err, receiver.ErrReceiversMismatch) {
			return 1 // the WARNING line is printed, as amtool
		}
		var ue *receiver.UsageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "alertfan: routes test:", err)
			return 2
		}
	case queueList.FullCommand(), queueShow.FullCommand(), queueRetry.FullCommand(), queueDrop.FullCommand():
		hc, herr := receiver.NewHTTPClient(*queueHTTPConfig)
		if herr != nil {
			err = herr
			break
		}
		c := &receiver.AdminClient{URL: *queueURL, HTTP: hc}
		switch cmd {
		case queueList.FullCommand():
			err = c.List(ctx, receiver.ListOptions{State: *queueListState, Receiver: *queueListReceiver, Output: *queueListOutput}, os.Stdout)
		case queueShow.FullCommand():
			err = c.Show(ctx, *queueShowID, *queueShowOutput, os.Stdout)
		case queueRetry.FullCommand():
			if (*queueRetryID == "") == !*queueRetryAll {
				err = fmt.Errorf("queue retry: give a dead letter id or --all")
				break
			}
			err = c.RetryDead(ctx, *queueRetryID, os.Stdout)
		case queueDrop.FullCommand():
			err = c.DropDead(ctx, *queueDropID, os.Stdout)
		}
	case health.FullCommand():
		hc, herr := receiver.NewHTTPClient(*healthHTTPConfig)
		if herr != nil {
			err = herr
			break
		}
		err = receiver.HealthCheck(ctx, *healthURL, hc)
	case "version":
		fmt.Println(version.Print("alertfan"))
	}
	if err != nil {
		if logger != nil {
			// The server's fatal errors go through its logger, in the
			// chosen format, so a log pipeline sees them.
			logger.Error("alertfan stopped", "err", err)
		} else {
			fmt.Fprintln(os.Stderr, "alertfan:", err)
		}
		return 1
	}
	return 0
}
