package queue

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks"
)

// A group is refreshed by a message that changes its state or lists any
// of its alerts (a repeat changes no state but is a sign of life); only a
// group neither happened to since the cutoff resolves, once.
func TestExpireGroups(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			sink := &recordingSink{}
			s := openStore(t, d.opts(t), sink)
			ctx := context.Background()
			start := time.Now().Add(-time.Hour).UTC()
			message := func() *Intake {
				alerts := []sinks.Alert{
					{Identity: "am:a1", Status: sinks.StatusFiring, StartsAt: start, Labels: map[string]string{"alertname": "Disk", "instance": "h1"}},
					{Identity: "am:a2", Status: sinks.StatusFiring, StartsAt: start, Labels: map[string]string{"alertname": "Disk", "instance": "h2"}},
				}
				in := &Intake{GroupKey: "gk"}
				for _, a := range alerts {
					in.Updates = append(in.Updates, Update{Identity: a.Identity, Input: "alertmanager", Want: PhaseTriggered, StartsAt: start, Ordered: true, Labels: []byte(`{}`)})
				}
				p, err := json.Marshal(sinks.Notification{Key: "gk", Alerts: alerts, Truncated: 3, AcceptedAt: time.Now()})
				require.NoError(t, err)
				in.Groups = []GroupItem{{Item: Item{Target: "r/pagerduty/0", Kind: "pagerduty", Key: "gk", Want: PhaseTriggered, Digest: "firing", Payload: p}, Members: []int{0, 1}}}
				return in
			}
			resolve := func(_ string, payload []byte) ([]byte, bool) {
				var n sinks.Notification
				require.NoError(t, json.Unmarshal(payload, &n))
				for i := range n.Alerts {
					n.Alerts[i].Status = sinks.StatusResolved
				}
				n.Truncated = 0
				b, err := json.Marshal(n)
				return b, err == nil
			}
			expire := func(cutoff time.Time) int {
				n, err := s.ExpireGroups(ctx, "r/pagerduty/0", "pagerduty", cutoff, resolve)
				require.NoError(t, err)
				return n
			}

			_, err := s.Accept(ctx, message())
			require.NoError(t, err)
			require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 10*time.Second, 10*time.Millisecond)
			require.Zero(t, expire(time.Now().Add(-time.Minute)), "refreshed after the cutoff")

			time.Sleep(20 * time.Millisecond)
			cutoff := time.Now()
			time.Sleep(20 * time.Millisecond)
			// A repeat: the state does not change, the alerts were seen.
			_, err = s.Accept(ctx, message())
			require.NoError(t, err)
			require.Zero(t, expire(cutoff), "a repeat after the cutoff refreshes the group")

			time.Sleep(20 * time.Millisecond)
			require.Equal(t, 1, expire(time.Now()))
			require.Eventually(t, func() bool { return len(sink.all()) == 2 }, 10*time.Second, 10*time.Millisecond)
			got := sink.all()[1]
			require.Equal(t, sinks.StatusResolved, got.Status())
			require.Zero(t, got.Truncated)
			require.Zero(t, expire(time.Now()), "a resolved group is not expired again")
			time.Sleep(200 * time.Millisecond)
			require.Len(t, sink.all(), 2)
		})
	}
}

// A job that ran where its target was not configured (a replica that had
// not loaded the config adding it yet, on PostgreSQL) is a dead letter
// (unknown_target); loading a config that has the target queues it again,
// whichever process loads it.
func TestUnknownTargetDeadLettersGoOutWhenTheTargetIsLoaded(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			sink := &recordingSink{}
			s := openStore(t, d.opts(t), sink)
			ctx := context.Background()
			it := item("am:new", sinks.StatusFiring)
			it.Target = "new/pagerduty/0"
			_, err := s.Accept(ctx, &Intake{Updates: []Update{{Identity: "am:new", Input: "alertmanager", Want: PhaseTriggered, StartsAt: time.Now(), Ordered: true, Labels: []byte(`{}`), Items: []Item{it}}}})
			require.NoError(t, err)
			require.Eventually(t, func() bool {
				ds, err := s.DeadLetters(ctx)
				return err == nil && len(ds) == 1
			}, 10*time.Second, 10*time.Millisecond)
			ds, err := s.DeadLetters(ctx)
			require.NoError(t, err)
			require.Equal(t, sinks.ReasonUnknownTarget, ds[0].Reason)
			require.Contains(t, ds[0].Error, "not configured in this process")
			require.Empty(t, sink.all())

			require.NoError(t, s.SetTargets(ctx, map[string]Target{
				"r/pagerduty/0":   {ID: "r/pagerduty/0", Kind: "pagerduty", Receiver: "r", Sink: sink, Destination: "pd:a"},
				"new/pagerduty/0": {ID: "new/pagerduty/0", Kind: "pagerduty", Receiver: "new", Sink: sink, Destination: "pd:new"},
			}))
			require.Eventually(t, func() bool { return len(sink.all()) == 1 }, 10*time.Second, 10*time.Millisecond, "delivered once the target is loaded")
			ds, err = s.DeadLetters(ctx)
			require.NoError(t, err)
			require.Empty(t, ds)
		})
	}
}
