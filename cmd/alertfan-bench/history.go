package main

import (
	"fmt"
	"time"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// historyCost measures what the delivery history costs intake: the
// closed-loop ingest (deliveries held by PagerDuty's 120/min limit) with
// storage.history on and off, alternated twice so that drift of a shared
// machine falls on both.
func historyCost(work, bin string, d time.Duration, senders int) error {
	pd := sinkstest.NewPagerDuty()
	defer pd.Close()
	rates := map[bool][]float64{}
	for round := 0; round < 2; round++ {
		for _, on := range []bool{true, false} {
			name := fmt.Sprintf("history-%v-%d", on, round)
			p, err := startHistoryAlertfan(work, name, bin, pd.EventsURL(), on)
			if err != nil {
				return err
			}
			r := closedLoop("http://"+p.addr+"/webhook", senders, d, 0)
			p.stop()
			if r.errors > 0 {
				return fmt.Errorf("%s: %d errors", name, r.errors)
			}
			rates[on] = append(rates[on], r.rate())
		}
	}
	avg := func(v []float64) float64 { return (v[0] + v[1]) / 2 }
	fmt.Println("### Delivery history: ingest with it on and off")
	fmt.Println()
	fmt.Println("Closed loop, deliveries held by the 120/min limit, two alternating runs each.")
	fmt.Println()
	fmt.Println("| storage.history | run 1 | run 2 | mean | ratio to off |")
	fmt.Println("|---|---:|---:|---:|---:|")
	for _, on := range []bool{false, true} {
		fmt.Printf("| %v | %.0f/s | %.0f/s | %.0f/s | %.2f× |\n", on, rates[on][0], rates[on][1], avg(rates[on]), avg(rates[on])/avg(rates[false]))
	}
	fmt.Println()
	return nil
}

func startHistoryAlertfan(work, name, bin, pdURL string, history bool) (*proc, error) {
	return startAlertfanWith(work, name, bin, pdURL, 120, fmt.Sprintf("  history: %v\n", history))
}
