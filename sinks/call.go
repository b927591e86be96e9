package sinks

import (
	"context"
	"time"
)

// Call describes the API call one Deliver made, for the delivery history
// (GET /api/v1/alerts/{identity}). A sink fills it when the context
// carries one (WithCall); the queue stores it beside the delivery's
// outcome, in the transaction that records that outcome.
type Call struct {
	// Action is what was asked of the target: a PagerDuty event_action
	// (trigger, acknowledge, resolve, change) or a Backlog step as its
	// metric names it (created, commented, closed, reopened, adopted, …),
	// "" when the sink made no call.
	Action string
	// StatusCode is the HTTP status of the target's answer, 0 if none came.
	StatusCode int
	// Ref is what identifies the result at the target: the PagerDuty
	// dedup_key, or the Backlog issue key ("OPS-12").
	Ref string
	// URL is where a person sees the result (a Backlog issue page), "" if
	// the sink cannot tell.
	URL string
	// Pinned is, set by the queue before the call, the Ref of what the
	// target holds open for this key ("" when nothing): the PagerDuty sink
	// sends every event of an open incident with the dedup_key it was
	// opened with, whatever its dedup_key template renders now.
	Pinned string
	// Uncertain is, set by the queue before the call, whether an earlier
	// attempt may have reached the target without its outcome being
	// recorded (a timeout, a crash): a sink whose call is not idempotent
	// (a Backlog comment) looks before it repeats it.
	Uncertain bool
	// FailingSince is, set by the queue, when the key's run of failed
	// attempts began (zero: none recorded): a call an uncertain attempt
	// made was made shortly before.
	FailingSince time.Time
}

type callKey struct{}

// WithCall asks the sink to describe its call in c.
func WithCall(ctx context.Context, c *Call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

// CallFrom is the Call WithCall set, or a throwaway one, so a sink can fill
// it without checking.
func CallFrom(ctx context.Context) *Call {
	if c, ok := ctx.Value(callKey{}).(*Call); ok && c != nil {
		return c
	}
	return &Call{}
}
