package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/receiver"
)

// TestContainerHealthCheckBehindWebConfig runs the Dockerfile's HEALTHCHECK
// command against an alertfan behind the documented web config (TLS with a
// private CA, basic auth), with the environment the README's Deploy
// section sets: it passes, and fails without the HTTP client config.
func TestContainerHealthCheckBehindWebConfig(t *testing.T) {
	df, err := os.ReadFile("../../Dockerfile")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^\s*CMD (\["/usr/local/bin/alertfan", "healthcheck".*\])$`).FindSubmatch(df)
	require.NotNil(t, m, "Dockerfile HEALTHCHECK runs alertfan healthcheck")
	var argv []string
	require.NoError(t, json.Unmarshal(m[1], &argv))
	require.Contains(t, string(df), "ENV ALERTFAN_URL=http://127.0.0.1:9095")

	dir := t.TempDir()
	web, httpCfg := testenv.ProtectedWeb(t, dir, "web-pass-7")
	cfg := filepath.Join(dir, "config.yml")
	require.NoError(t, os.WriteFile(cfg, []byte("storage:\n  path: "+filepath.Join(dir, "a.db")+"\nroute:\n  receiver: r\nreceivers:\n  - name: r\n"), 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- receiver.Run(ctx, receiver.Options{ConfigFile: cfg, WebConfigFile: web, ListenAddresses: []string{"127.0.0.1:0"},
			OnListen: func(a net.Addr) { addr <- a }, ShutdownTimeout: 5 * time.Second})
	}()
	defer func() { cancel(); <-done }()
	var a net.Addr
	select {
	case a = <-addr:
	case err := <-done:
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(a.String())

	t.Setenv("ALERTFAN_URL", "https://127.0.0.1:"+port)
	require.Equal(t, 1, run(argv[1:]), "without the client config the check fails")
	t.Setenv("ALERTFAN_HTTP_CONFIG_FILE", httpCfg)
	require.Equal(t, 0, run(argv[1:]))
	require.Equal(t, 0, run([]string{"queue", "list", "--state=dead", "-o", "json"}), "queue uses the same client config")
	require.Equal(t, 1, run([]string{"queue", "retry", "--all"}), "changing the queue needs --web.enable-admin-api")
}

// TestFatalErrorThroughLogger: a start-up failure is logged in the chosen
// format, so a JSON log pipeline sees it.
func TestFatalErrorThroughLogger(t *testing.T) {
	cmd := exec.Command(alertfanBinary(t), "--log.format=json", "--config.file="+filepath.Join(t.TempDir(), "missing.yml"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 1, ee.ExitCode())
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	var last map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &last), stderr.String())
	require.Equal(t, "ERROR", last["level"])
	require.Contains(t, last["err"], "missing.yml")
}

// --web.systemd-socket (exporter-toolkit's flag) serves on the socket a
// socket-activation launcher passed, and nowhere else; without one it is
// a clear start-up error. alertfan accepted the flag and listened on
// :9095 regardless.
func TestSystemdSocketActivation(t *testing.T) {
	dir := t.TempDir()
	cfg := "storage:\n  path: " + filepath.Join(dir, "a.db") + "\nroute:\n  receiver: r\nreceivers:\n  - name: r\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600))

	c := startChild(t, dir, "", "--log.level=info") // socket-activated, ready on the passed socket
	// The start line is logged once the server serves, which can be just
	// after it has answered its first request.
	require.Eventually(t, func() bool { return strings.Contains(c.logs.String(), "alertfan started") }, 10*time.Second, 5*time.Millisecond)
	require.Contains(t, c.logs.String(), "systemd_socket=true")
	require.Contains(t, c.logs.String(), `listen=[`+c.addr+`]`)
	require.NotContains(t, c.logs.String(), ":9095", "the default listen address is not used")

	other := t.TempDir()
	cfg = strings.ReplaceAll(cfg, dir, other)
	require.NoError(t, os.WriteFile(filepath.Join(other, "config.yml"), []byte(cfg), 0o600))
	cmd := exec.Command(alertfanBinary(t), "--web.systemd-socket", "--config.file=config.yml")
	cmd.Dir = other
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, out.String())
	require.Equal(t, 1, ee.ExitCode())
	require.Contains(t, out.String(), "--web.systemd-socket: no listening socket was passed to this process")
}
