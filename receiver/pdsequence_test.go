package receiver

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// actionsFor is the event_action of every event the fake got for key.
func actionsFor(pd *sinkstest.PagerDuty, key string) []string {
	var out []string
	for _, e := range pd.Events() {
		if e.DedupKey == key {
			out = append(out, e.EventAction)
		}
	}
	return out
}

// A PagerDuty sender's trigger, resolve, trigger, acknowledge on a
// rate-limited key reach PagerDuty as they were sent, each once. The
// second trigger and the acknowledge queue behind the limit and plan
// together; the acknowledge parks for its turn after the trigger went
// out, and its retry once found the new occurrence unsent: it resolved
// it with the old occurrence's resolve and triggered it again — a
// second page (a fresh helper, every time at 6/min).
func TestTriggerResolveTriggerAcknowledgeOnce(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfigAt(pd.EventsURL(), 12))
	send := func(action string) {
		code, body := ts.post(t, "/v2/enqueue", pdEvent(action, "rta-1", action == "trigger"))
		require.Equal(t, 202, code, "%v", body)
	}
	send("trigger")
	time.Sleep(300 * time.Millisecond)
	send("resolve")
	require.Eventually(t, func() bool { return len(actionsFor(pd, "rta-1")) == 2 }, 20*time.Second, 50*time.Millisecond)
	send("trigger")
	time.Sleep(300 * time.Millisecond)
	send("acknowledge")
	require.Eventually(t, func() bool { return len(actionsFor(pd, "rta-1")) >= 4 }, 40*time.Second, 50*time.Millisecond)
	time.Sleep(6 * time.Second) // a repeat would take the next 5 s slot
	require.Equal(t, []string{"trigger", "resolve", "trigger", "acknowledge"}, actionsFor(pd, "rta-1"))
}

// An acknowledge not yet sent survives a trigger of the same occurrence
// that follows it: PagerDuty leaves an acknowledged incident acknowledged
// when it gets a new trigger, and so does alertfan. The trigger used to
// replace it, and the acknowledge never went out (a fresh helper:
// trigger, acknowledge, trigger reached PagerDuty as trigger, trigger).
func TestAcknowledgeSurvivesALaterTrigger(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfigAt(pd.EventsURL(), 12))
	for _, action := range []string{"trigger", "acknowledge", "trigger"} {
		code, body := ts.post(t, "/v2/enqueue", pdEvent(action, "ack-1", action == "trigger"))
		require.Equal(t, 202, code, "%v", body)
		time.Sleep(300 * time.Millisecond)
	}
	require.Eventually(t, func() bool { return len(actionsFor(pd, "ack-1")) >= 2 }, 20*time.Second, 50*time.Millisecond)
	time.Sleep(6 * time.Second)
	require.Equal(t, []string{"trigger", "acknowledge"}, actionsFor(pd, "ack-1"))
	// Nothing sent yet at all: the trigger goes first, then the
	// acknowledge.
	for _, action := range []string{"trigger", "acknowledge", "trigger"} {
		code, body := ts.post(t, "/v2/enqueue", pdEvent(action, "ack-2", action == "trigger"))
		require.Equal(t, 202, code, "%v", body)
	}
	require.Eventually(t, func() bool { return len(actionsFor(pd, "ack-2")) >= 2 }, 30*time.Second, 50*time.Millisecond)
	time.Sleep(6 * time.Second)
	require.Equal(t, []string{"trigger", "acknowledge"}, actionsFor(pd, "ack-2"))
}

// An acknowledge before any trigger acknowledges nothing (PagerDuty
// ignores it): it is passed on as it came, and the trigger after it is
// sent as a trigger, then the acknowledge after that (a fresh helper:
// acknowledge, trigger, acknowledge reached PagerDuty as acknowledge,
// acknowledge — no incident at all). A Backlog target opens no issue for
// the first acknowledge.
func TestAcknowledgeBeforeAnyTrigger(t *testing.T) {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	ts := startServer(t, pdConfig(pd.EventsURL(), ""))
	for _, action := range []string{"acknowledge", "trigger", "acknowledge"} {
		code, body := ts.post(t, "/v2/enqueue", pdEvent(action, "ata-1", action == "trigger"))
		require.Equal(t, 202, code, "%v", body)
		time.Sleep(150 * time.Millisecond)
	}
	settle(t, ts)
	require.Equal(t, []string{"acknowledge", "trigger", "acknowledge"}, actionsFor(pd, "ata-1"))
	// A bare acknowledge again, for another key: passed on once.
	for range 2 {
		code, body := ts.post(t, "/v2/enqueue", pdEvent("acknowledge", "ata-2", false))
		require.Equal(t, 202, code, "%v", body)
		settle(t, ts)
	}
	require.Equal(t, []string{"acknowledge"}, actionsFor(pd, "ata-2"))
}
