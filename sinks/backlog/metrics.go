package backlog

import "github.com/prometheus/client_golang/prometheus"

// Metrics are shared by every Backlog target of the process.
type Metrics struct {
	issues    *prometheus.CounterVec
	requests  *prometheus.CounterVec
	fallbacks *prometheus.CounterVec
}

// NewMetrics registers the Backlog metrics.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		issues: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alertfan_backlog_issue_actions_total",
			Help: "Backlog issue lifecycle actions by receiver and action (created, commented, closed, reopened, adopted).",
		}, []string{"receiver", "action"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alertfan_backlog_api_requests_total",
			Help: "Backlog API calls by endpoint and HTTP status code (0: no answer).",
		}, []string{"endpoint", "code"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alertfan_backlog_fallbacks_total",
			Help: "Rendered values that do not exist in Backlog (priority, assignee, custom field item), or whose template failed for the alert or rendered a blank summary, replaced by the configured fallback or the field's default, by receiver and field.",
		}, []string{"receiver", "field"}),
	}
	reg.MustRegister(m.issues, m.requests, m.fallbacks)
	return m
}

// Init exports a receiver's action series at 0 before the first action.
func (m *Metrics) Init(receiver string) {
	for _, a := range []string{"created", "commented", "closed", "reopened", "adopted"} {
		m.issues.WithLabelValues(receiver, a)
	}
	m.fallbacks.WithLabelValues(receiver, "priority")
}
