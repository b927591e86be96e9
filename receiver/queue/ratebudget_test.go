package queue

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/internal/testenv"
)

// Two stores on one PostgreSQL database book disjoint slots, interval
// apart, and a hold moves everyone's next slot.
func TestRateBudgetOnPostgres(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	a := openStore(t, Options{Driver: DriverPostgres, DSN: dsn}, &recordingSink{})
	b := openStore(t, Options{Driver: DriverPostgres, DSN: dsn}, &recordingSink{})
	ctx := context.Background()
	const iv = 10 * time.Millisecond
	var (
		mu     sync.Mutex
		starts []int64
		wg     sync.WaitGroup
	)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			first, _, _, err := s.RateBudget().(pgBudget).claim(ctx, "k", 3, iv)
			require.NoError(t, err)
			mu.Lock()
			starts = append(starts, first)
			mu.Unlock()
		}()
	}
	wg.Wait()
	// 20 claims of 3 slots: 60 slots, none shared (each claim's first slot
	// at least 3 intervals from every other's on the database's clock).
	for i := range starts {
		for j := range i {
			d := time.Duration(starts[i]-starts[j]).Abs() * time.Microsecond
			require.GreaterOrEqual(t, d, 3*iv, "claims %d and %d overlap", i, j)
		}
	}
	require.NoError(t, b.RateBudget().Hold(ctx, "k", 5*time.Second))
	first, held, err := a.RateBudget().Claim(ctx, "k", 1, iv)
	require.NoError(t, err)
	require.Greater(t, time.Until(first), 4*time.Second)
	require.Greater(t, time.Until(held), 4*time.Second, "the other replica's hold is told with the claim")
	require.False(t, first.Before(held), "no slot before the hold ends")

	// SQLite is owned by one process: its limiters stay in memory.
	lite := openStore(t, Options{Driver: DriverSQLite, Path: t.TempDir() + "/q.db"}, &recordingSink{})
	require.Nil(t, lite.RateBudget())
}
