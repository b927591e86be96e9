package receiver

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// TestReloadAppliesWhatItCan: a file that changes storage or delivery
// settings along with routes is not refused: the routes apply, the
// settings that need a restart are named (answer, log, metric) and keep
// their running values.
func TestReloadAppliesWhatItCan(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), ""))
	good, err := os.ReadFile(ts.cfg)
	require.NoError(t, err)

	changed := strings.Replace(string(good), "name: oncall", "name: oncall\n  - name: extra", 1)
	changed = strings.Replace(changed, "poll_interval: 10ms", "poll_interval: 20ms\n  workers: 7", 1)
	changed = strings.Replace(changed, "alertfan.db", "elsewhere.db", 1)
	require.NoError(t, os.WriteFile(ts.cfg, []byte(changed), 0o600))
	code, body := ts.postRaw(t, "/-/reload")
	require.Equal(t, 200, code, body)
	require.Contains(t, body, "need a restart")
	for _, k := range []string{"storage.path", "delivery.workers", "delivery.poll_interval"} {
		require.Contains(t, body, k)
	}
	code, _ = ts.post(t, "/webhook/extra", firing("A", "h1"))
	require.Equal(t, 200, code, "the new receiver is live")
	_, m := ts.get(t, "/metrics")
	require.Contains(t, m, "alertfan_config_last_reload_successful 1")
	require.Contains(t, m, `alertfan_config_restart_required{key="delivery.workers"} 1`)
	require.Contains(t, m, `alertfan_config_restart_required{key="storage.path"} 1`)
	require.Contains(t, ts.logs.String(), "need a restart")
	require.NotContains(t, ts.logs.String(), "elsewhere.db", "keys are named, values are not logged")

	// Back to the running values: nothing is pending.
	require.NoError(t, os.WriteFile(ts.cfg, good, 0o600))
	code, body = ts.postRaw(t, "/-/reload")
	require.Equal(t, 200, code, body)
	require.Equal(t, "OK\n", body)
	_, m = ts.get(t, "/metrics")
	require.NotContains(t, m, `alertfan_config_restart_required{`)
}
