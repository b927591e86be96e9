package queue

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	deliveries      *prometheus.CounterVec
	latency         *prometheus.HistogramVec
	attemptDuration *prometheus.HistogramVec
	rateLimitParks  *prometheus.CounterVec
	commitDuration  prometheus.Histogram
	commitBatchOps  prometheus.Histogram
	commitErrors    prometheus.Counter
	commitReruns    prometheus.Counter
	targetsDiffer   prometheus.Counter
	itemsCommitted  prometheus.Counter
	repeats         prometheus.Counter
	skipped         prometheus.Counter
	targetUp        *prometheus.GaugeVec
	jobsInserted    prometheus.Counter
	fetchLost       prometheus.Counter
	deadReplicaJobs prometheus.Counter
	intakeWait      prometheus.Counter
	escalated       prometheus.Counter
}

func newMetrics(s *Store, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alertfan_deliveries_total",
			Help: "Delivery attempts by sink, receiver, result (success, retry, dead) and failure reason.",
		}, []string{"sink", "receiver", "result", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "alertfan_delivery_latency_seconds",
			Help:    "Time from an alert state being accepted by intake to its delivery to the sink.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}, []string{"sink"}),
		attemptDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "alertfan_delivery_attempt_duration_seconds",
			Help:    "Duration of one delivery attempt, including rate-limit waits.",
			Buckets: prometheus.DefBuckets,
		}, []string{"sink"}),
		rateLimitParks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alertfan_rate_limit_waits_total",
			Help: "Deliveries parked because the proactive per-key rate limit was spent.",
		}, []string{"sink"}),
		intakeWait: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alertfan_delivery_intake_wait_seconds_total",
			Help: "Time deliveries waited for their turn to call because intake was busy (intake goes first; see ARCHITECTURE.md).",
		}),
		commitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "alertfan_store_commit_duration_seconds",
			Help:    "Duration of one group-commit transaction.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		commitBatchOps: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "alertfan_store_commit_batch_ops",
			Help:    "Requests and acknowledgements committed together in one transaction.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
		}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alertfan_store_commit_errors_total",
			Help: "Group-commit transactions that failed; their requests were answered 503.",
		}),
		commitReruns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alertfan_store_commit_reruns_total",
			Help: "PostgreSQL: group-commit transactions run again after a deadlock or a serialization failure with another transaction (another committer or replica).",
		}),
		targetsDiffer: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alertfan_target_config_differs_total",
			Help: "Target ids found (once per id and config load) to have another destination in this replica's configuration than in the one a replica loaded last (PostgreSQL, a rolling reload under way): intake under them answers 503 and their deliveries are left to a replica with that configuration.",
		}),
		itemsCommitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alertfan_store_items_committed_total",
			Help: "(target, key) states committed by intake.",
		}),
		repeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alertfan_store_repeats_total",
			Help: "(target, key) updates that repeated what the target already has (Alertmanager resends, HA duplicates) and made no work.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alertfan_deliveries_skipped_total",
			Help: "Work items that needed no call: a resolve whose trigger was never sent, a repeat of what the target has.",
		}),
		targetUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alertfan_target_up",
			Help: "0 while a target is down (network errors, timeouts, 5xx): its deliveries are held and one call at a time probes it; 1 otherwise.",
		}, []string{"target"}),
		deadReplicaJobs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alertfan_queue_dead_replica_jobs_total",
			Help: "PostgreSQL: jobs another replica was running when its database session ended (killed, crashed), made available again by this replica instead of waiting for rescue_after.",
		}),
		fetchLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alertfan_queue_fetch_lost_total",
			Help: "PostgreSQL: jobs this replica fetched whose answer was lost (the database marked them running, no worker got them), made available again instead of waiting for rescue_after.",
		}),
		escalated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alertfan_queue_escalated_keys_total",
			Help: "Queued keys moved to a job of a better priority class because a newer update asked one (a warning turned critical, a resolve of a queued update).",
		}),
		jobsInserted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alertfan_store_jobs_inserted_total",
			Help: "Delivery jobs inserted (fewer than items when updates coalesce).",
		}),
	}
	for _, k := range Kinds {
		m.latency.WithLabelValues(k)
		m.attemptDuration.WithLabelValues(k)
		m.rateLimitParks.WithLabelValues(k)
	}
	for _, c := range []prometheus.Collector{m.deliveries, m.latency, m.attemptDuration, m.rateLimitParks,
		m.commitDuration, m.commitBatchOps, m.commitErrors, m.commitReruns, m.targetsDiffer, m.itemsCommitted, m.repeats, m.skipped, m.targetUp, m.jobsInserted, m.fetchLost, m.deadReplicaJobs, m.intakeWait, m.escalated, &depthCollector{s: s}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

var (
	depthDesc = prometheus.NewDesc("alertfan_queue_jobs",
		"Delivery jobs in the store by sink and River state (available, running, retryable, scheduled, completed, ...).",
		[]string{"sink", "state"}, nil)
	oldestDesc = prometheus.NewDesc("alertfan_queue_oldest_job_age_seconds",
		"Age of the oldest job waiting to be delivered (available, retryable or scheduled), by sink.",
		[]string{"sink"}, nil)
	deadDesc = prometheus.NewDesc("alertfan_dead_letters",
		"Dead letters waiting to be looked at (alertfan queue list --state=dead).",
		[]string{"target"}, nil)
	openIssuesDesc = prometheus.NewDesc("alertfan_backlog_issues_open",
		"Backlog issues alertfan opened that are not closed yet, by target.",
		[]string{"target"}, nil)
	// orphanedDesc is read at scrape time, not set at each load: it falls
	// as the resolves owed there go out (a fresh helper saw it stay at
	// 3,000 after all 3,000 had been delivered by the retired sink).
	orphanedDesc = prometheus.NewDesc("alertfan_orphaned_alerts",
		"Alerts open, or owed an update, at a destination that left the configuration (target retired/<destination>); until a restart the old sink still delivers their acknowledges and resolves, after one they cannot be delivered.",
		[]string{"target"}, nil)
	upDesc = prometheus.NewDesc("alertfan_store_up",
		"1 when the store answered the last scrape's queries.", nil, nil)
)

// depthCollector reads queue depth from the store at scrape time, so the
// numbers are right across replicas sharing one PostgreSQL.
type depthCollector struct{ s *Store }

func (c *depthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- depthDesc
	ch <- oldestDesc
	ch <- deadDesc
	ch <- openIssuesDesc
	ch <- orphanedDesc
	ch <- upDesc
}

func (c *depthCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	up := 1.0
	defer func() { ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, up) }()
	s := c.s
	rows, err := s.rdb.QueryContext(ctx, `SELECT queue, state, COUNT(*) FROM river_job GROUP BY queue, state`)
	if err != nil {
		up = 0
		return
	}
	seen := map[[2]string]bool{}
	for rows.Next() {
		var q, st string
		var n float64
		if rows.Scan(&q, &st, &n) == nil {
			seen[[2]string{q, st}] = true
			ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, n, q, st)
		}
	}
	rows.Close()
	for _, k := range Kinds {
		for _, st := range []string{"available", "running", "retryable", "scheduled"} {
			if !seen[[2]string{k, st}] {
				ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, 0, k, st)
			}
		}
		var oldest float64
		var ts any
		err := s.rdb.QueryRowContext(ctx, s.rebind(`SELECT MIN(created_at) FROM river_job WHERE queue = ? AND state IN ('available', 'retryable', 'scheduled')`), k).Scan(&ts)
		if err == nil {
			if t, ok := parseTime(ts); ok {
				oldest = time.Since(t).Seconds()
			}
		}
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, max(oldest, 0), k)
	}
	targets := *s.targets.Load()
	var all, backlogs []string
	for id, t := range targets {
		all = append(all, id)
		if t.Kind == "backlog" {
			backlogs = append(backlogs, id)
		}
	}
	var retired []string
	for id := range *s.retired.Load() {
		if strings.HasPrefix(id, RetiredPrefix) {
			retired = append(retired, id)
		}
	}
	if !c.countBy(ctx, ch, deadDesc, `SELECT target, COUNT(*) FROM alertfan_dead GROUP BY target`, all) ||
		!c.countBy(ctx, ch, openIssuesDesc, `SELECT target, COUNT(*) FROM alertfan_backlog_issue WHERE state = 'open' GROUP BY target`, backlogs) ||
		!c.countBy(ctx, ch, orphanedDesc, sqlOrphans, retired) {
		up = 0
	}
}

// countBy emits one gauge per row of a (label, count) query, and 0 for
// each of zeros that has no row.
func (c *depthCollector) countBy(ctx context.Context, ch chan<- prometheus.Metric, desc *prometheus.Desc, q string, zeros []string) bool {
	rows, err := c.s.rdb.QueryContext(ctx, q)
	if err != nil {
		return false
	}
	defer rows.Close()
	seen := map[string]bool{}
	for rows.Next() {
		var label string
		var n float64
		if rows.Scan(&label, &n) == nil {
			seen[label] = true
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, n, label)
		}
	}
	for _, z := range zeros {
		if !seen[z] {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, 0, z)
		}
	}
	return rows.Err() == nil
}

// parseTime reads a timestamp as either driver returns it.
func parseTime(v any) (time.Time, bool) {
	switch t := v.(type) {
	case time.Time:
		return t, true
	case string:
		for _, layout := range []string{"2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999", time.RFC3339Nano} {
			if p, err := time.Parse(layout, t); err == nil {
				return p, true
			}
		}
	case []byte:
		return parseTime(string(t))
	}
	return time.Time{}, false
}
