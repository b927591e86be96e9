package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
	"github.com/alertfan/alertfan/sinks"
)

// Two replicas on one PostgreSQL database during a rolling reload that
// inserts a destination before another: the reloaded one (a) puts the new
// destination X at r/pagerduty/0 and A at r/pagerduty/1; the other (b)
// still has A at r/pagerduty/0. b must neither write intake under
// r/pagerduty/0 (it would mean X to every other replica: answered 503,
// ErrTargetsDiffer) nor send a job of r/pagerduty/0 to its own A (handed
// back without a call); once b loads the same configuration, it delivers
// the job to X.
func TestReplicaWithAnotherConfigNeitherWritesNorSendsAtMovedIDs(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	open := func(ts map[string]Target) *Store { return openReplica(t, dsn, ts) }
	oldConfig := func(a Sink) map[string]Target {
		return map[string]Target{"r/pagerduty/0": target("0", destA, a)}
	}
	newConfig := func(x, a Sink) map[string]Target {
		return map[string]Target{"r/pagerduty/0": target("0", destX, x), "r/pagerduty/1": target("1", destA, a)}
	}
	aSinks := [2]*recordingSink{{}, {}} // a's X, a's A
	bA := &recordingSink{}
	a := open(oldConfig(aSinks[1]))
	b := open(oldConfig(bA))
	ctx := context.Background()

	// a reloads first; only b's workers run, so b is the one that takes
	// the job a's intake makes for X.
	require.NoError(t, a.SetTargets(ctx, newConfig(aSinks[0], aSinks[1])))
	require.NoError(t, a.StopWorkers(ctx))
	_, err := b.Accept(ctx, intake("from-b"))
	require.ErrorIs(t, err, ErrTargetsDiffer, "b's r/pagerduty/0 is A; the deployment's is X")
	_, err = a.Accept(ctx, intake("for-x"))
	require.NoError(t, err)
	time.Sleep(1500 * time.Millisecond) // b's workers fetch the job, and must hand it back
	require.Empty(t, bA.all(), "b sent X's alert to the destination it has at r/pagerduty/0")
	require.Equal(t, 1.0, counterValue(t, b, "alertfan_target_config_differs_total"), "warned once")

	// b reloads: the same configuration; the job goes to X.
	bX, bA2 := &recordingSink{}, &recordingSink{}
	require.NoError(t, b.SetTargets(ctx, newConfig(bX, bA2)))
	require.Eventually(t, func() bool { return len(bX.all()) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "for-x", bX.all()[0].Key)
	require.Empty(t, bA.all())
	require.Empty(t, bA2.all())
	_, err = b.Accept(ctx, intake("from-b"))
	require.NoError(t, err, "the same configuration as the deployment's")
}

// A rolling reload that adds a destination at the end: a, reloaded,
// writes a job for the new id r/pagerduty/1, which b, not reloaded yet,
// does not configure at all. b hands the job back rather than
// dead-letter it as an unknown target (CI saw the alert's page missing
// when b's dead letter was written after b's own reload had retried such
// dead letters); once b loads the same configuration, it delivers it.
func TestReplicaWithoutAnAddedIDHandsItsJobBack(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	aA, aX := &recordingSink{}, &recordingSink{}
	bA := &recordingSink{}
	a := openReplica(t, dsn, map[string]Target{"r/pagerduty/0": target("0", destA, aA)})
	b := openReplica(t, dsn, map[string]Target{"r/pagerduty/0": target("0", destA, bA)})
	ctx := context.Background()
	require.NoError(t, a.SetTargets(ctx, map[string]Target{"r/pagerduty/0": target("0", destA, aA), "r/pagerduty/1": target("1", destX, aX)}))
	require.NoError(t, a.StopWorkers(ctx)) // b takes the job
	it := item("for-x", "firing")
	it.Target = "r/pagerduty/1"
	require.NoError(t, a.Enqueue(ctx, []Item{it}))
	time.Sleep(1500 * time.Millisecond) // b's workers fetch the job, and must hand it back
	dead, err := b.DeadLetters(ctx)
	require.NoError(t, err)
	require.Empty(t, dead, "b dead-lettered the job of an id the deployment has")
	require.Equal(t, 1.0, counterValue(t, b, "alertfan_target_config_differs_total"), "warned once")

	bX := &recordingSink{}
	require.NoError(t, b.SetTargets(ctx, map[string]Target{"r/pagerduty/0": target("0", destA, bA), "r/pagerduty/1": target("1", destX, bX)}))
	require.Eventually(t, func() bool { return len(bX.all()) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "for-x", bX.all()[0].Key)
	require.Empty(t, bA.all())
}

const destA, destX = "pagerduty:aaaa", "pagerduty:xxxx"

// openReplica opens and starts a store on the PostgreSQL database of dsn
// with targets ts: one replica of a deployment.
func openReplica(t *testing.T, dsn string, ts map[string]Target) *Store {
	t.Helper()
	return openStoreTargets(t, Options{Driver: DriverPostgres, DSN: dsn}, ts, nil)
}

func target(idx, dest string, sink Sink) Target {
	return Target{ID: "r/pagerduty/" + idx, Kind: "pagerduty", Receiver: "r", Sink: sink, Destination: dest}
}

// intake is a request that routes one firing alert to r/pagerduty/0.
func intake(key string) *Intake {
	it := item(key, "firing")
	return &Intake{Updates: []Update{{Identity: key, Input: "alertmanager", Want: PhaseTriggered, StartsAt: time.Now(), Ordered: true, Labels: []byte(`{}`), Items: []Item{it}}}}
}

// Intake at a replica whose destinations differ in any way from the ones
// loaded last is refused, even where its own ids agree: a destination
// added at the end (the old replica would not send it what the new
// configuration does), one removed, a receiver renamed.
func TestReplicaWithOtherDestinationsRefusesIntake(t *testing.T) {
	sink := &recordingSink{}
	for _, c := range []struct {
		name     string
		reloaded map[string]Target
	}{
		{"added at the end", map[string]Target{"r/pagerduty/0": target("0", destA, sink), "r/pagerduty/1": target("1", destX, sink)}},
		{"removed", map[string]Target{}},
		{"receiver renamed", map[string]Target{"q/pagerduty/0": {ID: "q/pagerduty/0", Kind: "pagerduty", Receiver: "q", Sink: sink, Destination: destA}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dsn := testenv.PostgresDSN(t)
			old := map[string]Target{"r/pagerduty/0": target("0", destA, sink)}
			a, b := openReplica(t, dsn, old), openReplica(t, dsn, old)
			ctx := context.Background()
			_, err := b.Accept(ctx, intake("before"))
			require.NoError(t, err, "the same destinations")
			require.NoError(t, a.SetTargets(ctx, c.reloaded))
			_, err = b.Accept(ctx, intake("during"))
			require.ErrorIs(t, err, ErrTargetsDiffer)
			require.NoError(t, b.SetTargets(ctx, c.reloaded))
			_, err = b.Accept(ctx, &Intake{})
			require.NoError(t, err, "reloaded")
		})
	}
}

// A destination one replica's reload removed: its open alerts' resolves
// go out under "retired/<destination>". A replica not reloaded yet still
// has the destination configured, and sends them with that sink instead
// of dead-lettering them as an unknown target (a breaker saw 14 of 20
// such resolves dead-lettered, their incidents left open).
func TestRetiredDestinationServedByAReplicaThatStillHasIt(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	aSink, bSink := &recordingSink{}, &recordingSink{}
	a := openReplica(t, dsn, map[string]Target{"r/pagerduty/0": target("0", destA, aSink)})
	b := openReplica(t, dsn, map[string]Target{"r/pagerduty/0": target("0", destA, bSink)})
	ctx := context.Background()
	require.NoError(t, a.Enqueue(ctx, []Item{item("open", "firing")}))
	require.Eventually(t, func() bool { return len(aSink.all())+len(bSink.all()) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, a.SetTargets(ctx, map[string]Target{}))
	require.NoError(t, a.StopWorkers(ctx)) // b, not reloaded, takes the resolve
	resolve := item("open", "resolved")
	resolve.Target = RetiredPrefix + destA
	require.NoError(t, a.Enqueue(ctx, []Item{resolve}))
	require.Eventually(t, func() bool {
		for _, n := range bSink.all() {
			if n.Status() == sinks.StatusResolved {
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond, "the resolve reached the destination through the replica that still has it")
	dead, err := b.DeadLetters(ctx)
	require.NoError(t, err)
	require.Empty(t, dead)
}
