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

// An alert Mackerel closes without recovering (by hand, its monitor
// deleted, its host retired) comes with isOpen false and its last status;
// no ok follows, so it resolves, ending at closedAt.
func TestMackerelClosedAlertResolves(t *testing.T) {
	cases := []struct {
		name, alert string
		resolved    bool
	}{
		{"open critical", `"status":"critical","isOpen":true,"trigger":"monitoring"`, false},
		{"isOpen absent", `"status":"critical","trigger":"monitoring"`, false},
		{"closed by hand", `"status":"critical","isOpen":false,"trigger":"manual","closedAt":1765000900`, true},
		{"monitor deleted", `"status":"warning","isOpen":false,"trigger":"monitorDelete","closedAt":1765000900`, true},
		{"host retired", `"status":"critical","isOpen":false,"trigger":"hostRetire","closedAt":1765000900`, true},
		{"unknown, closed", `"status":"unknown","isOpen":false,"trigger":"manual","closedAt":1765000900`, true},
		{"ok", `"status":"ok","isOpen":false,"trigger":"monitoring","closedAt":1765000900`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := `{"orgName":"Org","event":"alert","type":"host","message":"loadavg5 12.5 > 10",
				"host":{"id":"22D4","name":"db1","status":"working","isRetired":` + map[bool]string{true: "true", false: "false"}[c.name == "host retired"] + `},
				"alert":{"id":"3Xyz1","url":"https://mackerel.io/orgs/o/alerts/3Xyz1","openedAt":1765000000,"monitorName":"loadavg5",` + c.alert + `}}`
			res, err := DecodeMackerel([]byte(body), false, now)
			require.NoError(t, err)
			if !c.resolved {
				require.Equal(t, "firing", res.Alert.Status)
				require.True(t, res.Alert.EndsAt.IsZero())
				return
			}
			require.Equal(t, "resolved", res.Alert.Status)
			require.EqualValues(t, 1765000900, res.Alert.EndsAt.Unix())
			require.Equal(t, "mackerel:3Xyz1", res.Alert.Identity)
		})
	}
}
