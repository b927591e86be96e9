package backlog_test

import (
	"context"
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
