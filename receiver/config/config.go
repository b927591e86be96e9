// Package config owns alertfan's configuration file: strict YAML loading,
// defaults, validation, `*_file` secrets and the cross-references between the
// route tree and the receivers.
package config

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	yaml "go.yaml.in/yaml/v2"

	"github.com/alertfan/alertfan/receiver/route"
	"github.com/alertfan/alertfan/sinks/backlog"
	"github.com/alertfan/alertfan/sinks/pagerduty"
)

// Storage drivers.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// Config is the whole file.
type Config struct {
	Storage   StorageConfig  `yaml:"storage"`
	Intake    IntakeConfig   `yaml:"intake"`
	Delivery  DeliveryConfig `yaml:"delivery"`
	Templates []string       `yaml:"templates,omitempty"`
	Route     *route.Config  `yaml:"route"`
	Receivers []*Receiver    `yaml:"receivers"`

	// Filename is where the config was read from; relative paths in it
	// (templates, *_file) are resolved against its directory.
	Filename string `yaml:"-"`
}

// StorageConfig selects the durable store.
type StorageConfig struct {
	Driver  string           `yaml:"driver"`
	Path    string           `yaml:"path,omitempty"`
	DSN     commoncfg.Secret `yaml:"dsn,omitempty"`
	DSNFile string           `yaml:"dsn_file,omitempty"`
	// MaxConnections is each replica's PostgreSQL connection pool size;
	// 0 means delivery.workers/2 + 8 (33 with the defaults).
	MaxConnections int `yaml:"max_connections,omitempty"`
	// History keeps the delivery history (GET /api/v1/alerts/{identity},
	// the status page): on by default.
	History bool `yaml:"history"`
	// Retention bounds what the store keeps (see RetentionConfig).
	Retention RetentionConfig `yaml:"retention,omitempty"`
}

// DefaultStorage is the embedded SQLite store.
var DefaultStorage = StorageConfig{Driver: DriverSQLite, Path: "data/alertfan.db", History: true, Retention: DefaultRetention}

// UnmarshalYAML applies defaults and validates.
func (c *StorageConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultStorage
	type plain StorageConfig
	if err := unmarshal((*plain)(c)); err != nil {
		return err
	}
	switch c.Driver {
	case DriverSQLite:
		if c.Path == "" {
			return errors.New("storage.path: required for driver sqlite")
		}
		if c.MaxConnections != 0 {
			return errors.New("storage.max_connections: only for driver postgres")
		}
		if c.DSN != "" || c.DSNFile != "" {
			return errors.New("storage.dsn, storage.dsn_file: only for driver postgres")
		}
	case DriverPostgres:
		if c.DSN == "" && c.DSNFile == "" {
			return errors.New("storage.dsn or storage.dsn_file: required for driver postgres")
		}
		if c.DSN != "" && c.DSNFile != "" {
			return errors.New("storage: at most one of dsn and dsn_file may be set")
		}
		if c.MaxConnections < 0 || c.MaxConnections == 1 || c.MaxConnections == 2 || c.MaxConnections == 3 {
			return fmt.Errorf("storage.max_connections: must be 0 (default) or at least 4, got %d", c.MaxConnections)
		}
		c.Path = ""
	default:
		return fmt.Errorf("storage.driver: %q is not one of %q, %q", c.Driver, DriverSQLite, DriverPostgres)
	}
	return nil
}

// IntakeConfig protects and bounds the intake endpoints.
type IntakeConfig struct {
	BearerToken     commoncfg.Secret `yaml:"bearer_token,omitempty"`
	BearerTokenFile string           `yaml:"bearer_token_file,omitempty"`
	MaxBodyBytes    int64            `yaml:"max_body_bytes,omitempty"`
	// PagerDuty holds what the Events v2-compatible intake needs.
	PagerDuty PagerDutyIntake `yaml:"pagerduty,omitempty"`
	// Mackerel tunes the Mackerel webhook intake.
	Mackerel MackerelIntake `yaml:"mackerel,omitempty"`
	// EventsPerSecond bounds intake of /v2/enqueue (PagerDuty senders expect
	// a 429 when a service can't take more); 0 means unlimited.
	EventsPerSecond float64 `yaml:"events_per_second,omitempty"`

	// Limits on what one request may hold; a breach is a 4xx naming the
	// limit and nothing of the request is stored.
	MaxAlertsPerNotification int `yaml:"max_alerts_per_notification,omitempty"`
	MaxLabelsPerAlert        int `yaml:"max_labels_per_alert,omitempty"`
	// MaxNameLength bounds label and annotation names, in bytes.
	MaxNameLength            int `yaml:"max_name_length,omitempty"`
	MaxLabelValueLength      int `yaml:"max_label_value_length,omitempty"`
	MaxAnnotationValueLength int `yaml:"max_annotation_value_length,omitempty"`
	// MaxInflightBodyBytes bounds the bodies of all intake requests being
	// handled at once (a request whose length is not announced counts as
	// max_body_bytes); beyond it requests get 503 (PagerDuty: 429) and are
	// retried by the sender. Decoding costs a multiple of the body, so
	// this is what bounds intake memory.
	MaxInflightBodyBytes int64 `yaml:"max_inflight_body_bytes,omitempty"`
}

