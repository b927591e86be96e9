package intake

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/alertfan/alertfan/sinks"
)

// mackerelWebhook is Mackerel's notification webhook body, every field
// https://mackerel.io/docs/entry/howto/alerts/webhook (and the Japanese
// https://mackerel.io/ja/docs/entry/howto/alerts/webhook) documents.
// Mackerel says items may be added at any time, so unknown fields are
// ignored.
type mackerelWebhook struct {
	OrgName  string           `json:"orgName"`
	Event    string           `json:"event"`
	Type     string           `json:"type"`
	Message  string           `json:"message"`
	Memo     string           `json:"memo"`
	ImageURL string           `json:"imageUrl"`
	Host     *mackerelHost    `json:"host"`
	Service  *mackerelService `json:"service"`
	// Metric is the metric of a query monitor ("Metric information by
	// query monitoring").
	Metric *mackerelMetric `json:"metric"`
	Alert  *mackerelAlert  `json:"alert"`
	// AlertGroupSetting and AlertGroup come with event "alertGroup".
	AlertGroupSetting *mackerelAlertGroupSetting `json:"alertGroupSetting"`
	AlertGroup        *mackerelAlertGroup        `json:"alertGroup"`
}

type mackerelHost struct {
	ID        string         `json:"id"`
	Name      string         `json:"name"`
	URL       string         `json:"url"`
	Type      string         `json:"type"`
	Status    string         `json:"status"`
	Memo      string         `json:"memo"`
	IsRetired bool           `json:"isRetired"`
	Roles     []mackerelRole `json:"roles"`
}

// mackerelRole is a role: documented as an object, but a service's roles
// have been seen as plain role names too, so both are taken.
type mackerelRole struct {
	Fullname    string `json:"fullname"`
	ServiceName string `json:"serviceName"`
	RoleName    string `json:"roleName"`
	ServiceURL  string `json:"serviceUrl"`
	RoleURL     string `json:"roleUrl"`
}

func (r *mackerelRole) UnmarshalJSON(b []byte) error {
	t := bytes.TrimSpace(b)
	switch {
	case len(t) > 0 && t[0] == '"':
		var name string
		if err := json.Unmarshal(t, &name); err != nil {
			return err
		}
		*r = mackerelRole{RoleName: name}
		return nil
	case len(t) > 0 && t[0] == '{':
		type plain mackerelRole
		return json.Unmarshal(t, (*plain)(r))
	case string(t) == "null":
		return nil
	}
	return &json.UnmarshalTypeError{Value: jsonKind(t), Type: reflect.TypeFor[mackerelRole]()}
}

func jsonKind(t []byte) string {
	switch {
	case len(t) == 0:
		return "value"
	case t[0] == '[':
		return "array"
	case t[0] == 't' || t[0] == 'f':
		return "bool"
	default:
		return "number"
	}
}

type mackerelService struct {
	ID    string         `json:"id"`
	Name  string         `json:"name"`
	Memo  string         `json:"memo"`
	OrgID string         `json:"orgId"`
	Roles []mackerelRole `json:"roles"`
}

type mackerelMetric struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
}

type mackerelAlert struct {
	ID                string   `json:"id"`
	Status            string   `json:"status"`
	IsOpen            *bool    `json:"isOpen"`
	Trigger           string   `json:"trigger"`
	URL               string   `json:"url"`
	OpenedAt          *int64   `json:"openedAt"`
	ClosedAt          *int64   `json:"closedAt"`
	StatusChangedAt   *int64   `json:"statusChangedAt"`
	CreatedAt         int64    `json:"createdAt"`
	MonitorName       string   `json:"monitorName"`
	MetricLabel       string   `json:"metricLabel"`
	MetricValue       *float64 `json:"metricValue"`
	CriticalThreshold *float64 `json:"criticalThreshold"`
	WarningThreshold  *float64 `json:"warningThreshold"`
	MonitorOperator   string   `json:"monitorOperator"`
	Duration          *float64 `json:"duration"`
}

type mackerelAlertGroupSetting struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Memo string `json:"memo"`
}

type mackerelAlertGroup struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	URL    string `json:"url"`
}

// MackerelResult is a decoded Mackerel webhook.
type MackerelResult struct {
	Event string
	// Alert is nil for events other than "alert" that are not to be routed.
	Alert *sinks.Alert
}

var mackerelStatuses = map[string]bool{"ok": true, "warning": true, "critical": true, "unknown": true}

