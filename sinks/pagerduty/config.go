package pagerduty

import (
	"errors"
	"fmt"
	"net/url"
	"time"

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
	if c.RoutingKey == "" && c.RoutingKeyFile == "" {
		return errors.New("routing_key or routing_key_file is required")
	}
	if c.RoutingKey != "" && c.RoutingKeyFile != "" {
		return errors.New("at most one of routing_key and routing_key_file may be set")
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url: %q is not an absolute http(s) URL", c.URL)
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
