package config

import (
	"fmt"
	"time"

	"github.com/prometheus/common/model"
)

// RetentionConfig bounds how long the store keeps what no longer drives any
// delivery (storage.retention). Every duration must be > 0; the janitor
// deletes what is older in batches of 1,000 rows.
type RetentionConfig struct {
	// CompletedJobs keeps River's completed, cancelled and discarded jobs
	// (the job rows, not the alerts' states) this long after they finished.
	CompletedJobs model.Duration `yaml:"completed_jobs,omitempty"`
	// ResolvedStates keeps a resolved and delivered (target, key) state,
	// and an alert's own newest state once no target holds it open, this
	// long after the last update. They are what makes a late copy of a
	// resolved occurrence (an HA replica's delayed firing) stale; a copy
	// arriving later than this fires again. Keep it longer than
	// Alertmanager's --data.retention (120h by default), the longest time
	// Alertmanager may send an occurrence again.
	ResolvedStates model.Duration `yaml:"resolved_states,omitempty"`
	// ClosedIssues keeps the record of a Backlog issue alertfan closed (or
	// a person closed) this long after it was last written. A firing
	// within reopen_within reopens the issue through that record, so this
	// must be >= the largest reopen_within.
	ClosedIssues model.Duration `yaml:"closed_issues,omitempty"`
	// DeadLetters keeps a dead letter this long after it was made.
	DeadLetters model.Duration `yaml:"dead_letters,omitempty"`
	// History keeps delivery history rows this long.
	History model.Duration `yaml:"history,omitempty"`
}

// DefaultRetention: finished jobs an hour, resolved states a week (longer
// than Alertmanager's 5-day data retention), closed issue records and dead
// letters 30 days, history a week.
var DefaultRetention = RetentionConfig{
	CompletedJobs:  model.Duration(time.Hour),
	ResolvedStates: model.Duration(7 * 24 * time.Hour),
	ClosedIssues:   model.Duration(30 * 24 * time.Hour),
	DeadLetters:    model.Duration(30 * 24 * time.Hour),
	History:        model.Duration(7 * 24 * time.Hour),
}

// UnmarshalYAML applies the defaults and checks every duration is > 0.
func (c *RetentionConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultRetention
	type plain RetentionConfig
	if err := unmarshal((*plain)(c)); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		v    model.Duration
	}{
		{"completed_jobs", c.CompletedJobs},
		{"resolved_states", c.ResolvedStates},
		{"closed_issues", c.ClosedIssues},
		{"dead_letters", c.DeadLetters},
		{"history", c.History},
	} {
		if f.v <= 0 {
			return fmt.Errorf("storage.retention.%s: must be > 0, got %s", f.name, f.v)
		}
	}
	return nil
}

// checkReopen makes sure no closed issue's record is pruned while a firing
// could still reopen the issue through it.
func (c *Config) checkReopen() error {
	for _, r := range c.Receivers {
		for i, bc := range r.BacklogConfigs {
			if bc != nil && bc.ReopenWithin > c.Storage.Retention.ClosedIssues {
				return fmt.Errorf("storage.retention.closed_issues: %s is shorter than receivers %q: backlog_configs[%d].reopen_within (%s); a re-fire within reopen_within needs the closed issue's record",
					c.Storage.Retention.ClosedIssues, r.Name, i, bc.ReopenWithin)
			}
		}
	}
	return nil
}
