// Command alertfan-demo-targets runs alertfan's fake PagerDuty Events API
// v2 and fake Backlog API v2 so the demo stack works without real
// accounts. Every event and issue it receives is logged; /_demo/events and
// /_demo/issues show them as JSON.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

func main() {
	pdAddr := flag.String("pagerduty.listen-address", ":8080", "address of the fake PagerDuty Events API v2")
	blAddr := flag.String("backlog.listen-address", ":8081", "address of the fake Backlog API v2")
	blKey := flag.String("backlog.api-key", "demo-backlog-api-key", "API key the fake Backlog accepts")
	statusAddr := flag.String("status.listen-address", ":8082", "address of /_demo/events and /_demo/issues")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stdout, nil))

	pl, err := net.Listen("tcp", *pdAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bl, err := net.Listen("tcp", *blAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pd := sinkstest.NewPagerDutyOn(pl)
	defer pd.Close()
	pd.OnEvent = func(e sinkstest.PDEvent) {
		logger.Info("PagerDuty event", "action", e.EventAction, "dedup_key", e.DedupKey, "change", e.Change, "payload", string(e.Payload))
	}
	b := sinkstest.NewBacklogOn(bl, *blKey)
	defer b.Close()
	b.AfterCreate = func(is *sinkstest.BacklogIssue) {
		logger.Info("Backlog issue created", "key", is.Key, "summary", is.Summary)
	}
	http.HandleFunc("/_demo/events", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, pd.Events()) })
	http.HandleFunc("/_demo/issues", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, b.Issues()) })
	sl, err := net.Listen("tcp", *statusAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go http.Serve(sl, nil) //nolint:errcheck
	logger.Info("Demo targets ready", "pagerduty", pd.URL+"/v2/enqueue", "backlog", b.URL, "status", sl.Addr().String()+"/_demo/events")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v) //nolint:errcheck
}
