package backlog_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	yaml "go.yaml.in/yaml/v2"

	"github.com/alertfan/alertfan/sinks/backlog"
)

func TestConfigKeys(t *testing.T) {
	base := "api_url: https://example.backlog.com\napi_key: k\nproject: OPS\nissue_type: Bug\n"
	cases := []struct {
		name, extra, want string
		check             func(t *testing.T, c *backlog.Config)
	}{
		{"defaults", "", "", func(t *testing.T, c *backlog.Config) {
			require.Equal(t, backlog.ModeAlert, c.Mode)
			require.Equal(t, "Normal", c.DefaultPriority)
			require.Empty(t, c.SkipReopenResolutions)
			require.False(t, c.UpdateDescription)
			require.Contains(t, c.RefireComment, "backlog.default.refire")
		}},
		{"group mode and the new keys", "mode: group\ndefault_priority: 中\nskip_reopen_resolutions: [対応しない, Invalid]\nupdate_description: true\nresolved_comment: done\n", "", func(t *testing.T, c *backlog.Config) {
			require.Equal(t, backlog.ModeGroup, c.Mode)
			require.Equal(t, []string{"対応しない", "Invalid"}, c.SkipReopenResolutions)
			require.Equal(t, "done", c.ResolvedComment)
		}},
		{"bad mode", "mode: groups\n", `mode: "groups" is not one of alert, group`, nil},
		{"templated default_priority", "default_priority: '{{ .CommonLabels.p }}'\n", "default_priority: must be a priority name or id", nil},
		{"unknown key", "skip_reopen: [x]\n", "field skip_reopen not found", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var conf backlog.Config
			err := yaml.UnmarshalStrict([]byte(base+c.extra), &conf)
			if c.want != "" {
				require.ErrorContains(t, err, c.want)
				return
			}
			require.NoError(t, err)
			c.check(t, &conf)
		})
	}
}
