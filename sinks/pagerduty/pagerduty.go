// Package pagerduty delivers notifications as PagerDuty Events API v2 events
// through go-pagerduty. In group mode the event is the one Alertmanager's own
// PagerDuty notifier sends; in alert mode every alert is its own incident.
package pagerduty

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	pd "github.com/PagerDuty/go-pagerduty"
	"github.com/prometheus/alertmanager/template"

	"github.com/alertfan/alertfan/sinks"
)

const (
	// maxEventSize is PagerDuty's limit on one event (512 kB).
	maxEventSize = 512000
	// maxSummaryRunes is PagerDuty's limit on payload.summary.
	maxSummaryRunes = 1024
	// maxFieldRunes is where source, class, component, group and the
	// client fields are cut in an event still too big without its
	// details: PagerDuty documents no limit of their own, and the summary's
	// is a sane one.
	maxFieldRunes = 1024
	// maxDedupKeyLen is PagerDuty's limit on dedup_key.
	maxDedupKeyLen = 255
	// maxLimiterWait is how long a worker may wait for the rate limiter
	// before the job is parked and the worker freed for other targets.
	maxLimiterWait = 10 * time.Second
)

// Event actions.
const (
	ActionTrigger     = "trigger"
	ActionAcknowledge = "acknowledge"
	ActionResolve     = "resolve"
)

// Notifier sends to one pagerduty_configs entry.
type Notifier struct {
	conf    *Config
	tmpl    *template.Template
	http    *http.Client
	limiter *sinks.Limiter
	logger  *slog.Logger
	target  string

	warnMu sync.Mutex
	warned map[string]bool
	// checking is set while New renders a sample alert, whose replaced
	// values are neither counted nor logged.
	checking bool
	// shipped renders the default texts whose templates are still
	// Alertmanager's own, without them; shippedDetails, DefaultDetails'
	// texts (defaults.go).
	shipped        map[string]func(*template.Data) string
	shippedDetails bool
}

// Option tunes a Notifier.
type Option func(*Notifier)

// WithTarget names the target in metrics (e.g. "oncall/pagerduty/0").
func WithTarget(id string) Option { return func(n *Notifier) { n.target = id } }

// New builds a Notifier. limiters is shared by every config of the process
// so that configs with the same routing key share one budget. rt may be nil.
func New(conf *Config, tmpl *template.Template, limiters *sinks.Limiters, rt http.RoundTripper, logger *slog.Logger, opts ...Option) (*Notifier, error) {
	u, err := url.Parse(conf.URL)
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	if rt == nil {
		rt = http.DefaultTransport
	}
	// The transport sends to the configured URL as it is, so any path
	// Alertmanager users have (a proxy, the EU host, alertfan itself) keeps
	// working.
	n := &Notifier{
		conf:    conf,
		tmpl:    tmpl,
		http:    &http.Client{Transport: &captureTransport{base: rt, target: u, secret: string(conf.RoutingKey)}},
		limiter: limiters.Get("pagerduty", string(conf.RoutingKey), conf.RateLimitPerMinute),
		logger:  logger,
		warned:  map[string]bool{},

		shipped:        shippedTexts(tmpl),
		shippedDetails: sinks.Shipped(tmpl),
	}
	for _, o := range opts {
		o(n)
	}
	severityFallbacks.WithLabelValues(n.target)
	dedupKeyFallbacks.WithLabelValues(n.target)
	if err := n.checkTemplates(); err != nil {
		return nil, err
	}
	return n, nil
}

// Admit says whether a delivery could start within the rate limiter's
// patience; otherwise how long to park it. It lets the queue skip parked
// work before loading or decoding anything.
func (n *Notifier) Admit(class int) time.Duration { return n.limiter.Admit(class, maxLimiterWait) }

// Hold keeps every call of the key back for d (the target answered 429).
func (n *Notifier) Hold(d time.Duration) { n.limiter.Hold(d) }

// HeldUntil is when the routing key's hold by a 429 ends (zero: none).
func (n *Notifier) HeldUntil() time.Time { return n.limiter.HeldUntil() }

// Link is the status page's link for a dedup key (incident_link), "" when
// none is configured.
func (n *Notifier) Link(dedupKey string) string {
	if n.conf.IncidentLink == "" {
		return ""
	}
	return strings.ReplaceAll(n.conf.IncidentLink, "{dedup_key}", url.QueryEscape(dedupKey))
}

// RateLimit is the routing key's limiter state, for the status API.
func (n *Notifier) RateLimit() sinks.LimiterState { return n.limiter.State(time.Now()) }

// Pace waits for a call's turn under the rate limit (the queue's last look
// at the alert's state comes after it); a turn further off than maxWait is
// an error carrying the wait.
func (n *Notifier) Pace(ctx context.Context, maxWait time.Duration) (time.Duration, error) {
	return n.limiter.Wait(ctx, maxWait)
}

