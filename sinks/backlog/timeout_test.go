package backlog_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/backlog"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// TestCallGivesUpAfterTimeout: a Backlog that takes the request and never
// answers is given up on after the client's timeout, as a retryable
// timeout, whatever the caller's context allows.
func TestCallGivesUpAfterTimeout(t *testing.T) {
	srv := sinkstest.NewUnanswering()
	defer srv.Close()
	c := backlog.NewClient(srv.URL, "key", nil, 200*time.Millisecond, func(string, int) {})
	start := time.Now()
	_, err := c.GetSpace(context.Background())
	require.Error(t, err)
	require.Equal(t, sinks.ReasonTimeout, sinks.AsError(err).Reason)
	require.True(t, sinks.AsError(err).Retryable)
	require.Less(t, time.Since(start), 5*time.Second)
}

// TestAnswerTricklingPastTimeoutIsATimeout: an answer whose body is still
// coming in when the timeout runs out is a timeout too (an uncertain call:
// the retry looks before it creates again), not a network failure.
func TestAnswerTricklingPastTimeoutIsATimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusCreated)
		for range 1000 {
			if _, err := w.Write([]byte(" ")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}))
	defer srv.Close()
	c := backlog.NewClient(srv.URL, "key", nil, 200*time.Millisecond, func(string, int) {})
	_, err := c.GetSpace(context.Background())
	require.Error(t, err)
	require.Equal(t, sinks.ReasonTimeout, sinks.AsError(err).Reason, "%v", err)
	require.True(t, sinks.AsError(err).Retryable)
}
