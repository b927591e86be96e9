package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRoutesTestExitCodes: 0 when --verify.receivers holds, 1 when it does
// not (as amtool) or the config is broken, 2 for bad input (as a bad flag).
func TestRoutesTestExitCodes(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(`
route:
  receiver: default
  routes:
    - matchers: ['team="db"']
      receiver: db
      continue: true
    - matchers: ['severity="critical"']
      receiver: oncall
receivers:
  - name: default
  - name: db
  - name: oncall
`), 0o600))
	broken := filepath.Join(dir, "broken.yml")
	require.NoError(t, os.WriteFile(broken, []byte("route: {}\n"), 0o600))
	cases := []struct {
		name string
		args []string
		code int
	}{
		{"no check", []string{"team=db"}, 0},
		{"verify match", []string{"--verify.receivers=db", "team=db"}, 0},
		{"verify set, any order", []string{"--verify.receivers=oncall,db", "team=db", "severity=critical"}, 0},
		{"verify mismatch", []string{"--verify.receivers=oncall", "team=db"}, 1},
		{"tree and render", []string{"--tree", "--render", "team=db"}, 0},
		{"no labels", nil, 2},
		{"bad label", []string{"team"}, 2},
		{"bad alerts file", []string{"--alerts.file=" + cfg}, 2},
		{"bad flag", []string{"--verify.receiver=db", "team=db"}, 2},
		{"broken config", []string{"--config.file=" + broken, "team=db"}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"routes", "test"}, c.args...)
			if !slices.ContainsFunc(c.args, func(a string) bool { return strings.HasPrefix(a, "--config.file=") }) {
				args = append(args, "--config.file="+cfg)
			}
			require.Equal(t, c.code, run(args))
		})
	}
}