// Schedule books calls for keys deliveries and says how long the job
// carrying them should wait before it runs.
func (n *Notifier) Schedule(keys, class int) time.Duration {
	return n.limiter.Schedule(keys, class, maxLimiterWait)
}

// Unschedule gives back keys deliveries Schedule booked that need no call.
func (n *Notifier) Unschedule(keys, class int) { n.limiter.Release(keys, class) }

// Destination names the PagerDuty service this config opens incidents on:
// its routing key (and the mode, which keys incidents differently), not
// the URL — the US or EU endpoint or a proxy reach the same service
// (sinks.DestinationID).
func (n *Notifier) Destination() string {
	return sinks.DestinationID("pagerduty", string(n.conf.RoutingKey), n.conf.Mode)
}

// Grouped reports whether the queue should key work by group instead of by
// alert.
func (n *Notifier) Grouped() bool { return n.conf.Mode == ModeGroup }

// checkTemplates renders every template against a sample alert so that a
// bad template is a config error naming its field, not a dead letter later.
func (n *Notifier) checkTemplates() error {
	sample := sinks.SampleNotification()
	n.checking = true
	defer func() { n.checking = false }()
	if _, err := n.Event(sample); err != nil {
		return err
	}
	return nil
}

// Deliver sends the event for the notification's current state. The body
// is the one Render returns, byte for byte, so a preview shows exactly
// what is sent.
func (n *Notifier) Deliver(ctx context.Context, notif *sinks.Notification) error {
	if notif.Status() == sinks.StatusResolved && !n.conf.SendResolved && !isChange(notif) {
		return nil
	}
	// Wait for the rate limiter before rendering: a parked delivery must
	// cost nothing, since a storm parks thousands of them.
	if _, err := n.limiter.Wait(ctx, maxLimiterWait); err != nil {
		return err
	}
	call := sinks.CallFrom(ctx)
	r, err := n.render(notif, false, call.Pinned)
	if err != nil {
		return sinks.Permanent(sinks.ReasonTemplate, err)
	}
	if r.Body == nil {
		return nil
	}
	call.Action, call.Ref = r.action, r.ref
	return n.post(ctx, r.path, r.Body)
}

