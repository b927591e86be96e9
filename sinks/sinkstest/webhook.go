package sinkstest

import (
	"encoding/json"
	"fmt"
	"time"
)

// WebhookAlert is one alert of an Alertmanager webhook body.
type WebhookAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// Webhook builds an Alertmanager webhook (version 4) body the way
// Alertmanager's webhook notifier does, for tests and benchmarks.
func Webhook(receiver, groupKey string, groupLabels map[string]string, alerts ...WebhookAlert) []byte {
	status := "resolved"
	for _, a := range alerts {
		if a.Status == "firing" {
			status = "firing"
		}
	}
	common := map[string]string{}
	if len(alerts) > 0 {
		for k, v := range alerts[0].Labels {
			common[k] = v
		}
		for _, a := range alerts[1:] {
			for k, v := range common {
				if a.Labels[k] != v {
					delete(common, k)
				}
			}
		}
	}
	b, _ := json.Marshal(map[string]any{
		"version": "4", "groupKey": groupKey, "truncatedAlerts": 0, "status": status,
		"receiver": receiver, "groupLabels": groupLabels, "commonLabels": common,
		"commonAnnotations": map[string]string{}, "externalURL": "http://alertmanager.example:9093",
		"alerts": alerts,
	})
	return b
}

// NamedAlert is a firing or resolved alert with labels alertname=name,
// severity and instance, and a fingerprint derived from them.
func NamedAlert(name, severity, instance, status string, startsAt time.Time) WebhookAlert {
	a := WebhookAlert{
		Status:       status,
		Labels:       map[string]string{"alertname": name, "severity": severity, "instance": instance},
		Annotations:  map[string]string{"summary": name + " on " + instance},
		StartsAt:     startsAt,
		GeneratorURL: "http://prometheus.example:9090/graph",
		Fingerprint:  fmt.Sprintf("%016x", fnv64(name+"\x00"+severity+"\x00"+instance)),
	}
	if status == "resolved" {
		a.EndsAt = startsAt.Add(time.Minute)
	}
	return a
}

func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
