package pagerduty

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
)

// Delivery modes.
const (
	ModeAlert = "alert" // one incident per alert
	ModeGroup = "group" // one incident per Alertmanager group, as Alertmanager does
)

// DefaultURL is PagerDuty's Events API v2 endpoint.
const DefaultURL = "https://events.pagerduty.com/v2/enqueue"

// DefaultDetails are Alertmanager's default custom details.
var DefaultDetails = map[string]any{
	"firing":       `{{ .Alerts.Firing | toJson }}`,
	"resolved":     `{{ .Alerts.Resolved | toJson }}`,
	"num_firing":   `{{ .Alerts.Firing | len }}`,
	"num_resolved": `{{ .Alerts.Resolved | len }}`,
}

// DefaultConfig holds Alertmanager's PagerDuty defaults plus alertfan's own.
var DefaultConfig = Config{
	URL:                DefaultURL,
	Mode:               ModeAlert,
	RateLimitPerMinute: 120,
	SendResolved:       true,
	Description:        `{{ template "pagerduty.default.description" .}}`,
	Client:             `{{ template "pagerduty.default.client" . }}`,
	ClientURL:          `{{ template "pagerduty.default.clientURL" . }}`,
	Severity:           "error",
	SeverityFallback:   "error",
	Timeout:            model.Duration(10 * time.Second),
}

// Config is one entry of a receiver's pagerduty_configs. Keys and meanings
// follow Alertmanager's pagerduty_configs so a block can be moved over.
type Config struct {
	RoutingKey         commoncfg.Secret `yaml:"routing_key,omitempty"`
	RoutingKeyFile     string           `yaml:"routing_key_file,omitempty"`
	URL                string           `yaml:"url,omitempty"`
	Mode               string           `yaml:"mode,omitempty"`
	RateLimitPerMinute int              `yaml:"rate_limit_per_minute,omitempty"`
	SendResolved       bool             `yaml:"send_resolved"`
	Client             string           `yaml:"client,omitempty"`
	ClientURL          string           `yaml:"client_url,omitempty"`
	Description        string           `yaml:"description,omitempty"`
	Details            map[string]any   `yaml:"details,omitempty"`
	Images             []Image          `yaml:"images,omitempty"`
	Links              []Link           `yaml:"links,omitempty"`
	Source             string           `yaml:"source,omitempty"`
	Severity           string           `yaml:"severity,omitempty"`
	Class              string           `yaml:"class,omitempty"`
	Component          string           `yaml:"component,omitempty"`
	Group              string           `yaml:"group,omitempty"`
	Timeout            model.Duration   `yaml:"timeout,omitempty"`
	// DedupKey is a template for the incident key. Empty: one key per alert
	// identity in alert mode (a PagerDuty sender's own dedup_key is kept),
	// Alertmanager's hex sha256 of the group key in group mode. A rendered
	// key that is empty falls back to that default; one longer than
	// PagerDuty's 255 characters is replaced by its hex sha256.
	DedupKey string `yaml:"dedup_key,omitempty"`
	// SeverityFallback replaces a rendered severity that PagerDuty would
	// refuse and that no alias maps (see NormalizeSeverity).
	SeverityFallback string `yaml:"severity_fallback,omitempty"`
	// IncidentLink is where the status page links a delivered alert: a URL
	// of the PagerDuty web app (your account's subdomain) in which
	// {dedup_key} is replaced by the alert's URL-escaped dedup_key, e.g.
	// "https://acme.pagerduty.com/incidents?search={dedup_key}". Empty: no
	// link; the page shows the dedup_key to copy. The Events API answers no
	// incident id, so alertfan cannot link the incident itself.
	IncidentLink string `yaml:"incident_link,omitempty"`

	// explicit holds the keys the user's YAML set, so that the defaults of
	// the input an alert came from fill only what the user left out.
	explicit map[string]bool
}

