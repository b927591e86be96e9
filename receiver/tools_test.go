package receiver

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

func TestCheckConfigOnline(t *testing.T) {
	b := sinkstest.NewBacklog(backlogKey)
	defer b.Close()
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yml")
	good := backlogConfig(b.URL, "") + `
  - name: pd
    pagerduty_configs:
      - routing_key: ` + testRoutingKey + `
        url: ` + pd.EventsURL() + "\n"
	require.NoError(t, os.WriteFile(file, []byte(good), 0o600))

	var out bytes.Buffer
	require.NoError(t, CheckConfig(context.Background(), file, false, &out))
	require.Contains(t, out.String(), "SUCCESS")
	require.Empty(t, b.Calls(), "without --online Backlog is not called")

	out.Reset()
	require.NoError(t, CheckConfig(context.Background(), file, true, &out))
	require.Contains(t, out.String(), "tickets/backlog/0: OK")
	require.Contains(t, out.String(), "pd/pagerduty/0: OK")
	require.Contains(t, out.String(), "SUCCESS", "every target answered")

	bad := strings.Replace(good, "issue_type: Bug", "issue_type: Incident", 1)
	require.NoError(t, os.WriteFile(file, []byte(bad), 0o600))
	out.Reset()
	err := CheckConfig(context.Background(), file, true, &out)
	require.ErrorContains(t, err, `issue_type: "Incident" does not exist in Backlog; valid names: "Bug", "Other", "Request", "Task"`)

	pd.Close()
	require.NoError(t, os.WriteFile(file, []byte(good), 0o600))
	out.Reset()
	err = CheckConfig(context.Background(), file, true, &out)
	require.ErrorContains(t, err, "pd/pagerduty/0")
	require.NotContains(t, out.String(), "SUCCESS", "a target that does not answer: no SUCCESS anywhere")
	require.NotContains(t, err.Error(), backlogKey)
	require.NotContains(t, err.Error(), testRoutingKey)
}
