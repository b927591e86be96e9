package deploy

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	yaml "go.yaml.in/yaml/v2"

	"github.com/alertfan/alertfan/internal/testenv"
)

type composeFile struct {
	Version  string `yaml:"version"`
	Services map[string]struct {
		Image       string         `yaml:"image"`
		Build       any            `yaml:"build"`
		PullPolicy  string         `yaml:"pull_policy"`
		DependsOn   map[string]any `yaml:"depends_on"`
		Healthcheck map[string]any `yaml:"healthcheck"`
	} `yaml:"services"`
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile("../docker-compose.yml")
	require.NoError(t, err)
	var c composeFile
	require.NoError(t, yaml.Unmarshal(b, &c))
	require.NotContains(t, string(b), "\nversion:", "the version key is obsolete")
	return c
}

// TestComposeConventions: no obsolete version key, the image is built
// once, and a service waits for a dependency's health where it has one.
func TestComposeConventions(t *testing.T) {
	c := readCompose(t)
	require.Empty(t, c.Version)
	var builders []string
	for name, s := range c.Services {
		if s.Build != nil {
			builders = append(builders, name)
		}
		if s.Image == "alertfan:latest" && s.Build == nil {
			require.Equal(t, "never", s.PullPolicy, "%s uses the image the alertfan service builds", name)
		}
	}
	require.Equal(t, []string{"alertfan"}, builders, "the image is built once")
	// Healthy means: its own healthcheck, or alertfan's image HEALTHCHECK.
	hasHealth := func(name string) bool {
		s := c.Services[name]
		if s.Healthcheck != nil {
			return s.Healthcheck["disable"] != true
		}
		return s.Image == "alertfan:latest"
	}
	for name, s := range c.Services {
		for dep, cond := range s.DependsOn {
			m, ok := cond.(map[any]any)
			require.True(t, ok, "%s depends_on %s: want a condition", name, dep)
			want := "service_started"
			if hasHealth(dep) {
				want = "service_healthy"
			}
			require.Equal(t, want, m["condition"], "%s depends_on %s", name, dep)
		}
	}
}

// TestComposePinsTestedVersions: the stack runs the Prometheus and
// Alertmanager versions the end-to-end test runs.
func TestComposePinsTestedVersions(t *testing.T) {
	c := readCompose(t)
	for _, x := range []struct{ image, bin string }{
		{"prom/prometheus", "prometheus"},
		{"prom/alertmanager", "prometheus-alertmanager"},
	} {
		var pinned string
		for _, s := range c.Services {
			if tag, ok := strings.CutPrefix(s.Image, x.image+":v"); ok {
				pinned = tag
			}
		}
		require.NotEmpty(t, pinned, x.image)
		bin := testenv.Binary(t, x.bin)
		out := run(t, ".", bin, "--version")
		m := regexp.MustCompile(`version (\d+\.\d+\.\d+)`).FindStringSubmatch(out)
		require.NotNil(t, m, out)
		require.Equal(t, m[1], pinned, "%s: the compose stack pins %s, the tests run %s", x.image, pinned, m[1])
	}
}