// Explicit reports whether key (a YAML key such as "description") was set
// in the config. A Config built in Go rather than read from YAML counts a
// field as set when it differs from DefaultConfig.
func (c *Config) Explicit(key string) bool {
	if c.explicit != nil {
		return c.explicit[key]
	}
	d := DefaultConfig
	switch key {
	case "description":
		return c.Description != d.Description
	case "client":
		return c.Client != d.Client
	case "client_url":
		return c.ClientURL != d.ClientURL
	case "severity":
		return c.Severity != d.Severity
	case "source":
		return c.Source != "" && c.Source != c.Client
	case "class":
		return c.Class != ""
	case "component":
		return c.Component != ""
	case "group":
		return c.Group != ""
	case "details":
		return len(c.Details) > len(DefaultDetails)
	case "images":
		return len(c.Images) > 0
	case "links":
		return len(c.Links) > 0
	case "dedup_key":
		return c.DedupKey != ""
	}
	return false
}

// Image is a PagerDuty event image; every field is a template.
type Image struct {
	Src  string `yaml:"src,omitempty"`
	Alt  string `yaml:"alt,omitempty"`
	Href string `yaml:"href,omitempty"`
}

// Link is a PagerDuty event link; every field is a template.
type Link struct {
	Href string `yaml:"href,omitempty"`
	Text string `yaml:"text,omitempty"`
}

// UnmarshalYAML applies defaults and validates what can be checked without
// the file system (routing_key_file is read by the config loader).
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultConfig
	c.Details = nil
	type plain Config
	if err := unmarshal((*plain)(c)); err != nil {
		return err
	}
	var keys map[string]any
	if err := unmarshal(&keys); err != nil {
		return err
	}
	c.explicit = make(map[string]bool, len(keys))
	for k := range keys {
		c.explicit[k] = true
	}
	if c.RoutingKey == "" && c.RoutingKeyFile == "" {
		return errors.New("routing_key or routing_key_file is required")
	}
	if c.RoutingKey != "" && c.RoutingKeyFile != "" {
		return errors.New("at most one of routing_key and routing_key_file may be set")
	}
	if c.IncidentLink != "" {
		l, err := url.Parse(strings.ReplaceAll(c.IncidentLink, "{dedup_key}", "x"))
		if err != nil || !l.IsAbs() || (l.Scheme != "http" && l.Scheme != "https") {
			return fmt.Errorf("incident_link: %q is not an absolute http(s) URL", c.IncidentLink)
		}
		if !strings.Contains(c.IncidentLink, "{dedup_key}") {
			return fmt.Errorf("incident_link: %q has no {dedup_key} placeholder", c.IncidentLink)
		}
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url: %q is not an absolute http(s) URL", c.URL)
	}
	if c.RoutingKey != "" {
		if err := CheckRoutingKey(string(c.RoutingKey), c.URL); err != nil {
			return fmt.Errorf("routing_key: %w", err)
		}
	}
	if c.Mode != ModeAlert && c.Mode != ModeGroup {
		return fmt.Errorf("mode: %q is not one of %q, %q", c.Mode, ModeAlert, ModeGroup)
	}
	if c.RateLimitPerMinute <= 0 {
		return fmt.Errorf("rate_limit_per_minute: must be > 0, got %d", c.RateLimitPerMinute)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("timeout: must be > 0")
	}
	if !strings.Contains(c.Severity, "{{") && !ValidSeverity(strings.TrimSpace(c.Severity)) {
		return fmt.Errorf("severity: %q is not one of %s: PagerDuty refuses any other value (https://developer.pagerduty.com/docs/send-alert-event)", c.Severity, strings.Join(Severities, ", "))
	}
	if !ValidSeverity(c.SeverityFallback) {
		return fmt.Errorf("severity_fallback: %q is not one of %s", c.SeverityFallback, strings.Join(Severities, ", "))
	}
	if c.explicit["dedup_key"] && strings.TrimSpace(c.DedupKey) == "" {
		return errors.New("dedup_key: must not be empty when set (leave it out for the default)")
	}
	if !strings.Contains(c.DedupKey, "{{") && len(c.DedupKey) > maxDedupKeyLen {
		return fmt.Errorf("dedup_key: %d characters, PagerDuty allows at most %d", len(c.DedupKey), maxDedupKeyLen)
	}
	if c.Details == nil {
		c.Details = map[string]any{}
	}
	for k, v := range DefaultDetails {
		if _, ok := c.Details[k]; !ok {
			c.Details[k] = v
		}
	}
	if c.Source == "" {
		c.Source = c.Client
	}
	return nil
}

