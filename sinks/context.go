package sinks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

type targetKey struct{}

// WithTarget tells a sink which stored target it delivers for: the queue
// keys a destination's records (Backlog's identity → issue map) by it,
// and a destination retired by a reload keeps its records under a name of
// its own.
func WithTarget(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, targetKey{}, id)
}

// TargetFrom is the target WithTarget set.
func TargetFrom(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(targetKey{}).(string)
	return id, ok && id != ""
}

// DestinationID names where a sink config sends — its kind and the parts
// that pick the service (a PagerDuty routing key, a Backlog space and
// project, the mode) — as a short hash, so a secret never shows. Two configs with one destination id
// open the same incidents and issues; a reload that changes a config's
// destination id changes where it sends.
func DestinationID(kind string, parts ...string) string {
	sum := sha256.Sum256([]byte(kind + "\x00" + strings.Join(parts, "\x00")))
	return kind + ":" + hex.EncodeToString(sum[:8])
}

// WithTimeout bounds ctx by d when d is positive (a sink's timeout: 0 is
// none). Sinks bound each call this way rather than with
// http.Client.Timeout, which starts two goroutines and a timer per request
// (net/http's setRequestCancel).
func WithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}
