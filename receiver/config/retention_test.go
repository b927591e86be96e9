package config

import (
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// TestRetention: storage.retention has documented defaults, strict keys,
// durations > 0, and closed_issues covers every reopen_within.
func TestRetention(t *testing.T) {
	backlog := func(reopen string) string {
		return "route:\n  receiver: r\nreceivers:\n  - name: r\n    backlog_configs:\n      - api_url: https://x.backlog.com\n        api_key: k\n        project: OPS\n        issue_type: Bug\n" +
			"        reopen_within: " + reopen + "\n"
	}
	pd := "route:\n  receiver: r\nreceivers:\n  - name: r\n"
	day := model.Duration(24 * time.Hour)
	cases := []struct {
		name, yaml string
		want       RetentionConfig
		err        string
	}{
		{"defaults without storage", pd, DefaultRetention, ""},
		{"defaults with storage", "storage:\n  driver: sqlite\n  path: x.db\n" + pd, DefaultRetention, ""},
		{"some keys", "storage:\n  retention:\n    history: 1d\n    completed_jobs: 10m\n" + pd,
			RetentionConfig{CompletedJobs: model.Duration(10 * time.Minute), ResolvedStates: 7 * day, ClosedIssues: 30 * day, DeadLetters: 30 * day, History: day}, ""},
		{"zero", "storage:\n  retention:\n    dead_letters: 0s\n" + pd, RetentionConfig{}, "storage.retention.dead_letters: must be > 0, got 0s"},
		{"negative", "storage:\n  retention:\n    resolved_states: -1h\n" + pd, RetentionConfig{}, "not a valid duration"},
		{"unknown key", "storage:\n  retention:\n    states: 1h\n" + pd, RetentionConfig{}, "field states not found"},
		{"reopen_within covered", "storage:\n  retention:\n    closed_issues: 2d\n" + backlog("2d"),
			RetentionConfig{CompletedJobs: model.Duration(time.Hour), ResolvedStates: 7 * day, ClosedIssues: 2 * day, DeadLetters: 30 * day, History: 7 * day}, ""},
		{"reopen_within longer", "storage:\n  retention:\n    closed_issues: 1d\n" + backlog("3d"), RetentionConfig{},
			`storage.retention.closed_issues: 1d is shorter than receivers "r": backlog_configs[0].reopen_within (3d)`},
		{"reopen_within past the default", backlog("31d"), RetentionConfig{}, "storage.retention.closed_issues: 30d is shorter"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.yaml), t.TempDir())
			if c.err != "" {
				require.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, cfg.Storage.Retention)
		})
	}
}
