//go:build pprof

package main

import (
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
)

// Built only with -tags pprof (alertfan-bench -pprof does): serves
// net/http/pprof on ALERTFAN_PPROF_ADDR so a benchmark can take CPU
// profiles of the process under load. Release builds have no such
// endpoint.
func init() {
	if addr := os.Getenv("ALERTFAN_PPROF_ADDR"); addr != "" {
		go http.ListenAndServe(addr, nil) //nolint:errcheck
	}
}
