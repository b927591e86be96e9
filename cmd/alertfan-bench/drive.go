package main

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

// drive sends a realistic mix to a running alertfan for d: alerts of
// several severities and teams fire, repeat as Alertmanager repeats them,
// and resolve, at about rate notifications per second.
func drive(url string, rate int, d time.Duration) error {
	type live struct {
		a     sinkstest.WebhookAlert
		until time.Time
	}
	var active []live
	severities := []struct{ sev, team string }{{"critical", "ops"}, {"warning", "db"}, {"info", "web"}, {"warning", "db"}, {"critical", "db"}}
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	stop := time.Now().Add(d)
	n, errs := 0, 0
	for now := range tick.C {
		if now.After(stop) {
			break
		}
		n++
		var a sinkstest.WebhookAlert
		switch {
		case len(active) > 0 && rand.IntN(3) == 0:
			// A repeat or a resolve of a live alert.
			i := rand.IntN(len(active))
			a = active[i].a
			if now.After(active[i].until) {
				a.Status = "resolved"
				a.EndsAt = now.UTC()
				active = append(active[:i], active[i+1:]...)
			}
		default:
			s := severities[rand.IntN(len(severities))]
			a = sinkstest.NamedAlert(fmt.Sprintf("Demo%s", []string{"DiskFull", "HighLatency", "ErrorRate", "CertExpiry"}[rand.IntN(4)]), s.sev, fmt.Sprintf("host-%03d", rand.IntN(500)), "firing", now.UTC())
			a.Labels["team"] = s.team
			active = append(active, live{a: a, until: now.Add(time.Duration(10+rand.IntN(120)) * time.Second)})
		}
		if err := post(url, sinkstest.Webhook("alertfan", `{}:{alertname="`+a.Labels["alertname"]+`"}`, map[string]string{"alertname": a.Labels["alertname"]}, a)); err != nil {
			errs++
		}
	}
	fmt.Printf("drove %d notifications (%d errors)\n", n, errs)
	return nil
}
