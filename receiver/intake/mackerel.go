package intake

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/alertfan/alertfan/sinks"
)

// mackerelWebhook is Mackerel's alert notification webhook body.
type mackerelWebhook struct {
	OrgName  string         `json:"orgName"`
	Event    string         `json:"event"`
	Memo     string         `json:"memo"`
	ImageURL string         `json:"imageUrl"`
	Host     *mackerelHost  `json:"host"`
	Alert    *mackerelAlert `json:"alert"`
}

type mackerelHost struct {
	ID     string         `json:"id"`
	Name   string         `json:"name"`
	URL    string         `json:"url"`
	Type   string         `json:"type"`
	Status string         `json:"status"`
	Memo   string         `json:"memo"`
	Roles  []mackerelRole `json:"roles"`
}

type mackerelRole struct {
	Fullname    string `json:"fullname"`
	ServiceName string `json:"serviceName"`
	RoleName    string `json:"roleName"`
	ServiceURL  string `json:"serviceUrl"`
	RoleURL     string `json:"roleUrl"`
}

type mackerelAlert struct {
	ID                string   `json:"id"`
	Status            string   `json:"status"`
	IsOpen            bool     `json:"isOpen"`
	Trigger           string   `json:"trigger"`
	URL               string   `json:"url"`
	OpenedAt          *int64   `json:"openedAt"`
	ClosedAt          *int64   `json:"closedAt"`
	CreatedAt         int64    `json:"createdAt"`
	MonitorName       string   `json:"monitorName"`
	MetricLabel       string   `json:"metricLabel"`
	MetricValue       *float64 `json:"metricValue"`
	CriticalThreshold *float64 `json:"criticalThreshold"`
	WarningThreshold  *float64 `json:"warningThreshold"`
	MonitorOperator   string   `json:"monitorOperator"`
	Duration          *float64 `json:"duration"`
}

// MackerelResult is a decoded Mackerel webhook.
type MackerelResult struct {
	Event string
	// Alert is nil for events other than "alert" that are not to be routed.
	Alert *sinks.Alert
}

var mackerelStatuses = map[string]bool{"ok": true, "warning": true, "critical": true, "unknown": true}