// post sends one rendered body. The transport sends it to the configured
// URL (or its change endpoint); a 2xx whose body is not JSON is an
// unexpected reply, as go-pagerduty, which alertfan used to send through,
// treats it.
func (n *Notifier) post(ctx context.Context, path string, body []byte) error {
	// The call's timeout is the context's, not http.Client.Timeout's: that
	// one starts two goroutines and a timer per request (net/http's
	// setRequestCancel), 480 of them in a drain's 1,459 goroutines.
	ctx, cancel := sinks.WithTimeout(ctx, time.Duration(n.conf.Timeout))
	defer cancel()
	info := &respInfo{}
	req, err := http.NewRequestWithContext(context.WithValue(ctx, respInfoKey{}, info), http.MethodPost, "http://pagerduty"+path, bytes.NewReader(body))
	if err != nil {
		return sinks.Permanent(sinks.ReasonOther, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.http.Do(req)
	if err != nil {
		return classify(ctx, info, err)
	}
	defer resp.Body.Close()
	sinks.CallFrom(ctx).StatusCode = resp.StatusCode
	b, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	switch {
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return classify(ctx, info, fmt.Errorf("pagerduty answered %d", resp.StatusCode))
	case rerr != nil:
		return classify(ctx, info, fmt.Errorf("read pagerduty's answer: %w", rerr))
	case !json.Valid(b):
		return classify(ctx, info, fmt.Errorf("pagerduty answered %d with a body that is not JSON", resp.StatusCode))
	}
	return nil
}

// changeEvent is the change event built from an alert that did not come
// as a PagerDuty change event (no sender's event to relay).
func (n *Notifier) changeEvent(a *sinks.Alert) pd.ChangeEvent {
	details := map[string]any{}
	for k, v := range a.Annotations {
		if k != "summary" && !strings.HasPrefix(k, "link_") {
			details[k] = v
		}
	}
	ev := pd.ChangeEvent{
		RoutingKey: string(n.conf.RoutingKey),
		Payload: pd.ChangeEventPayload{
			Summary:       a.Annotations["summary"],
			Source:        a.Labels["source"],
			Timestamp:     a.StartsAt.UTC().Format(time.RFC3339),
			CustomDetails: details,
		},
	}
	for _, k := range slices.Sorted(maps.Keys(a.Annotations)) {
		if strings.HasPrefix(k, "link_") {
			ev.Links = append(ev.Links, pd.ChangeEventLink{Href: a.Annotations[k]})
		}
	}
	return ev
}

// ChangeEvent is the change event relayed for a sender's change event
// (https://developer.pagerduty.com/docs/send-change-event).
func (n *Notifier) ChangeEvent(e *sinks.PDEvent) map[string]any {
	payload := map[string]any{"summary": e.Summary}
	if e.Source != "" {
		payload["source"] = e.Source
	}
	if e.Timestamp != "" {
		payload["timestamp"] = e.Timestamp
	}
	if len(e.CustomDetails) > 0 {
		payload["custom_details"] = json.RawMessage(e.CustomDetails)
	}
	ev := map[string]any{"routing_key": string(n.conf.RoutingKey), "payload": payload}
	if len(e.Links) > 0 {
		ev["links"] = e.Links
	}
	return ev
}

func classify(ctx context.Context, info *respInfo, err error) error {
	if info.status != 0 && (info.status < 200 || info.status > 299) {
		return sinks.StatusError(info.status, sinks.ParseRetryAfter(info.header, time.Now()), fmt.Errorf("pagerduty answered %d: %s", info.status, info.reason()))
	}
	switch {
	case sinks.IsTimeout(err):
		return sinks.Retryable(sinks.ReasonTimeout, 0, err)
	case ctx.Err() != nil:
		return sinks.Retryable(sinks.ReasonTimeout, 0, err)
	case info.status == 0:
		return sinks.Retryable(sinks.ReasonNetwork, 0, err)
	default:
		// A 2xx whose body go-pagerduty could not read: PagerDuty took the
		// event, and sending it again would only be folded by dedup_key.
		return sinks.Retryable(sinks.ReasonUnexpectedReply, 0, err)
	}
}

// renderDetails renders the configured custom details for data.
//
// A detail whose template fails for this alert holds the error's text
// instead ("template error: …"), and failed is told: the page goes out, and
// the person reading it sees why that detail is missing.
func (n *Notifier) renderDetails(data *template.Data, failed func(key string, err error)) map[string]any {
	out := make(map[string]any, len(n.conf.Details))
	for k, v := range n.conf.Details {
		if text, ok := v.(string); ok && n.shippedDetails {
			if d, ok := shippedDetail(text, data); ok {
				out[k] = d
				continue
			}
		}
		r, err := renderDetail(v, func(text string) (string, error) {
			return sinks.ExecuteText(n.tmpl, text, data)
		})
		if err != nil {
			failed(k, err)
			r = "template error: " + err.Error()
		}
		out[k] = r
	}
	return out
}

type respInfoKey struct{}

// respInfo carries the status and headers of PagerDuty's answer out of the
// transport, because go-pagerduty does not expose Retry-After.
type respInfo struct {
	status int
	header http.Header
	body   []byte
}

// reason renders PagerDuty's error body ({"status","message","errors"}),
// which go-pagerduty does not parse for the Events API.
func (i *respInfo) reason() string {
	var b struct {
		Status  string   `json:"status"`
		Message string   `json:"message"`
		Errors  []string `json:"errors"`
	}
	if json.Unmarshal(i.body, &b) != nil || (b.Message == "" && len(b.Errors) == 0) {
		return strings.TrimSpace(string(i.body))
	}
	if len(b.Errors) == 0 {
		return b.Message
	}
	return b.Message + ": " + strings.Join(b.Errors, ", ")
}

// endpoint is where a call for path goes: the configured URL, or for a
// change event the change endpoint next to it.
func endpoint(target *url.URL, path string) *url.URL {
	u := *target
	if strings.HasSuffix(path, pathChange) {
		u.Path = strings.TrimSuffix(u.Path, pathEvent) + pathChange
	}
	return &u
}

type captureTransport struct {
	base   http.RoundTripper
	target *url.URL
	// secret is the routing key, scrubbed from error answers: a proxy or
	// gateway on the way may echo the request, and the answer goes into
	// errors, logs, the history and dead letters.
	secret string
}

func (t *captureTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	u := endpoint(t.target, req.URL.Path)
	r.URL = u
	r.Host = u.Host
	r.Header.Set("User-Agent", "alertfan")
	if u.User != nil && r.Header.Get("Authorization") == "" {
		// A URL written with user:password@ authenticates, as it would
		// in a client's request (http.Client does it before the
		// transport, which is where the configured URL comes in).
		pw, _ := u.User.Password()
		r.SetBasicAuth(u.User.Username(), pw)
	}
	resp, err := t.base.RoundTrip(r)
	if info, ok := req.Context().Value(respInfoKey{}).(*respInfo); ok && resp != nil {
		info.status = resp.StatusCode
		info.header = resp.Header.Clone()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			b := []byte(sinks.Scrub(string(raw), t.secret))
			info.body = b
			resp.Body = io.NopCloser(bytes.NewReader(b))
		}
	}
	return resp, err
}

// Ping checks that the configured URL answers HTTP at all (any status),
// without sending an event; for `check-config --online`.
func (n *Notifier) Ping(ctx context.Context) error {
	ctx, cancel := sinks.WithTimeout(ctx, time.Duration(n.conf.Timeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.conf.URL, nil)
	if err != nil {
		return err
	}
	resp, err := n.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s does not answer: %w", n.conf.URL, err)
	}
	resp.Body.Close()
	return nil
}
