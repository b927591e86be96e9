// Package backlog delivers notifications as Backlog (Nulab) issues through
// the Backlog API v2: one issue per alert identity, closed or commented on
// resolve, reopened within a window, never created twice.
package backlog
