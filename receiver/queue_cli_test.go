package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// TestQueueCLIBehindWebLayer: the client commands authenticate with an
// HTTP client config (basic auth, private CA) where the server is behind
// exporter-toolkit TLS and basic auth; queue list filters by state and
// receiver and names each row's alert; show, retry and drop work by id.
func TestQueueCLIBehindWebLayer(t *testing.T) {
	broken := sinkstest.NewPagerDuty()
	defer broken.Close()
	down := sinkstest.NewPagerDuty()
	defer down.Close()
	down.SetDown(true)
	broken.Script(sinkstest.PDResponse{Status: 400})
	dir := t.TempDir()
	web, httpCfg := testenv.ProtectedWeb(t, dir, "web-pass-9")
	ts := startServerIn(t, dir, `
route:
  receiver: broken
  routes:
    - matchers: ['alertname="Slow"']
      receiver: down
receivers:
  - name: broken
    pagerduty_configs:
      - routing_key: `+testRoutingKey+`
        url: `+broken.EventsURL()+`
  - name: down
    pagerduty_configs:
      - routing_key: `+testRoutingKey+`
        url: `+down.EventsURL()+`
delivery:
  min_backoff: 5s
  max_backoff: 10s
  poll_interval: 10ms
`, func(o *Options) { o.WebConfigFile = web })
	base := strings.Replace(ts.URL, "http://", "https://", 1)
	ctx := context.Background()

	// Without the client config: refused (unknown CA), and a plain
	// client with the right password still fails on the CA.
	require.Error(t, HealthCheck(ctx, base, nil))
	plain := &AdminClient{URL: base}
	require.Error(t, plain.List(ctx, ListOptions{}, &bytes.Buffer{}))
	hc, err := NewHTTPClient(httpCfg)
	require.NoError(t, err)
	require.NoError(t, HealthCheck(ctx, base, hc))
	admin := &AdminClient{URL: base, HTTP: hc}

	post := func(body []byte) {
		req, err := newPost(base+"/webhook", body)
		require.NoError(t, err)
		resp, err := hc.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
	}
	post(firing("DiskFull", "db-1"))
	post(firing("Slow", "web-1"))

	var rows []QueueRow
	list := func(o ListOptions) []QueueRow {
		var out bytes.Buffer
		o.Output = "json"
		require.NoError(t, admin.List(ctx, o, &out))
		var rs []QueueRow
		require.NoError(t, json.Unmarshal(out.Bytes(), &rs), out.String())
		return rs
	}
	// Until the failed attempt's job is back in the queue (River records
	// its error as the attempt ends, just after the key's own count), the
	// retrying row has no next attempt.
	require.Eventually(t, func() bool {
		rows = list(ListOptions{})
		states := map[string]int{}
		scheduled := false
		for _, r := range rows {
			states[r.State]++
			scheduled = scheduled || (r.State == "retrying" && r.NextAttempt != nil)
		}
		return states["dead"] == 1 && states["retrying"] == 1 && scheduled
	}, 15*time.Second, 50*time.Millisecond)

	cases := []struct {
		opts      ListOptions
		alertname []string
	}{
		{ListOptions{State: "dead"}, []string{"DiskFull"}},
		{ListOptions{State: "retrying"}, []string{"Slow"}},
		{ListOptions{State: "pending"}, nil},
		{ListOptions{Receiver: "down"}, []string{"Slow"}},
		{ListOptions{Receiver: "broken"}, []string{"DiskFull"}},
		{ListOptions{Receiver: "nope"}, nil},
	}
	for _, c := range cases {
		var names []string
		for _, r := range list(c.opts) {
			names = append(names, r.Alertname)
		}
		require.Equal(t, c.alertname, names, "%+v", c.opts)
	}
	dead := list(ListOptions{State: "dead"})[0]
	require.Equal(t, "db-1", dead.Labels["instance"])
	require.Equal(t, "client_error", dead.Reason)
	retrying := list(ListOptions{State: "retrying"})[0]
	require.Positive(t, retrying.Attempts)
	require.NotEmpty(t, retrying.Error)
	require.NotNil(t, retrying.NextAttempt)

	// The table names the alert too.
	var out bytes.Buffer
	require.NoError(t, admin.List(ctx, ListOptions{}, &out))
	require.Contains(t, out.String(), "DiskFull")
	require.Contains(t, out.String(), `instance="db-1"`)
	require.Contains(t, out.String(), "retrying")

	out.Reset()
	id := strconv.FormatInt(dead.ID, 10)
	require.NoError(t, admin.Show(ctx, id, "table", &out))
	for _, want := range []string{"DiskFull", `instance="db-1"`, "client_error", "Attempts:", "Next attempt:"} {
		require.Contains(t, out.String(), want)
	}
	require.ErrorContains(t, admin.Show(ctx, "999", "table", &out), "404")
	require.ErrorContains(t, admin.RetryDead(ctx, "999", &out), "404")

	// Drop: gone; dropping again is a 404.
	out.Reset()
	require.NoError(t, admin.DropDead(ctx, id, &out))
	require.Contains(t, out.String(), "dropped 1")
	require.Empty(t, list(ListOptions{State: "dead"}))
	require.ErrorContains(t, admin.DropDead(ctx, id, &out), "404")
	require.ErrorContains(t, admin.DropDead(ctx, "x", &out), "400")
	require.NotContains(t, ts.logs.String(), "web-pass-9")
}