// PagerDutyIntake maps routing keys that senders use to names routes can
// match as label routing_key_name, so that no key ever becomes a label.
type PagerDutyIntake struct {
	RoutingKeys map[string]commoncfg.Secret `yaml:"routing_keys,omitempty"`
	// RoutingKeyFiles is the same map with each key read from a file.
	RoutingKeyFiles map[string]string `yaml:"routing_key_files,omitempty"`
	// RequireKnownKey refuses events whose routing key is in neither map.
	RequireKnownKey bool `yaml:"require_known_key,omitempty"`
}

// MackerelIntake tunes the Mackerel webhook intake.
type MackerelIntake struct {
	// RouteOtherEvents routes events other than "alert" (hostStatus,
	// hostRegister, hostRetire, alertGroup, sample) as one-off alerts with
	// label event=<event>; by default they are accepted and counted only.
	RouteOtherEvents bool `yaml:"route_other_events,omitempty"`
}

// DefaultIntake is 4 MiB bodies, no token, and limits that no real
// Alertmanager, PagerDuty or Mackerel sender reaches.
var DefaultIntake = IntakeConfig{
	MaxBodyBytes:             4 << 20,
	MaxAlertsPerNotification: 1000,
	MaxLabelsPerAlert:        100,
	MaxNameLength:            256,
	MaxLabelValueLength:      4096,
	MaxAnnotationValueLength: 65536,
	MaxInflightBodyBytes:     16 << 20,
}

// UnmarshalYAML applies defaults and validates.
func (c *IntakeConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultIntake
	type plain IntakeConfig
	if err := unmarshal((*plain)(c)); err != nil {
		return err
	}
	if c.MaxBodyBytes <= 0 {
		return fmt.Errorf("intake.max_body_bytes: must be > 0, got %d", c.MaxBodyBytes)
	}
	if c.BearerToken != "" && c.BearerTokenFile != "" {
		return errors.New("intake: at most one of bearer_token and bearer_token_file may be set")
	}
	if c.EventsPerSecond < 0 {
		return errors.New("intake.events_per_second: must be >= 0")
	}
	for _, l := range []struct {
		name string
		v    int64
	}{
		{"max_alerts_per_notification", int64(c.MaxAlertsPerNotification)},
		{"max_labels_per_alert", int64(c.MaxLabelsPerAlert)},
		{"max_name_length", int64(c.MaxNameLength)},
		{"max_label_value_length", int64(c.MaxLabelValueLength)},
		{"max_annotation_value_length", int64(c.MaxAnnotationValueLength)},
		{"max_inflight_body_bytes", c.MaxInflightBodyBytes},
	} {
		if l.v <= 0 {
			return fmt.Errorf("intake.%s: must be > 0, got %d", l.name, l.v)
		}
	}
	if c.MaxInflightBodyBytes < c.MaxBodyBytes {
		return fmt.Errorf("intake.max_inflight_body_bytes: must be >= max_body_bytes (%d), got %d", c.MaxBodyBytes, c.MaxInflightBodyBytes)
	}
	for name := range c.PagerDuty.RoutingKeyFiles {
		if _, dup := c.PagerDuty.RoutingKeys[name]; dup {
			return fmt.Errorf("intake.pagerduty: %q is in both routing_keys and routing_key_files", name)
		}
	}
	for name, k := range c.PagerDuty.RoutingKeys {
		if err := checkIntakeKey(string(k)); err != nil {
			return fmt.Errorf("intake.pagerduty.routing_keys.%s: %w", name, err)
		}
	}
	return nil
}