// DecodeMackerel decodes a Mackerel webhook. "alert" events become alerts;
// other events (hostStatus, hostRegister, hostRetire, alertGroup, sample)
// become an event alert only when routeOther is set.
func DecodeMackerel(body []byte, routeOther bool, now time.Time) (*MackerelResult, error) {
	var m mackerelWebhook
	if err := decodeJSON(body, &m); err != nil {
		return nil, err
	}
	if m.Event == "" {
		return nil, Errors{fieldErr("event", "required")}
	}
	if m.Event != "alert" {
		res := &MackerelResult{Event: m.Event}
		if routeOther {
			res.Alert = mackerelEvent(&m, body, now)
		}
		return res, nil
	}
	var errs Errors
	a := m.Alert
	if a == nil {
		return nil, Errors{fieldErr("alert", "required for event \"alert\"")}
	}
	if a.ID == "" {
		errs = append(errs, fieldErr("alert.id", "required"))
	}
	if !mackerelStatuses[a.Status] {
		errs = append(errs, fieldErr("alert.status", "must be one of ok, warning, critical, unknown, got %q", truncate(a.Status, 32)))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	name := a.MonitorName
	if name == "" {
		name = "mackerel_" + orDefault(a.Trigger, "alert")
	}
	al := sinks.Alert{
		Identity:     "mackerel:" + a.ID,
		Status:       sinks.StatusFiring,
		Labels:       map[string]string{"alertname": name, "severity": a.Status, "source": "mackerel"},
		Annotations:  map[string]string{},
		StartsAt:     mackerelTime(a.OpenedAt, a.CreatedAt, now),
		GeneratorURL: a.URL,
		Fingerprint:  "mackerel:" + a.ID,
	}
	if a.Status == "ok" {
		al.Status = sinks.StatusResolved
		al.Labels["severity"] = "ok"
		al.EndsAt = now
		if a.ClosedAt != nil && *a.ClosedAt > 0 {
			al.EndsAt = time.Unix(*a.ClosedAt, 0).UTC()
		}
	}
	setIf(al.Labels, "org", m.OrgName)
	setIf(al.Labels, "trigger", a.Trigger)
	if h := m.Host; h != nil {
		setIf(al.Labels, "host", h.Name)
		setIf(al.Annotations, "host_url", h.URL)
		setIf(al.Annotations, "host_status", h.Status)
		setIf(al.Annotations, "host_memo", h.Memo)
		if len(h.Roles) > 0 {
			setIf(al.Labels, "service", h.Roles[0].ServiceName)
			setIf(al.Labels, "role", h.Roles[0].RoleName)
			roles := make([]string, 0, len(h.Roles))
			for _, r := range h.Roles {
				roles = append(roles, r.Fullname)
			}
			al.Annotations["roles"] = strings.Join(roles, ", ")
		}
	}
	setIf(al.Annotations, "metric", a.MetricLabel)
	setFloat(al.Annotations, "metric_value", a.MetricValue)
	setFloat(al.Annotations, "critical_threshold", a.CriticalThreshold)
	setFloat(al.Annotations, "warning_threshold", a.WarningThreshold)
	setIf(al.Annotations, "operator", a.MonitorOperator)
	setFloat(al.Annotations, "duration", a.Duration)
	setIf(al.Annotations, "alert_url", a.URL)
	setIf(al.Annotations, "image_url", m.ImageURL)
	setIf(al.Annotations, "message", m.Memo)
	al.Annotations["summary"] = mackerelSummary(name, m.Host, a)
	for k, v := range al.Labels {
		if strings.TrimSpace(v) == "" {
			delete(al.Labels, k)
		}
	}
	if errs := checkLabels("alert", al.Labels, true); len(errs) > 0 {
		return nil, errs
	}
	return &MackerelResult{Event: m.Event, Alert: &al}, nil
}

func mackerelSummary(name string, h *mackerelHost, a *mackerelAlert) string {
	s := fmt.Sprintf("[%s] %s", strings.ToUpper(a.Status), name)
	if h != nil && h.Name != "" {
		s += " on " + h.Name
	}
	if a.MetricLabel != "" && a.MetricValue != nil {
		s += fmt.Sprintf(": %s = %s", a.MetricLabel, strconv.FormatFloat(*a.MetricValue, 'g', 6, 64))
		if a.MonitorOperator != "" {
			if t := a.CriticalThreshold; t != nil && a.Status == "critical" {
				s += fmt.Sprintf(" (%s %s)", a.MonitorOperator, strconv.FormatFloat(*t, 'g', 6, 64))
			} else if t := a.WarningThreshold; t != nil && a.Status == "warning" {
				s += fmt.Sprintf(" (%s %s)", a.MonitorOperator, strconv.FormatFloat(*t, 'g', 6, 64))
			}
		}
	}
	return s
}

func mackerelTime(openedAt *int64, createdAtMs int64, now time.Time) time.Time {
	switch {
	case openedAt != nil && *openedAt > 0:
		return time.Unix(*openedAt, 0).UTC()
	case createdAtMs > 0:
		return time.UnixMilli(createdAtMs).UTC()
	default:
		return now
	}
}

func setFloat(m map[string]string, k string, v *float64) {
	if v != nil {
		m[k] = strconv.FormatFloat(*v, 'g', -1, 64)
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// mackerelEvent turns a non-alert event into a one-off firing alert keyed
// by the body, so a retried webhook is not counted twice.
func mackerelEvent(m *mackerelWebhook, body []byte, now time.Time) *sinks.Alert {
	sum := sha256.Sum256(body)
	id := hex.EncodeToString(sum[:12])
	a := &sinks.Alert{
		Identity:    "mackerel:event:" + id,
		Status:      sinks.StatusFiring,
		Action:      sinks.ActionEvent,
		Labels:      map[string]string{"alertname": "mackerel_" + m.Event, "event": m.Event, "source": "mackerel"},
		Annotations: map[string]string{"summary": "Mackerel " + m.Event},
		StartsAt:    now,
		Fingerprint: "mackerel:event:" + id,
	}
	setIf(a.Labels, "org", m.OrgName)
	if h := m.Host; h != nil {
		setIf(a.Labels, "host", h.Name)
		setIf(a.Annotations, "host_url", h.URL)
		setIf(a.Annotations, "host_status", h.Status)
		if h.Name != "" {
			a.Annotations["summary"] = fmt.Sprintf("Mackerel %s: %s", m.Event, h.Name)
		}
	}
	setIf(a.Annotations, "message", m.Memo)
	return a
}
