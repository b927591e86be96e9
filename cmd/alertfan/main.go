// Command alertfan receives alerts from Alertmanager, PagerDuty Events v2
// senders and Mackerel, and fans them out to PagerDuty and Backlog.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/alertfan/alertfan/receiver"
)

func main() {
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
	webFlags := kingpinflag.AddFlags(app, ":9095")
	enableLifecycle := app.Flag("web.enable-lifecycle", "Serve POST /-/reload (SIGHUP always reloads).").Bool()
	enableAdminAPI := app.Flag("web.enable-admin-api", "Serve the admin API's writes: dead-letter retry and drop (alertfan queue retry|drop).").Bool()
	logCfg := &promslog.Config{}
	promslogflag.AddFlags(app, logCfg)

	check := app.Command("check-config", "Check a configuration file.")
	checkFile := check.Arg("file", "Configuration file.").Required().String()
	checkOnline := check.Flag("online", "Also resolve Backlog names and check that targets answer.").Bool()

	routes := app.Command("routes", "Route tree tools.")
	routesTest := routes.Command("test", "Print the receivers a label set reaches.")
	routesLabels := routesTest.Arg("labels", "Labels as name=value.").Strings()

	queue := app.Command("queue", "Inspect a running alertfan's queue.")
	queueURL := queue.Flag("alertfan.url", "URL of the running alertfan.").Default("http://localhost:9095").String()
	queueTokenFile := queue.Flag("token.file", "File with the intake bearer token, if one is configured.").String()
	queueList := queue.Command("list", "List jobs.")
	queueListDead := queueList.Flag("dead", "List dead letters.").Required().Bool()
	queueRetry := queue.Command("retry", "Re-queue dead letters.")
	queueRetryID := queueRetry.Arg("id", "Dead letter id.").String()
	queueRetryAll := queueRetry.Flag("all", "Re-queue every dead letter.").Bool()

	health := app.Command("healthcheck", "Exit 0 when a running alertfan answers /-/healthy (for container HEALTHCHECKs).")
	healthURL := health.Flag("alertfan.url", "URL of the running alertfan.").Default("http://127.0.0.1:9095").String()

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
		err = receiver.Run(ctx, receiver.Options{
			ConfigFile:      *configFile,
			ListenAddresses: *webFlags.WebListenAddresses,
			WebConfigFile:   *webFlags.WebConfigFile,
			Logger:          logger,
			EnableLifecycle: *enableLifecycle,
			EnableAdminAPI:  *enableAdminAPI,
		})
	case check.FullCommand():
		err = receiver.CheckConfig(ctx, *checkFile, *checkOnline, os.Stdout)
	case routesTest.FullCommand():
		_, err = receiver.RoutesTest(*configFile, *routesLabels, os.Stdout)
	case queueList.FullCommand(), queueRetry.FullCommand():
		c := &receiver.AdminClient{URL: *queueURL}
		if *queueTokenFile != "" {
			b, rerr := os.ReadFile(*queueTokenFile)
			if rerr != nil {
				err = rerr
				break
			}
			c.Token = strings.TrimSpace(string(b))
		}
		if cmd == queueList.FullCommand() && *queueListDead {
			err = c.ListDead(ctx, os.Stdout)
		} else {
			if (*queueRetryID == "") == !*queueRetryAll {
				err = fmt.Errorf("queue retry: give a dead letter id or --all")
				break
			}
			err = c.RetryDead(ctx, *queueRetryID, os.Stdout)
		}
	case health.FullCommand():
		err = receiver.HealthCheck(ctx, *healthURL)
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
