package main

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
)

// TestQuickStart follows the README's quick start on a fresh directory:
// its first command (alertfan --demo) runs alertfan by itself, the curl
// it shows is accepted, and the alert reaches the demo PagerDuty and
// Backlog, as the README says /-/demo/events and /-/demo/issues show;
// the resolve it describes resolves both. Its second command is the tests.
func TestQuickStart(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	text := string(readme)
	start := strings.Index(text, "## Quick start")
	require.GreaterOrEqual(t, start, 0)
	section := text[start:]
	section = section[:strings.Index(section[3:], "\n## ")+3]
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, -1)
	require.GreaterOrEqual(t, len(blocks), 2)

	var cmds []string
	for _, l := range strings.Split(strings.TrimSpace(blocks[0][1]), "\n") {
		cmds = append(cmds, strings.TrimSpace(strings.SplitN(l, "#", 2)[0]))
	}
	require.Len(t, cmds, 2)
	require.True(t, strings.HasPrefix(cmds[0], "go run ./cmd/alertfan "), cmds[0])
	require.Equal(t, "go test ./...", cmds[1], "the second command runs the tests")
	args := strings.Fields(strings.TrimPrefix(cmds[0], "go run ./cmd/alertfan "))
	require.Contains(t, args, "--demo")

	// The first command, in an empty directory, on a socket of the
	// test's (its port bound from the start).
	sock, addr := passedSocket(t)
	cmd := socketActivated(alertfanBinary(t), sock, args...)
	cmd.Dir = t.TempDir()
	logs := &testenv.LogBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	sock.Close()                                      // the child's copy serves
	defer func() { cmd.Process.Kill(); cmd.Wait() }() //nolint:errcheck
	base := "http://" + addr
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, 30*time.Second, 50*time.Millisecond, "alertfan --demo did not get ready: %s", logs)

	// The curl commands of the second block.
	curls := strings.ReplaceAll(blocks[1][1], "\\\n", " ")
	body := regexp.MustCompile(`(?s)-d '(.*?)'`).FindStringSubmatch(curls)
	require.NotNil(t, body, "the quick start shows a curl -d with an alert")
	require.Contains(t, curls, "localhost:9095/-/demo/events")
	require.Contains(t, curls, "localhost:9095/-/demo/issues")
	post := func(b string) {
		resp, err := http.Post(base+"/webhook", "application/x-www-form-urlencoded", strings.NewReader(b))
		require.NoError(t, err)
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode, "%s", out)
	}
	get := func(path string) string {
		resp, err := http.Get(base + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	firing := strings.ReplaceAll(body[1], "\n  ", "")
	post(firing)
	require.Eventually(t, func() bool {
		return strings.Contains(get("/-/demo/events"), `"event_action": "trigger"`) && strings.Contains(get("/-/demo/issues"), "Test")
	}, 30*time.Second, 50*time.Millisecond, "%s", logs)
	require.Contains(t, get("/metrics"), `alertfan_deliveries_total{reason="",receiver="demo",result="success",sink="pagerduty"} 1`)

	// "Send the same body with "status":"resolved" (in both places)".
	post(strings.ReplaceAll(firing, `"status":"firing"`, `"status":"resolved"`))
	require.Eventually(t, func() bool {
		return strings.Contains(get("/-/demo/events"), `"event_action": "resolve"`) && strings.Contains(get("/-/demo/issues"), `"status": "Closed"`)
	}, 30*time.Second, 50*time.Millisecond, "%s", logs)
}
