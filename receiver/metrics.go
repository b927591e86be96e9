package receiver

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/alertfan/alertfan/sinks/pagerduty"
)

type metrics struct {
	notifications   *prometheus.CounterVec
	alerts          *prometheus.CounterVec
	routed          *prometheus.CounterVec
	dropped         *prometheus.CounterVec
	stale           *prometheus.CounterVec
	sticky          prometheus.Counter
	expired         *prometheus.CounterVec
	heldResolves    *prometheus.CounterVec
	overLimit       prometheus.Counter
	annotationsCut  prometheus.Counter
	intakeDuration  *prometheus.HistogramVec
	reloadOK        prometheus.Gauge
	reloadTimestamp prometheus.Gauge
	targets         *prometheus.GaugeVec
	reservedRemoved *prometheus.CounterVec
	targetReady     *prometheus.GaugeVec
	storeCanCommit  prometheus.Gauge
	restartRequired *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alertfan_notifications_received_total",
			Help: "Requests received on intake endpoints, by input and outcome (accepted, invalid, too_large, over_limit, overloaded, unauthorized, unknown_receiver, rate_limited, store_unavailable, config_differs, ignored).",
		}, []string{"input", "outcome"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alertfan_alerts_received_total",
			Help: "Alerts in accepted requests, by input and status.",
		}, []string{"input", "status"}),
		routed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alertfan_alerts_routed_total",
			Help: "Alerts routed to each receiver (an alert routed to two receivers counts for both).",
		}, []string{"receiver"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alertfan_alerts_dropped_total",
			Help: "Alerts routed to a receiver that has no destinations, so nothing is sent.",
		}, []string{"receiver"}),
		stale: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alertfan_stale_updates_total",
			Help: "Alert updates older than what was already accepted for the alert (an HA replica's late firing after a resolve, an old occurrence's resolve); they change nothing.",
		}, []string{"input"}),
		sticky: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alertfan_sticky_deliveries_total",
			Help: "Updates sent to a target because it holds the alert open, although the update's labels no longer route there.",
		}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alertfan_alerts_expired_total",
			Help: "Open alerts resolved by alertfan because their sender did not refresh them within the receiver's resolve_after.",
		}, []string{"receiver"}),
		heldResolves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alertfan_group_resolves_held_total",
			Help: "Alertmanager messages, per group-mode target they reach, whose listed alerts had all resolved but that left alerts out (truncatedAlerts, webhook_configs max_alerts): the group stays firing, since the alerts left out may still fire.",
		}, []string{"receiver"}),
		overLimit: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alertfan_alerts_left_out_total",
			Help: "Alerts of Alertmanager messages over intake.max_alerts_per_notification that alertfan left out, as Alertmanager's max_alerts does (firing alerts are kept first): the message is taken with the rest, and its truncatedAlerts grows by them.",
		}),
		annotationsCut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alertfan_annotations_cut_total",
			Help: "Annotation values of Alertmanager messages over intake.max_annotation_value_length that alertfan cut to the limit (ending in …) instead of refusing the message, which Alertmanager would never send again.",
		}),
		intakeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "alertfan_intake_duration_seconds",
			Help:    "Time to decode, route and durably commit one intake request.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5},
		}, []string{"input"}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "alertfan_config_last_reload_successful",
			Help: "Whether the last configuration reload attempt was successful.",
		}),
		reloadTimestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "alertfan_config_last_reload_success_timestamp_seconds",
			Help: "Timestamp of the last successful configuration reload.",
		}),
		targets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alertfan_config_targets",
			Help: "Configured destinations by sink kind.",
		}, []string{"sink"}),
		reservedRemoved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alertfan_reserved_labels_removed_total",
			Help: "Labels that only alertfan may set (routing_key_name) removed from senders' alerts, by input.",
		}, []string{"input"}),
		targetReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alertfan_target_ready",
			Help: "Whether a destination is ready (1) or held because its API refused the configuration at start (0; its deliveries wait in the queue).",
		}, []string{"target", "sink"}),
		storeCanCommit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "alertfan_store_can_commit",
			Help: "Whether the last commit (intake or readiness probe) succeeded; /-/ready answers 503 while 0.",
		}),
		restartRequired: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alertfan_config_restart_required",
			Help: "1 for each setting (storage.*, delivery.*) the configuration file changes but only a restart applies; the running value stays until then.",
		}, []string{"key"}),
	}
	for _, in := range []string{"alertmanager", "pagerduty", "mackerel"} {
		m.notifications.WithLabelValues(in, "accepted")
		m.intakeDuration.WithLabelValues(in)
		m.stale.WithLabelValues(in)
		m.reservedRemoved.WithLabelValues(in)
		for _, st := range []string{"firing", "resolved"} {
			m.alerts.WithLabelValues(in, st)
		}
	}
	reg.MustRegister(m.notifications, m.alerts, m.routed, m.dropped, m.stale, m.sticky, m.expired, m.heldResolves, m.overLimit, m.annotationsCut, m.intakeDuration, m.reloadOK, m.reloadTimestamp, m.targets, m.reservedRemoved, m.targetReady, m.storeCanCommit, m.restartRequired)
	reg.MustRegister(pagerduty.Collectors()...)
	return m
}
