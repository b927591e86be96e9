package sinks

import (
	"net/url"
	"strings"
	"sync"
	"testing"
	"weak"

	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/alertmanager/types"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// TestExecuteTextMatchesAlertmanager renders texts with the parse-once
// cache and with Alertmanager's ExecuteTextString: output and errors must
// be the same.
func TestExecuteTextMatchesAlertmanager(t *testing.T) {
	tmpl := newTestTemplates(t)
	require.NoError(t, tmpl.Parse(strings.NewReader(`{{ define "mine" }}mine {{ .Status }}{{ end }}`)))
	data := tmpl.Data("recv", model.LabelSet{"alertname": "A"}, nil, "", &types.Alert{Alert: model.Alert{Labels: model.LabelSet{"alertname": "A", "instance": "h1"}}})
	for _, tc := range []struct{ name, text string }{
		{"empty", ""},
		{"plain", "no actions"},
		{"default template", `{{ template "pagerduty.default.description" . }}`},
		{"user template", `{{ template "mine" . }}`},
		{"missing key", `{{ .CommonLabels.nope }}|{{ .Nope }}`},
		{"functions", `{{ .CommonLabels.alertname | toUpper }} {{ len .Alerts.Firing }}`},
		{"define in text", `{{ define "x" }}X{{ end }}{{ template "x" }}`},
		{"parse error", `{{ .Status `},
		{"exec error", `{{ template "missing" . }}`},
		{"routeLabels", `{{ routeLabels "team" }}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, wantErr := tmpl.ExecuteTextString(tc.text, data)
			for range 2 { // the second render comes from the cache
				got, err := ExecuteText(tmpl, tc.text, data)
				require.Equal(t, want, got)
				if wantErr != nil {
					require.EqualError(t, err, wantErr.Error())
				} else {
					require.NoError(t, err)
				}
			}
		})
	}
	v, ok := textCaches.Load(weak.Make(tmpl))
	require.True(t, ok, "FromGlobs registers the set")
	require.NotEmpty(t, v.(*textCache).texts, "texts were rendered from the cache")
}

func TestExecuteTextConcurrent(t *testing.T) {
	tmpl := newTestTemplates(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := tmpl.Data("recv", nil, nil, "", &types.Alert{Alert: model.Alert{Labels: model.LabelSet{"alertname": model.LabelValue(strings.Repeat("a", i+1))}}})
			for range 50 {
				got, err := ExecuteText(tmpl, `{{ .CommonLabels.alertname }}`, data)
				require.NoError(t, err)
				require.Equal(t, strings.Repeat("a", i+1), got)
			}
		}()
	}
	wg.Wait()
}

// A set with a template that calls routeLabels renders the slow way,
// where Alertmanager binds the resolver to the render's data.
func TestExecuteTextRouteLabelsInSet(t *testing.T) {
	tmpl := newTestTemplates(t)
	require.NoError(t, tmpl.Parse(strings.NewReader(`{{ define "team" }}{{ routeLabels "team" }}{{ end }}`)))
	data := tmpl.Data("recv", nil, model.LabelSet{"team": "db"}, "", &types.Alert{})
	want, err := tmpl.ExecuteTextString(`{{ template "team" . }}`, data)
	require.NoError(t, err)
	got, err := ExecuteText(tmpl, `{{ template "team" . }}`, data)
	require.NoError(t, err)
	require.Equal(t, want, got)
}

func newTestTemplates(t *testing.T) *template.Template {
	tmpl, err := FromGlobs(nil)
	require.NoError(t, err)
	tmpl.ExternalURL, _ = url.Parse("http://alertfan.example")
	return tmpl
}
