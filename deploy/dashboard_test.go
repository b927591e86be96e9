package deploy

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDashboardPortable: the dashboard imports into any Grafana (the data
// source is a variable, never a fixed uid), selects job and instance,
// names every series, and gives each panel one unit.
func TestDashboardPortable(t *testing.T) {
	b, err := os.ReadFile("grafana/alertfan.json")
	require.NoError(t, err)
	type ds struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	var dash struct {
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Query      any    `json:"query"`
				Datasource *ds    `json:"datasource"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title      string `json:"title"`
			Datasource *ds    `json:"datasource"`
			FieldCfg   struct {
				Defaults struct {
					Unit string `json:"unit"`
				} `json:"defaults"`
			} `json:"fieldConfig"`
			Targets []struct {
				Expr         string `json:"expr"`
				LegendFormat string `json:"legendFormat"`
				Datasource   *ds    `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(b, &dash))
	vars := map[string]string{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = v.Type
		if v.Datasource != nil {
			require.Equal(t, "${datasource}", v.Datasource.UID, v.Name)
		}
	}
	require.Equal(t, map[string]string{"datasource": "datasource", "job": "query", "instance": "query"}, vars)
	for _, p := range dash.Panels {
		require.NotNil(t, p.Datasource, p.Title)
		require.Equal(t, "${datasource}", p.Datasource.UID, p.Title)
		require.NotEmpty(t, p.FieldCfg.Defaults.Unit, "%s: unit", p.Title)
		seconds := 0
		legends := map[string]bool{}
		for _, tg := range p.Targets {
			require.Equal(t, "${datasource}", tg.Datasource.UID, p.Title)
			require.NotEmpty(t, tg.LegendFormat, "%s: %s", p.Title, tg.Expr)
			require.False(t, legends[tg.LegendFormat], "%s: two series with legend %q", p.Title, tg.LegendFormat)
			legends[tg.LegendFormat] = true
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				i := strings.Index(tg.Expr, m) + len(m)
				require.True(t, strings.HasPrefix(tg.Expr[i:], `{job=~"$job", instance=~"$instance"`), "%s: %s selects job and instance", p.Title, m)
			}
			if strings.Contains(tg.Expr, "_seconds_bucket") || strings.Contains(tg.Expr, "_age_seconds") {
				seconds++
			}
		}
		require.True(t, seconds == 0 || seconds == len(p.Targets), "%s mixes seconds with other units", p.Title)
		if seconds > 0 {
			require.Equal(t, "s", p.FieldCfg.Defaults.Unit, p.Title)
		}
	}
	require.NotContains(t, string(b), `"uid": "prometheus"`, "no hard-coded data source")
}
