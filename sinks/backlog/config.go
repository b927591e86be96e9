package backlog

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
)

// What to do when an alert resolves.
const (
	OnResolvedClose   = "close"
	OnResolvedComment = "comment"
	OnResolvedNone    = "none"
)

// What to do when an alert is notified again while its issue is open.
const (
	OnRepeatNone    = "none"
	OnRepeatComment = "comment"
)

// Issue modes.
const (
	// ModeAlert keeps one issue per alert identity.
	ModeAlert = "alert"
	// ModeGroup keeps one issue per Alertmanager group key, like the
	// PagerDuty sink's group mode.
	ModeGroup = "group"
)

// DefaultConfig is what an entry gets for every key it leaves out. Names
// here are Backlog's built-in ones, which alertfan resolves by their fixed
// ids in a space of any language (see names.go): High/高 = 2,
// Normal/中 = 3, Open/未対応 = 1, Closed/完了 = 4.
var DefaultConfig = Config{
	Mode:               ModeAlert,
	Priority:           "{{ if eq .CommonLabels.severity \"critical\" }}High{{ else }}Normal{{ end }}",
	DefaultPriority:    "Normal",
	Summary:            `{{ template "backlog.default.summary" . }}`,
	Description:        `{{ template "backlog.default.description" . }}`,
	RepeatComment:      `{{ template "backlog.default.repeat" . }}`,
	AckComment:         `{{ template "backlog.default.acknowledged" . }}`,
	ResolvedComment:    `{{ template "backlog.default.resolved" . }}`,
	RefireComment:      `{{ template "backlog.default.refire" . }}`,
	OnResolved:         OnResolvedClose,
	OnRepeat:           OnRepeatNone,
	CloseStatus:        "Closed",
	ReopenStatus:       "Open",
	ReopenWithin:       model.Duration(time.Hour),
	RateLimitPerMinute: 60,
	Timeout:            model.Duration(10 * time.Second),
}

// Config is one entry of a receiver's backlog_configs.
type Config struct {
	APIURL     string           `yaml:"api_url"`
	APIKey     commoncfg.Secret `yaml:"api_key,omitempty"`
	APIKeyFile string           `yaml:"api_key_file,omitempty"`
	// Project is a project key ("OPS"); IssueType, CloseStatus,
	// ReopenStatus and Resolution are names. All are resolved to ids
	// through the API at start and on reload.
	// Mode is alert (one issue per alert, default) or group (one issue per
	// Alertmanager group, its description kept up to date).
	Mode         string `yaml:"mode,omitempty"`
	Project      string `yaml:"project"`
	IssueType    string `yaml:"issue_type"`
	CloseStatus  string `yaml:"close_status,omitempty"`
	ReopenStatus string `yaml:"reopen_status,omitempty"`
	Resolution   string `yaml:"resolution,omitempty"`
	// SkipReopenResolutions are resolution names: when a person closed
	// the issue with one of them, a new firing opens no issue (jiralert's
	// wont_fix_resolution).
	SkipReopenResolutions []string `yaml:"skip_reopen_resolutions,omitempty"`
	// Priority, Summary, Description, Assignee and CustomFields' values are
	// templates over Alertmanager's template data of the one alert.
	Priority string `yaml:"priority,omitempty"`
	// DefaultPriority is used when Priority renders a name the space does
	// not have (with a warning and alertfan_backlog_fallbacks_total).
	DefaultPriority string            `yaml:"default_priority,omitempty"`
	Summary         string            `yaml:"summary,omitempty"`
	Description     string            `yaml:"description,omitempty"`
	Assignee        string            `yaml:"assignee,omitempty"`
	CustomFields    map[string]string `yaml:"custom_fields,omitempty"`

	// Comment texts (templates in the project's notation) and whether
	// repeats and resolves also rewrite the description (always in group
	// mode).
	RepeatComment     string `yaml:"repeat_comment,omitempty"`
	AckComment        string `yaml:"ack_comment,omitempty"`
	ResolvedComment   string `yaml:"resolved_comment,omitempty"`
	RefireComment     string `yaml:"refire_comment,omitempty"`
	UpdateDescription bool   `yaml:"update_description,omitempty"`

	OnResolved         string         `yaml:"on_resolved,omitempty"`
	OnRepeat           string         `yaml:"on_repeat,omitempty"`
	ReopenWithin       model.Duration `yaml:"reopen_within,omitempty"`
	RateLimitPerMinute int            `yaml:"rate_limit_per_minute,omitempty"`
	Timeout            model.Duration `yaml:"timeout,omitempty"`
}

// UnmarshalYAML applies defaults and validates.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultConfig
	type plain Config
	if err := unmarshal((*plain)(c)); err != nil {
		return err
	}
	u, err := url.Parse(c.APIURL)
	if c.APIURL == "" {
		return errors.New("api_url: required (https://SPACE.backlog.com, .backlog.jp or .backlogtool.com)")
	}
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("api_url: %q is not an absolute http(s) URL", c.APIURL)
	}
	if u.Path != "" && u.Path != "/" {
		return fmt.Errorf("api_url: %q must be the space's root URL, without a path (alertfan adds /api/v2)", c.APIURL)
	}
	c.APIURL = strings.TrimSuffix(c.APIURL, "/")
	if c.APIKey == "" && c.APIKeyFile == "" {
		return errors.New("api_key or api_key_file is required")
	}
	if c.APIKey != "" && c.APIKeyFile != "" {
		return errors.New("at most one of api_key and api_key_file may be set")
	}
	if c.Project == "" {
		return errors.New("project: required (the project key, e.g. OPS)")
	}
	if c.IssueType == "" {
		return errors.New("issue_type: required (an issue type name of the project, e.g. Bug)")
	}
	switch c.Mode {
	case ModeAlert, ModeGroup:
	default:
		return fmt.Errorf("mode: %q is not one of alert, group", c.Mode)
	}
	if c.DefaultPriority == "" || strings.Contains(c.DefaultPriority, "{{") {
		return errors.New("default_priority: must be a priority name or id, not empty or a template")
	}
	switch c.OnResolved {
	case OnResolvedClose, OnResolvedComment, OnResolvedNone:
	default:
		return fmt.Errorf("on_resolved: %q is not one of close, comment, none", c.OnResolved)
	}
	switch c.OnRepeat {
	case OnRepeatNone, OnRepeatComment:
	default:
		return fmt.Errorf("on_repeat: %q is not one of none, comment", c.OnRepeat)
	}
	if c.OnResolved == OnResolvedClose && c.CloseStatus == "" {
		return errors.New("close_status: required when on_resolved is close")
	}
	if c.ReopenWithin < 0 {
		return errors.New("reopen_within: must be >= 0")
	}
	if c.RateLimitPerMinute <= 0 {
		return fmt.Errorf("rate_limit_per_minute: must be > 0, got %d", c.RateLimitPerMinute)
	}
	if c.Timeout <= 0 {
		return errors.New("timeout: must be > 0")
	}
	if c.Summary == "" {
		return errors.New("summary: must not be empty")
	}
	return nil
}