// RoutingKeyLen is the length of every routing key PagerDuty issues: an
// integration key, or a global or service orchestration's "R0…" key.
const RoutingKeyLen = 32

// CheckRoutingKey refuses a routing key that PagerDuty refuses for every
// event when url is PagerDuty's own (a host under pagerduty.com): it must
// be 32 ASCII letters and digits. PagerDuty answers 400 "Length of
// 'routing_key' is incorrect (should be 32 characters)" and "'routing_key'
// cannot contain non-alphanumeric characters."
// (https://developer.pagerduty.com/docs/send-alert-event), so such a key
// would dead-letter each alert. A relay or proxy at another host may take
// keys of its own shape, and is not checked. The error never quotes the
// key, which is a secret.
func CheckRoutingKey(key, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil // the url's own check reports it
	}
	if h := strings.ToLower(u.Hostname()); h != "pagerduty.com" && !strings.HasSuffix(h, ".pagerduty.com") {
		return nil
	}
	if len(key) != RoutingKeyLen {
		return fmt.Errorf("PagerDuty routing keys are %d characters, this one has %d (PagerDuty refuses every event with it: \"Length of 'routing_key' is incorrect\"); copy the Integration Key of the service's Events API v2 integration", RoutingKeyLen, utf8.RuneCountInString(key))
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return fmt.Errorf("PagerDuty routing keys hold only letters and digits, this one has %q at position %d (PagerDuty refuses every event with it: \"'routing_key' cannot contain non-alphanumeric characters\")", rune(c), i+1)
		}
	}
	return nil
}

// Severities are the values PagerDuty accepts in payload.severity
// (https://developer.pagerduty.com/docs/send-alert-event).
var Severities = []string{"critical", "error", "warning", "info"}

// ValidSeverity reports whether PagerDuty accepts s as payload.severity.
func ValidSeverity(s string) bool {
	switch s {
	case "critical", "error", "warning", "info":
		return true
	}
	return false
}

// severityAliases map what monitoring systems commonly put in a severity
// label to PagerDuty's four values.
var severityAliases = map[string]string{
	"crit": "critical", "fatal": "critical", "emergency": "critical", "emerg": "critical", "alert": "critical", "disaster": "critical",
	"err": "error", "high": "error", "major": "error",
	"warn": "warning", "average": "warning", "medium": "warning", "minor": "warning",
	"information": "info", "informational": "info", "notice": "info", "low": "info", "none": "info", "ok": "info", "debug": "info",
}

// NormalizeSeverity maps a rendered severity onto one PagerDuty accepts:
// the value itself when valid; else, ignoring case and surrounding space,
// one of PagerDuty's four values or an alias (none, ok, notice, low, debug
// → info; warn, minor, medium → warning; err, major, high → error; crit,
// fatal, emergency, alert → critical); else fallback. ok is false when
// the value was replaced.
func NormalizeSeverity(s, fallback string) (sev string, ok bool) {
	if ValidSeverity(s) {
		return s, true
	}
	v := strings.ToLower(strings.TrimSpace(s))
	if ValidSeverity(v) {
		return v, false
	}
	if a, found := severityAliases[v]; found {
		return a, false
	}
	return fallback, false
}
