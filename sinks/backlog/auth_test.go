package backlog_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// TestKeyRefusedAtRunTime: Backlog refuses the API key while alertfan runs
// (revoked, its user locked or removed, an IP restriction). Every call
// would fail the same way, so the failure is retryable with reason
// unauthorized — the queue holds the target's work as for a target that
// is down — instead of a dead letter per alert; a refusal about one
// request stays permanent. Error codes:
// https://developer.nulab.com/docs/backlog/error-response/.
func TestKeyRefusedAtRunTime(t *testing.T) {
	body := func(code int, msg string) string {
		return `{"errors":[{"message":"` + msg + `","code":` + strconv.Itoa(code) + `,"moreInfo":""}]}`
	}
	cases := []struct {
		name string
		// firstResolve answers name resolution (nil: names resolved at
		// start); write answers the first write.
		firstResolve *sinkstest.BacklogResponse
		write        *sinkstest.BacklogResponse
		retryable    bool
		reason       string
	}{
		{"401 AuthenticationError on create", nil, &sinkstest.BacklogResponse{Status: 401, Body: body(11, "Authentication failure.")}, true, sinks.ReasonUnauthorized},
		{"401 RequiredMFAError", nil, &sinkstest.BacklogResponse{Status: 401, Body: body(12, "Two-factor authentication is required.")}, true, sinks.ReasonUnauthorized},
		{"401 without a body", nil, &sinkstest.BacklogResponse{Status: 401}, true, sinks.ReasonUnauthorized},
		{"403 AccessDeniedError (IP restriction)", nil, &sinkstest.BacklogResponse{Status: 403, Body: body(4, "Access denied.")}, true, sinks.ReasonUnauthorized},
		{"403 LicenceExpiredError", nil, &sinkstest.BacklogResponse{Status: 403, Body: body(3, "Licence expired.")}, true, sinks.ReasonUnauthorized},
		{"403 UnauthorizedOperationError on add-issue: the project", nil, &sinkstest.BacklogResponse{Status: 403, Body: body(5, "You do not have permission.")}, true, sinks.ReasonUnauthorized},
		{"401 while names are resolved at run time", &sinkstest.BacklogResponse{Status: 401, Body: body(11, "Authentication failure.")}, nil, true, sinks.ReasonUnauthorized},
		{"403 LicenceError is about the request", nil, &sinkstest.BacklogResponse{Status: 403, Body: body(2, "Not in your plan.")}, false, sinks.ReasonClientError},
		{"400 stays permanent", nil, &sinkstest.BacklogResponse{Status: 400, Body: body(7, "Please input summary.")}, false, sinks.ReasonClientError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake := sinkstest.NewBacklog(apiKey)
			defer fake.Close()
			if c.firstResolve != nil {
				fake.SetDown(true) // names are left to the first delivery
			}
			n, err := newNotifier(t, fake, "", store(t))
			require.NoError(t, err)
			fake.SetDown(false)
			if c.firstResolve != nil {
				fake.Script(*c.firstResolve)
			}
			if c.write != nil {
				fake.ScriptWrites(*c.write)
			}
			if c.reason == sinks.ReasonClientError {
				// The first 400 resolves the names again and retries once
				// (TestBacklog400ResolvesNamesAgainOnce); answer it twice.
				fake.ScriptWrites(*c.write)
			}
			ctx := context.Background()
			err = n.Deliver(ctx, sample("firing"))
			if c.reason == sinks.ReasonClientError && sinks.AsError(err).Reason == sinks.ReasonConfig {
				err = n.Deliver(ctx, sample("firing"))
			}
			require.Error(t, err)
			e := sinks.AsError(err)
			require.Equal(t, c.retryable, e.Retryable, err.Error())
			require.Equal(t, c.reason, e.Reason, err.Error())
			require.NotContains(t, err.Error(), apiKey)
			if !c.retryable {
				return
			}
			// Once the key works again the held work goes through.
			require.NoError(t, n.Deliver(ctx, sample("firing")))
			require.Len(t, fake.Issues(), 1)
		})
	}
}

// TestPerIssueForbiddenStaysPermanent: UnauthorizedOperationError on one
// issue (a comment, a close) may be that issue's alone; it does not hold
// the whole target.
func TestPerIssueForbiddenStaysPermanent(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	n, err := newNotifier(t, fake, "", store(t))
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, n.Deliver(ctx, sample("firing")))
	fake.ScriptWrites(sinkstest.BacklogResponse{Status: http.StatusForbidden, Body: `{"errors":[{"message":"You do not have permission.","code":5,"moreInfo":""}]}`})
	err = n.Deliver(ctx, sample("resolved"))
	require.Error(t, err)
	e := sinks.AsError(err)
	require.False(t, e.Retryable, err.Error())
	require.Equal(t, sinks.ReasonClientError, e.Reason)
}

// TestRevokedKeyRecovers: the key is revoked by an administrator while
// alertfan runs (the fake answers 401 with code 11 to every call, as
// Backlog does), then a working key is back: deliveries held meanwhile go
// out, with no config change.
func TestRevokedKeyRecovers(t *testing.T) {
	fake := sinkstest.NewBacklog(apiKey)
	defer fake.Close()
	n, err := newNotifier(t, fake, "", store(t))
	require.NoError(t, err)
	fake.SetAPIKey("rotated-by-admin")
	err = n.Deliver(context.Background(), sample("firing"))
	require.Error(t, err)
	e := sinks.AsError(err)
	require.True(t, e.Retryable, "a refused key holds the work, as at start: %v", err)
	require.Equal(t, sinks.ReasonUnauthorized, e.Reason)
	require.Equal(t, http.StatusUnauthorized, e.StatusCode)
	require.Contains(t, err.Error(), "Authentication failure. (code 11)")
	require.Empty(t, fake.Issues())

	fake.SetAPIKey(apiKey)
	require.NoError(t, n.Deliver(context.Background(), sample("firing")))
	require.Len(t, fake.Issues(), 1)
}
