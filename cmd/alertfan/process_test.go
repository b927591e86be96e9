package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// alertfanBinary builds the real binary once per test run.
func alertfanBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "alertfan-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "alertfan")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binPath
}

// passedSocket is a loopback listener on port 0 to hand to a child as
// systemd socket activation does (--web.systemd-socket): the port is
// bound from the start, with no moment for another process to take it
// between choosing and binding.
func passedSocket(t *testing.T) (*os.File, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close() // the file is a copy
	f, err := l.(*net.TCPListener).File()
	require.NoError(t, err)
	return f, l.Addr().String()
}

// socketActivated is cmd as systemd starts a socket-activated service:
// the socket at fd 3, LISTEN_FDS=1 and LISTEN_PID set to the process's
// own pid, which only the process knows (the shell's exec keeps it).
func socketActivated(bin string, f *os.File, args ...string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, bin, "--web.systemd-socket"}, args...)...)
	cmd.ExtraFiles = []*os.File{f}
	return cmd
}

// child is an alertfan process.
type child struct {
	cmd  *exec.Cmd
	addr string
	logs *testenv.LogBuffer // safe to read while the child writes it
	done chan struct{}
}

// startChild starts alertfan in dir and waits until it is ready (or, behind
// basic auth, until it answers 401). With addr "" it serves on a socket
// the test binds (passedSocket); a restart passes the address it had.
func startChild(t *testing.T, dir, addr string, extra ...string) *child {
	t.Helper()
	c := &child{addr: addr, logs: &testenv.LogBuffer{}, done: make(chan struct{})}
	args := []string{"--config.file=config.yml"}
	if !slices.ContainsFunc(extra, func(a string) bool { return strings.HasPrefix(a, "--log.level=") }) {
		args = append(args, "--log.level=warn")
	}
	args = append(args, extra...)
	var sock *os.File
	if addr == "" {
		sock, c.addr = passedSocket(t)
		c.cmd = socketActivated(alertfanBinary(t), sock, args...)
	} else {
		c.cmd = exec.Command(alertfanBinary(t), append(args, "--web.listen-address="+addr)...)
	}
	c.cmd.Dir = dir
	c.cmd.Stdout = c.logs
	c.cmd.Stderr = c.logs
	require.NoError(t, c.cmd.Start())
	if sock != nil {
		// The child has its own copy: the socket closes when it exits,
		// so a killed child refuses connections as a dead process does.
		sock.Close()
	}
	go func() { c.cmd.Wait(); close(c.done) }() //nolint:errcheck
	t.Cleanup(func() { c.kill() })
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + c.addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 || resp.StatusCode == 401 {
				return c
			}
		}
		select {
		case <-c.done:
			t.Fatalf("alertfan exited: %s", c.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("alertfan not ready: %s", c.logs.String())
	return nil
}

// kill sends SIGKILL: no shutdown code runs.
func (c *child) kill() {
	if c.cmd.Process != nil {
		c.cmd.Process.Signal(syscall.SIGKILL) //nolint:errcheck
	}
	<-c.done
}

func (c *child) post(ctx context.Context, path string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.addr+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// serve answers h on a loopback port of its own until stop is called.
func serve(t *testing.T, h http.Handler) (ln net.Listener, stop func()) {
	t.Helper()
	ln = listen(t)
	srv := &http.Server{Handler: h}
	go srv.Serve(ln) //nolint:errcheck
	return ln, func() { srv.Close() }
}

// serveCounted is serve, also counting the server's open connections
// (open), so that a test can tell when a killed client's requests are all
// handled (drained).
func serveCounted(t *testing.T, h http.Handler) (ln net.Listener, open func() int, stop func()) {
	t.Helper()
	ln = listen(t)
	var n atomic.Int64
	srv := &http.Server{Handler: h, ConnState: sinkstest.CountConns(&n)}
	go srv.Serve(ln) //nolint:errcheck
	return ln, func() int { return int(n.Load()) }, func() { srv.Close() }
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return l
}

// fakeDrained reports that a fake PagerDuty whose only client was killed
// has handled every request that client sent: no connection is open in
// the server, and none waits in the kernel to be accepted (a connection
// the client opened just before it died is in the listener's queue,
// ESTABLISHED or CLOSE_WAIT, with its request in the socket buffer, and
// the server has not counted it yet). The kernel's side is read from
// /proc/net/tcp where there is one.
func fakeDrained(pd *sinkstest.PagerDuty) bool {
	return drained(pd.OpenConns(), pd.Listener.Addr().String())
}

// settledFake waits, after fakeDrained, until the fake has received no
// event for 300 ms and is still drained: on a machine loaded by other
// tests (CI runs packages in parallel) a request the killed process wrote
// just before it died can reach the fake's handler a moment after the
// first look found nothing open (one such run counted a call in flight at
// the kill as a repeat of a recorded one: 18 repeats against 17 calls).
func settledFake(t *testing.T, pd *sinkstest.PagerDuty) {
	t.Helper()
	n := len(pd.Events())
	require.Eventually(t, func() bool {
		time.Sleep(300 * time.Millisecond)
		m := len(pd.Events())
		settled := m == n && fakeDrained(pd)
		n = m
		return settled
	}, 30*time.Second, time.Millisecond)
}

// drained is fakeDrained for a server listening on addr with open
// connections open.
func drained(open int, addr string) bool {
	if open != 0 {
		return false
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return true
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return true
	}
	local := fmt.Sprintf(":%04X", p)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			// sl local_address rem_address st ...; st 01 ESTABLISHED, 08 CLOSE_WAIT
			if len(fields) > 3 && strings.HasSuffix(fields[1], local) && (fields[3] == "01" || fields[3] == "08") {
				return false
			}
		}
	}
	return true
}
