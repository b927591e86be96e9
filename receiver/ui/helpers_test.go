package ui_test

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	require.NoError(t, err)
	req.SetBasicAuth(webUser, webPassword)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, 200, res.StatusCode, url)
	require.NoError(t, json.NewDecoder(res.Body).Decode(v))
}

// setProcessGroup puts the script and the browser it starts in a process
// group of their own, which a timeout kills as a whole (by the script's
// PID), so no Chromium outlives the test.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
