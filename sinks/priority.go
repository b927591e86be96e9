package sinks

import (
	"context"
	"strings"
)

// Priority classes for a key's rate-limit budget, best first. When a key's
// budget is the bottleneck, work of a better class goes first and work of
// one class goes in arrival order. Work that waits ages (the queue moves it
// up one class per PriorityAging), so nothing starves.
const (
	// PriorityClose is a resolve or an acknowledge: it ends what someone
	// may be paged for, and costs one call.
	PriorityClose = iota
	// PriorityCritical is a trigger with severity critical (also page,
	// fatal, emergency, alert, p1).
	PriorityCritical
	// PriorityError is a trigger with severity error (also high, major, p2).
	PriorityError
	// PriorityWarning is a trigger with severity warning (also warn,
	// medium, minor, p3), or none.
	PriorityWarning
	// PriorityInfo is a trigger with severity info (also low, none, debug,
	// p4, p5) and anything else.
	PriorityInfo
	// NumPriorities is the number of classes.
	NumPriorities
)

var severityClass = map[string]int{
	"critical": PriorityCritical, "page": PriorityCritical, "fatal": PriorityCritical, "emergency": PriorityCritical, "alert": PriorityCritical, "p1": PriorityCritical, "disaster": PriorityCritical,
	"error": PriorityError, "high": PriorityError, "major": PriorityError, "p2": PriorityError,
	"warning": PriorityWarning, "warn": PriorityWarning, "medium": PriorityWarning, "minor": PriorityWarning, "p3": PriorityWarning, "": PriorityWarning,
	"info": PriorityInfo, "informational": PriorityInfo, "low": PriorityInfo, "none": PriorityInfo, "debug": PriorityInfo, "p4": PriorityInfo, "p5": PriorityInfo, "ok": PriorityInfo,
}

// SeverityPriority is the class of a trigger with the severity label.
func SeverityPriority(severity string) int {
	if c, ok := severityClass[strings.ToLower(strings.TrimSpace(severity))]; ok {
		return c
	}
	return PriorityInfo
}

// Priority is the class of a notification: PriorityClose when it resolves
// or acknowledges, else the best class among its firing alerts' severity
// labels.
func (n *Notification) Priority() int {
	if n.Status() == StatusResolved {
		return PriorityClose
	}
	best := PriorityInfo
	for _, a := range n.Alerts {
		if a.Action == ActionAcknowledge {
			return PriorityClose
		}
		if a.Status == StatusFiring {
			best = min(best, SeverityPriority(a.Labels["severity"]))
		}
	}
	return best
}

type priorityKey struct{}

// WithPriority tells the rate limiter the class of the call made under ctx.
func WithPriority(ctx context.Context, class int) context.Context {
	return context.WithValue(ctx, priorityKey{}, clampPriority(class))
}

// PriorityFrom is the class WithPriority set; PriorityWarning when none.
func PriorityFrom(ctx context.Context) int {
	if c, ok := ctx.Value(priorityKey{}).(int); ok {
		return c
	}
	return PriorityWarning
}

func clampPriority(c int) int { return min(max(c, 0), NumPriorities-1) }