// DecodeMackerel decodes a Mackerel webhook. "alert" events become alerts;
// other events (alertGroup, hostStatus, hostRegister, hostRetire, sample)
// become an event alert only when routeOther is set. README.md has the table
// of what each field becomes.
func DecodeMackerel(body []byte, routeOther bool, now time.Time) (*MackerelResult, error) {
	var m mackerelWebhook
	if err := decodeJSON(body, &m); err != nil {
		return nil, err
	}
	if m.Event == "" {
		return nil, Errors{fieldErr("event", "required")}
	}
	if m.AlertGroup != nil {
		if errs := checkKeyText("alertGroup.id", m.AlertGroup.ID, MaxIDBytes); errs != nil {
			return nil, errs
		}
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
	errs = append(errs, checkKeyText("alert.id", a.ID, MaxIDBytes)...)
	if !mackerelStatuses[a.Status] {
		errs = append(errs, fieldErr("alert.status", "must be one of ok, warning, critical, unknown, got %q", sinks.Abbreviate(a.Status, 32)))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	name := a.MonitorName
	if name == "" {
		name = "mackerel_" + orDefault(m.Type, orDefault(a.Trigger, "alert"))
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
	// An alert closed without recovering (closed by hand, its monitor
	// deleted, its host retired: trigger manual, monitorDelete, hostRetire)
	// comes with isOpen false and its last status, and no ok follows
	// (https://mackerel.io/docs/entry/howto/alerts/webhook, "isOpen";
	// https://mackerel.io/docs/entry/howto/alerts: "When a host retires,
	// alerts related to that host will automatically be closed").
	if a.Status == "ok" || (a.IsOpen != nil && !*a.IsOpen) {
		al.Status = sinks.StatusResolved
		al.EndsAt = now
		if a.ClosedAt != nil && *a.ClosedAt > 0 {
			al.EndsAt = time.Unix(*a.ClosedAt, 0).UTC()
		}
	}
	// Labels: what identifies the alert and what routes it.
	setIf(al.Labels, "org", m.OrgName)
	setIf(al.Labels, "type", m.Type)
	setIf(al.Labels, "monitor", a.MonitorName)
	setIf(al.Labels, "trigger", a.Trigger)
	// Annotations: what describes it.
	setIf(al.Annotations, "message", m.Message)
	setIf(al.Annotations, "memo", m.Memo)
	setIf(al.Annotations, "image_url", m.ImageURL)
	setIf(al.Annotations, "alert_url", a.URL)
	setIf(al.Annotations, "metric", a.MetricLabel)
	setFloat(al.Annotations, "metric_value", a.MetricValue)
	setFloat(al.Annotations, "critical_threshold", a.CriticalThreshold)
	setFloat(al.Annotations, "warning_threshold", a.WarningThreshold)
	setIf(al.Annotations, "operator", a.MonitorOperator)
	setFloat(al.Annotations, "duration", a.Duration)
	if a.StatusChangedAt != nil && *a.StatusChangedAt > 0 {
		al.Annotations["status_changed_at"] = time.Unix(*a.StatusChangedAt, 0).UTC().Format(time.RFC3339)
	}
	mackerelHostFields(&al, m.Host)
	mackerelServiceFields(&al, m.Service)
	if mt := m.Metric; mt != nil {
		setIf(al.Annotations, "metric_name", mt.Name)
		if len(mt.Labels) > 0 {
			pairs := make([]string, 0, len(mt.Labels))
			for _, k := range slices.Sorted(maps.Keys(mt.Labels)) {
				pairs = append(pairs, fmt.Sprintf("%s=%q", k, mt.Labels[k]))
			}
			al.Annotations["metric_labels"] = "{" + strings.Join(pairs, ", ") + "}"
		}
	}
	al.Annotations["summary"] = mackerelSummary(&m)
	al.Annotations["title"] = mackerelTitle(name, al.Labels, &m)
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

// mackerelHostFields maps the host of a host-scoped alert (connectivity,
// host metric, check, anomaly detection). The first role gives the service
// and role labels; every role is in the roles annotation.
func mackerelHostFields(al *sinks.Alert, h *mackerelHost) {
	if h == nil {
		return
	}
	setIf(al.Labels, "host", h.Name)
	setIf(al.Labels, "instance", h.Name)
	setIf(al.Annotations, "host_id", h.ID)
	setIf(al.Annotations, "host_url", h.URL)
	setIf(al.Annotations, "host_type", h.Type)
	setIf(al.Annotations, "host_status", h.Status)
	setIf(al.Annotations, "host_memo", h.Memo)
	if h.IsRetired {
		al.Annotations["host_retired"] = "true"
	}
	if len(h.Roles) > 0 {
		r := h.Roles[0]
		setIf(al.Labels, "service", r.ServiceName)
		setIf(al.Labels, "role", r.RoleName)
		setIf(al.Annotations, "service_url", r.ServiceURL)
		setIf(al.Annotations, "role_url", r.RoleURL)
		al.Annotations["roles"] = joinRoles(h.Roles, "")
	}
}

// mackerelServiceFields maps the service of a service-metric alert, which
// has no host (https://mackerel.io/docs/entry/howto/alerts/webhook,
// "service information").
func mackerelServiceFields(al *sinks.Alert, s *mackerelService) {
	if s == nil {
		return
	}
	setIf(al.Labels, "service", s.Name)
	setIf(al.Annotations, "service_id", s.ID)
	setIf(al.Annotations, "service_memo", s.Memo)
	setIf(al.Annotations, "org_id", s.OrgID)
	if len(s.Roles) > 0 {
		al.Annotations["service_roles"] = joinRoles(s.Roles, s.Name)
	}
}

func joinRoles(roles []mackerelRole, service string) string {
	out := make([]string, 0, len(roles))
	for _, r := range roles {
		switch {
		case r.Fullname != "":
			out = append(out, r.Fullname)
		case service != "" && r.RoleName != "":
			out = append(out, service+": "+r.RoleName)
		default:
			out = append(out, r.RoleName)
		}
	}
	return strings.Join(out, ", ")
}

// mackerelSummary is what the alert says: Mackerel's own message (a
// metric's "loadavg5 12.5 > 10", a check monitor's output), or, for older
// senders without one, the metric and the threshold it crossed.
func mackerelSummary(m *mackerelWebhook) string {
	if s := strings.TrimSpace(m.Message); s != "" {
		return s
	}
	a := m.Alert
	if a.MetricLabel != "" && a.MetricValue != nil {
		s := a.MetricLabel + " " + strconv.FormatFloat(*a.MetricValue, 'g', 6, 64)
		var t *float64
		switch a.Status {
		case "critical":
			t = a.CriticalThreshold
		case "warning":
			t = a.WarningThreshold
		}
		if a.MonitorOperator != "" && t != nil {
			s += " " + a.MonitorOperator + " " + strconv.FormatFloat(*t, 'g', 6, 64)
		}
		return s
	}
	return orDefault(a.MetricLabel, a.MonitorName)
}

// mackerelTitle reads like Mackerel's own notification: status, monitor,
// where, what — each once. "[CRITICAL] loadavg5 high on db1: loadavg5 12.5 > 10".
func mackerelTitle(name string, labels map[string]string, m *mackerelWebhook) string {
	s := "[" + strings.ToUpper(m.Alert.Status) + "] " + name
	switch {
	case labels["host"] != "":
		s += " on " + labels["host"]
	case labels["service"] != "":
		s += " on " + labels["service"]
	}
	if sum := mackerelSummary(m); sum != "" && sum != name {
		s += ": " + sum
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
	setIf(a.Annotations, "memo", m.Memo)
	setIf(a.Annotations, "message", m.Message)
	if h := m.Host; h != nil {
		setIf(a.Labels, "host", h.Name)
		setIf(a.Labels, "instance", h.Name)
		setIf(a.Annotations, "host_id", h.ID)
		setIf(a.Annotations, "host_url", h.URL)
		setIf(a.Annotations, "host_status", h.Status)
		if h.Name != "" {
			a.Annotations["summary"] = fmt.Sprintf("Mackerel %s: %s", m.Event, h.Name)
		}
	}
	if g := m.AlertGroupSetting; g != nil {
		setIf(a.Labels, "alert_group", g.Name)
		setIf(a.Annotations, "alert_group_memo", g.Memo)
		if g.Name != "" {
			a.Annotations["summary"] = fmt.Sprintf("Mackerel alert group %s", g.Name)
		}
	}
	if g := m.AlertGroup; g != nil {
		setIf(a.Labels, "severity", strings.ToLower(g.Status))
		setIf(a.Annotations, "alert_group_url", g.URL)
		setIf(a.Annotations, "alert_group_id", g.ID)
		if g.Status != "" {
			a.Annotations["summary"] = "[" + strings.ToUpper(g.Status) + "] " + a.Annotations["summary"]
		}
		// An alert group has a lifecycle of its own: one alert per group
		// id, resolved by its OK, so its recovery closes what its
		// CRITICAL opened instead of opening something new.
		if g.ID != "" {
			a.Identity = "mackerel:alertGroup:" + g.ID
			a.Fingerprint = a.Identity
			a.Action = ""
			if strings.EqualFold(g.Status, "ok") {
				a.Status, a.EndsAt = sinks.StatusResolved, now
			}
		}
	}
	if s := m.AlertGroupSetting; s != nil {
		setIf(a.Annotations, "alert_group_setting_id", s.ID)
	}
	a.Annotations["title"] = a.Annotations["summary"]
	return a
}