// checkIntakeKey refuses a routing key no sender's event can carry: the
// PagerDuty endpoints take only 32-character routing keys, as PagerDuty
// does (400 "Length of 'routing_key' is incorrect"), so a listed key of
// another length would refuse every event of its sender, which
// Alertmanager's pagerduty_configs never retries. The key is not quoted.
func checkIntakeKey(k string) error {
	if len(k) != pagerduty.RoutingKeyLen {
		return fmt.Errorf("routing keys are 32 characters (as PagerDuty's), this one has %d: every event carrying it would be refused", len(k))
	}
	return nil
}

// DeliveryConfig tunes the workers and retries.
type DeliveryConfig struct {
	// Workers is how many deliveries run at once per sink kind.
	Workers int `yaml:"workers,omitempty"`
	// MaxAttempts before a retryable failure becomes a dead letter.
	MaxAttempts int            `yaml:"max_attempts,omitempty"`
	MinBackoff  model.Duration `yaml:"min_backoff,omitempty"`
	MaxBackoff  model.Duration `yaml:"max_backoff,omitempty"`
	// JobTimeout bounds one delivery attempt.
	JobTimeout model.Duration `yaml:"job_timeout,omitempty"`
	// RescueAfter is when a job left running by a dead replica is taken
	// over (PostgreSQL; SQLite recovers at start since one process owns it).
	RescueAfter model.Duration `yaml:"rescue_after,omitempty"`
	// PollInterval is how often workers look for jobs nothing woke them
	// for (retries, other replicas' work). 0 picks per driver: 1s on SQLite,
	// where every insert wakes the workers after its commit, 100ms on
	// PostgreSQL, where another replica's inserts are only seen by polling.
	PollInterval model.Duration `yaml:"poll_interval,omitempty"`
	// MaxAge bounds how long one delivery keeps failing (from its first
	// failed attempt) before it is dead-lettered, whatever max_attempts
	// allows. Only the target's answers count; alertfan's own pacing
	// waits for the rate limit do not.
	MaxAge model.Duration `yaml:"max_age,omitempty"`
}

// DefaultDelivery keeps retrying for about four hours before dead-lettering.
var DefaultDelivery = DeliveryConfig{
	Workers:     50,
	MaxAttempts: 50,
	MinBackoff:  model.Duration(time.Second),
	MaxBackoff:  model.Duration(5 * time.Minute),
	JobTimeout:  model.Duration(time.Minute),
	RescueAfter: model.Duration(5 * time.Minute),
	MaxAge:      model.Duration(12 * time.Hour),
}

// UnmarshalYAML applies defaults and validates.
func (c *DeliveryConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultDelivery
	type plain DeliveryConfig
	if err := unmarshal((*plain)(c)); err != nil {
		return err
	}
	return c.validate()
}

func (c *DeliveryConfig) validate() error {
	switch {
	case c.Workers < 1 || c.Workers > 10000:
		return fmt.Errorf("delivery.workers: must be 1..10000, got %d", c.Workers)
	case c.MaxAttempts < 1 || c.MaxAttempts > 10000:
		return fmt.Errorf("delivery.max_attempts: must be between 1 and 10000, got %d", c.MaxAttempts)
	case c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff:
		return errors.New("delivery.min_backoff, max_backoff: need 0 < min_backoff <= max_backoff")
	case c.JobTimeout <= 0:
		return errors.New("delivery.job_timeout: must be > 0")
	case c.RescueAfter <= c.JobTimeout:
		return errors.New("delivery.rescue_after: must be longer than job_timeout, or a slow job would run twice")
	case c.PollInterval != 0 && c.PollInterval < model.Duration(time.Millisecond):
		return errors.New("delivery.poll_interval: must be >= 1ms (or 0 for the driver's default)")
	case c.MaxAge < 0:
		return errors.New("delivery.max_age: must be >= 0 (0: no bound but max_attempts)")
	}
	return nil
}

// Receiver names a set of destinations.
type Receiver struct {
	Name             string              `yaml:"name"`
	PagerdutyConfigs []*pagerduty.Config `yaml:"pagerduty_configs,omitempty"`
	BacklogConfigs   []*backlog.Config   `yaml:"backlog_configs,omitempty"`
	// ResolveAfter, when set, resolves at this receiver's destinations an
	// alert its sender has not refreshed for that long (silenced,
	// inhibited, or forgotten by an Alertmanager restart: Alertmanager
	// issue #226). It must be longer than the sender's resend interval
	// (Alertmanager's repeat_interval + group_interval, 4h05m by default). At group-mode
	// targets it resolves a group no message mentioned for that long (one
	// that resolved over max_alerts sends only truncated messages, which
	// never resolve it). A later firing opens the alert or group again.
	ResolveAfter model.Duration `yaml:"resolve_after,omitempty"`
}

