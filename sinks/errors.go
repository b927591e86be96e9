package sinks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Failure reasons used as the `reason` label of delivery failure metrics.
// Their set is closed so that metric cardinality stays bounded.
const (
	ReasonClientError     = "client_error"     // 4xx other than 429: permanent
	ReasonServerError     = "server_error"     // 5xx: retryable
	ReasonRateLimited     = "rate_limited"     // 429 from the target
	ReasonRateLimitWait   = "rate_limit_wait"  // our own limiter says wait
	ReasonTargetDown      = "target_down"      // held while the target is down and another call probes it
	ReasonNotReady        = "target_not_ready" // held while this process's copy of the target is not set up (start check failed)
	ReasonNetwork         = "network"          // transport failure: retryable
	ReasonTemplate        = "template"         // template failed to render: permanent
	ReasonConfig          = "config"           // configuration cannot work: permanent
	ReasonUnknownTarget   = "unknown_target"   // destination removed by reload
	ReasonTimeout         = "timeout"          // request deadline: retryable
	ReasonOther           = "other"            // anything unclassified: retryable
	ReasonExhausted       = "attempts_exhausted"
	ReasonUnexpectedReply = "unexpected_response"
)

// ReasonUnauthorized: the target refuses alertfan's credentials for every
// call (a Backlog API key revoked, its user locked: 401). It is retryable,
// and the queue treats the target as down: its work is held, one call at
// a time probes it, and the target comes back when the key works again.
const ReasonUnauthorized = "unauthorized"

// ReasonUnrecorded: the target took the call, but the sink could not
// write its own record of it (the store failed: PostgreSQL away, a disk
// full). Retryable, not the target's failure and not an attempt of the
// key's: the queue retries it as a call that may have been made
// (Call.Uncertain), so a sink looks before repeating what is not
// idempotent (a Backlog comment). The queue counts a call whose own
// outcome it could not write by the end of the job under this reason too.
const ReasonUnrecorded = "unrecorded"

// ReasonMisconfigured: the target shows, at a delivery, that the config
// cannot work with it (a Backlog name that does not exist, a key whose
// user may not do the config's work), where start-up could not check it
// (the target was unreachable then, or changed since). It is retryable
// and the queue holds the target's work as for a target down, until a
// reload fixes the config: never a dead letter per alert.
const ReasonMisconfigured = "misconfigured"

// Error is the one error type for delivery failures. The queue reads it to
// decide: retry (after RetryAfter if set, else back-off) or dead-letter.
type Error struct {
	Reason     string
	Retryable  bool
	RetryAfter time.Duration
	// StatusCode is the HTTP status of the target's answer, 0 if none.
	StatusCode int
	Err        error
}

func (e *Error) Error() string {
	kind := "permanent"
	if e.Retryable {
		kind = "retryable"
	}
	if e.Err == nil {
		return fmt.Sprintf("%s failure (%s)", kind, e.Reason)
	}
	return fmt.Sprintf("%s failure (%s): %v", kind, e.Reason, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Permanent returns an Error that must not be retried.
func Permanent(reason string, err error) *Error {
	return &Error{Reason: reason, Err: err}
}

// Retryable returns an Error worth retrying, after retryAfter when > 0.
func Retryable(reason string, retryAfter time.Duration, err error) *Error {
	return &Error{Reason: reason, Retryable: true, RetryAfter: retryAfter, Err: err}
}

// AsError finds an *Error in err's chain. An error that is not one is
// treated as retryable with reason "other": losing an alert to an
// unclassified error is worse than trying again.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return Retryable(ReasonOther, 0, err)
}

// ClassifyStatus maps an HTTP status of a target's answer to a reason and
// whether to retry, the way Alertmanager's notifiers do: 5xx and 429 are
// worth retrying, every other 4xx is the request's fault and never will be.
func ClassifyStatus(code int) (reason string, retryable bool) {
	switch {
	case code == http.StatusTooManyRequests:
		return ReasonRateLimited, true
	case code >= 500:
		return ReasonServerError, true
	case code == http.StatusRequestTimeout:
		return ReasonTimeout, true
	case code >= 400:
		return ReasonClientError, false
	case code >= 200 && code < 300:
		return "", false
	default:
		return ReasonUnexpectedReply, true
	}
}

// StatusError builds the Error for a non-2xx answer.
func StatusError(code int, retryAfter time.Duration, err error) *Error {
	reason, retryable := ClassifyStatus(code)
	return &Error{Reason: reason, Retryable: retryable, RetryAfter: retryAfter, StatusCode: code, Err: err}
}

// ParseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
// It returns 0 when absent or unreadable.
func ParseRetryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// IsTimeout reports whether err, from an HTTP call, is a timeout: the
// call's deadline ran out (before the answer, or while it trickled in) or
// the network timed out. Such a call may have landed.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
