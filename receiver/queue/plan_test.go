package queue

import (
	"testing"
	"time"

	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"
)

// A resolve whose trigger was never recorded as sent needs no call —
// unless the trigger's call may have happened unrecorded (a crash, a
// rescue or a cancellation during the job's previous attempt).
func TestResolveAfterAnUnrecordedTrigger(t *testing.T) {
	fire, res := []byte(`{"fire":1}`), []byte(`{"resolve":1}`)
	at := time.Now()
	cases := []struct {
		name  string
		job   rivertype.JobRow
		calls int
	}{
		{"first attempt", rivertype.JobRow{Attempt: 1}, 0},
		{"target answered 503 before", rivertype.JobRow{Attempt: 2, Errors: []rivertype.AttemptError{{Attempt: 1, At: at, Error: "pagerduty: server_error: 503"}}}, 0},
		{"process died during the previous attempt", rivertype.JobRow{Attempt: 2}, 1},
		{"rescued from a dead replica", rivertype.JobRow{Attempt: 3, Errors: []rivertype.AttemptError{
			{Attempt: 1, At: at, Error: "pagerduty: server_error: 503"}, {Attempt: 2, At: at, Error: "Stuck job rescued by JobRescuer"}}}, 1},
		{"call cancelled at shutdown", rivertype.JobRow{Attempt: 2, Errors: []rivertype.AttemptError{{Attempt: 1, At: at, Error: "context canceled"}}}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := &state{want: PhaseResolved, phase: PhaseNone, payload: res, firePayload: fire, uncertain: callsUnrecorded(&c.job)}
			steps := plan(st)
			require.Len(t, steps, c.calls)
			if c.calls > 0 {
				require.Equal(t, PhaseResolved, steps[0].to)
				require.Equal(t, res, steps[0].payload)
			}
		})
	}
}
