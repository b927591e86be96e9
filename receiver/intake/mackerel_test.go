package intake

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// One golden decode per Mackerel monitor type, built from the examples and
// field tables of https://mackerel.io/docs/entry/howto/alerts/webhook and
// https://mackerel.io/ja/docs/entry/howto/alerts/webhook.
func TestMackerelGoldenPerMonitorType(t *testing.T) {
	for _, name := range []string{"connectivity", "host", "host_ok", "service", "external", "check", "expression", "anomalyDetection", "query", "unknown"} {
		t.Run(name, func(t *testing.T) {
			res, err := DecodeMackerel(read(t, filepath.Join("mackerel", name+".json")), false, now)
			require.NoError(t, err)
			require.NotNil(t, res.Alert)
			golden(t, filepath.Join("mackerel", name), res.Alert)
		})
	}
	res, err := DecodeMackerel(read(t, filepath.Join("mackerel", "alertGroup.json")), true, now)
	require.NoError(t, err)
	golden(t, filepath.Join("mackerel", "alertGroup"), res.Alert)
}

// What routes and what describes, per type: a service-metric alert has no
// host but routes on its service (case 02); every type carries org, type and
// monitor; the memo and the message keep their own names.
func TestMackerelLabelsPerMonitorType(t *testing.T) {
	cases := []struct {
		file   string
		labels map[string]string
		ann    map[string]string
		title  string
	}{
		{"service", map[string]string{"service": "shop", "type": "service", "monitor": "orders rate", "org": "example-org", "severity": "critical"},
			map[string]string{"message": "shop.orders.rate 0.2 < 1", "memo": "Orders stopped: check the payment gateway first", "service_roles": "shop: web, shop: db", "service_id": "svc1", "org_id": "org1", "metric_value": "0.2", "critical_threshold": "1", "warning_threshold": "2", "operator": "<", "image_url": "https://mackerel.io/embed/public/alert/7aa.png"},
			"[CRITICAL] orders rate on shop: shop.orders.rate 0.2 < 1"},
		{"host", map[string]string{"host": "app01", "service": "shop", "role": "db", "type": "host", "monitor": "loadavg5 high"},
			map[string]string{"roles": "shop: db, shop: batch", "host_memo": "primary db", "host_id": "22D4", "metric": "loadavg5"},
			"[CRITICAL] loadavg5 high on app01: loadavg5 2.26 > 1.96"},
		{"connectivity", map[string]string{"host": "app01", "type": "connectivity", "monitor": "connectivity"}, nil, "[CRITICAL] connectivity on app01"},
		{"external", map[string]string{"type": "external", "monitor": "shop health"}, map[string]string{"message": "https://shop.example.com/health 503 Service Unavailable"},
			"[CRITICAL] shop health: https://shop.example.com/health 503 Service Unavailable"},
		{"check", map[string]string{"host": "app01", "type": "check", "severity": "warning"}, map[string]string{"message": "PROCS CRITICAL: 0 processes matching nginx"},
			"[WARNING] check-procs-nginx on app01: PROCS CRITICAL: 0 processes matching nginx"},
		{"expression", map[string]string{"type": "expression"}, map[string]string{"metric": "max(role(shop:db, loadavg5))", "metric_value": "3.1"}, "[CRITICAL] db load max: max(role(shop:db, loadavg5)) 3.1 > 3"},
		{"anomalyDetection", map[string]string{"type": "anomalyDetection", "host": "app01"}, nil, "[WARNING] anomaly shop: db on app01"},
		{"query", map[string]string{"type": "query"}, map[string]string{"metric_name": "httpcheck.status", "metric_labels": `{http.method="GET", http.status_code="500"}`}, "[CRITICAL] httpcheck errors: httpcheck.status 1 > 0"},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			res, err := DecodeMackerel(read(t, filepath.Join("mackerel", c.file+".json")), false, now)
			require.NoError(t, err)
			for k, v := range c.labels {
				require.Equal(t, v, res.Alert.Labels[k], "label %s", k)
			}
			for k, v := range c.ann {
				require.Equal(t, v, res.Alert.Annotations[k], "annotation %s", k)
			}
			require.Equal(t, c.title, res.Alert.Annotations["title"])
		})
	}
}