var receiverName = regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)

// UnmarshalYAML validates the name.
func (r *Receiver) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Receiver
	if err := unmarshal((*plain)(r)); err != nil {
		return err
	}
	if r.Name == "" {
		return errors.New("receivers: a receiver has no name")
	}
	if !receiverName.MatchString(r.Name) {
		return fmt.Errorf("receivers: name %q may hold only letters, digits and _ . : -", r.Name)
	}
	if r.ResolveAfter < 0 || (r.ResolveAfter != 0 && r.ResolveAfter < model.Duration(time.Second)) {
		return fmt.Errorf("receivers %q: resolve_after: must be at least 1s (or unset), got %s", r.Name, r.ResolveAfter)
	}
	return nil
}

// UnmarshalYAML applies the top-level defaults and checks what spans
// sections.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	c.Storage = DefaultStorage
	c.Intake = DefaultIntake
	c.Delivery = DefaultDelivery
	type plain Config
	if err := unmarshal((*plain)(c)); err != nil {
		return err
	}
	if c.Route == nil {
		return errors.New("route: missing; the root route must name a receiver")
	}
	if len(c.Receivers) == 0 {
		return errors.New("receivers: at least one receiver is required")
	}
	names := map[string]bool{}
	for _, r := range c.Receivers {
		if r == nil {
			return errors.New("receivers: empty entry")
		}
		if names[r.Name] {
			return fmt.Errorf("receivers: %q is defined twice", r.Name)
		}
		names[r.Name] = true
	}
	tree, err := route.New(c.Route)
	if err != nil {
		return err
	}
	if err := c.checkReopen(); err != nil {
		return err
	}
	var refErr error
	tree.Walk(func(n *route.Route) {
		if refErr == nil && !names[n.Receiver] {
			refErr = fmt.Errorf("%s: receiver %q does not exist (receivers: %s)", n.Path, n.Receiver, strings.Join(slices.Sorted(maps.Keys(names)), ", "))
		}
	})
	return refErr
}

// Load reads and validates a config file. Errors name the file and, for
// YAML errors, the line.
func Load(filename string) (*Config, error) {
	b, err := os.ReadFile(filename)
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(b, filepath.Dir(filename))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filename, err)
	}
	cfg.Filename = filename
	return cfg, nil
}

// Parse validates a config held in memory; dir resolves relative paths.
func Parse(b []byte, dir string) (*Config, error) {
	cfg := &Config{}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil, errors.New("empty configuration")
	}
	if line := secondDocument(b); line > 0 {
		return nil, fmt.Errorf("line %d: a second YAML document (after ---): a config file holds one, and the rest would be ignored", line)
	}
	if err := yaml.UnmarshalStrict(b, cfg); err != nil {
		// yaml.v2 places syntax and type errors ("line 3: …"), not what a
		// value's own validation refuses: find that value's line.
		if hasLine.MatchString(err.Error()) {
			return nil, err
		}
		switch line, path := locate(b, err); {
		case line > 0 && path != "":
			return nil, fmt.Errorf("line %d: %s: %w", line, path, err)
		case line > 0:
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		return nil, err
	}
	if err := cfg.resolveFiles(dir); err != nil {
		return nil, err
	}
	return cfg, nil
}

// resolveFiles reads every *_file secret and makes relative paths absolute.
func (c *Config) resolveFiles(dir string) error {
	var err error
	if c.Storage.DSNFile != "" {
		if c.Storage.DSN, err = readSecret(dir, c.Storage.DSNFile, "storage.dsn_file"); err != nil {
			return err
		}
	}
	if c.Storage.Driver == DriverPostgres {
		if _, perr := pgx.ParseConfig(string(c.Storage.DSN)); perr != nil {
			field := "storage.dsn"
			if c.Storage.DSNFile != "" {
				field = "storage.dsn_file"
			}
			// The parser's message quotes the string, with only a best-effort
			// redaction of the password (a backslash-escaped space or a
			// missing quote let part of it through): keep the string out.
			msg := strings.ReplaceAll(perr.Error(), string(c.Storage.DSN), "<dsn>")
			var pe *pgconn.ParseConfigError
			if errors.As(perr, &pe) {
				bare := *pe
				bare.ConnString = "<dsn>"
				msg = strings.ReplaceAll(bare.Error(), string(c.Storage.DSN), "<dsn>")
			}
			return fmt.Errorf("%s: not a valid PostgreSQL connection string (URL postgres://user@host:5432/db?sslmode=… or key=value form): %s", field, msg)
		}
	}
	if c.Intake.BearerTokenFile != "" {
		if c.Intake.BearerToken, err = readSecret(dir, c.Intake.BearerTokenFile, "intake.bearer_token_file"); err != nil {
			return err
		}
		if err := checkTokens(string(c.Intake.BearerToken)); err != nil {
			return fmt.Errorf("intake.bearer_token_file: %s: %w", c.Intake.BearerTokenFile, err)
		}
	} else if err := checkTokens(string(c.Intake.BearerToken)); err != nil {
		return fmt.Errorf("intake.bearer_token: %w", err)
	}
	for name, f := range c.Intake.PagerDuty.RoutingKeyFiles {
		s, err := readSecret(dir, f, "intake.pagerduty.routing_key_files."+name)
		if err != nil {
			return err
		}
		if err := checkIntakeKey(string(s)); err != nil {
			return fmt.Errorf("intake.pagerduty.routing_key_files.%s: %s: %w", name, f, err)
		}
		if c.Intake.PagerDuty.RoutingKeys == nil {
			c.Intake.PagerDuty.RoutingKeys = map[string]commoncfg.Secret{}
		}
		c.Intake.PagerDuty.RoutingKeys[name] = s
	}
	// One key under two names would give its sender's alerts either name
	// (routing_key_name), whichever the map gave first.
	byKey := map[commoncfg.Secret]string{}
	for _, name := range slices.Sorted(maps.Keys(c.Intake.PagerDuty.RoutingKeys)) {
		k := c.Intake.PagerDuty.RoutingKeys[name]
		if other, dup := byKey[k]; dup {
			return fmt.Errorf("intake.pagerduty.routing_keys: %q and %q hold the same routing key; a key has one name", other, name)
		}
		byKey[k] = name
	}
	for i, t := range c.Templates {
		c.Templates[i] = join(dir, t)
	}
	for _, r := range c.Receivers {
		for i, pc := range r.PagerdutyConfigs {
			if pc.RoutingKeyFile != "" {
				field := fmt.Sprintf("receivers %q: pagerduty_configs[%d].routing_key_file", r.Name, i)
				if pc.RoutingKey, err = readSecret(dir, pc.RoutingKeyFile, field); err != nil {
					return err
				}
				if err := pagerduty.CheckRoutingKey(string(pc.RoutingKey), pc.URL); err != nil {
					return fmt.Errorf("%s: %s: %w", field, pc.RoutingKeyFile, err)
				}
			}
		}
		for i, bc := range r.BacklogConfigs {
			if bc.APIKeyFile != "" {
				field := fmt.Sprintf("receivers %q: backlog_configs[%d].api_key_file", r.Name, i)
				if bc.APIKey, err = readSecret(dir, bc.APIKeyFile, field); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func join(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// checkTokens refuses, in an intake token list (one token per line), a
// line that would make a token nobody meant: one holding control
// characters (a file padded with NUL bytes) or starting with "#" (a
// comment, which the list does not have). The message names the line,
// never its text.
func checkTokens(list string) error {
	for i, line := range strings.Split(list, "\n") {
		t := strings.TrimSpace(line)
		switch {
		case t == "":
		case strings.ContainsFunc(t, unicode.IsControl):
			return fmt.Errorf("line %d: a token must not contain control characters", i+1)
		case strings.HasPrefix(t, "#"):
			return fmt.Errorf("line %d starts with \"#\": the list holds tokens only, one per line, and no comments", i+1)
		}
	}
	return nil
}

// readSecret reads a secret file; its content never appears in an error.
func readSecret(dir, path, field string) (commoncfg.Secret, error) {
	b, err := os.ReadFile(join(dir, path))
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	// An editor's UTF-8 byte order mark is no part of a secret.
	s := strings.TrimSpace(strings.TrimPrefix(string(b), "\ufeff"))
	if s == "" {
		return "", fmt.Errorf("%s: file %s is empty", field, path)
	}
	return commoncfg.Secret(s), nil
}

// String renders the config with secrets shown as <secret>.
func (c *Config) String() string {
	b, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Sprintf("<error creating config string: %s>", err)
	}
	return string(b)
}
