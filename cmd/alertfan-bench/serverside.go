package main

import (
	"bufio"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// histogram is a scrape of one Prometheus histogram: cumulative counts
// by upper bound (seconds), summed over its label sets.
type histogram map[float64]float64

// metricLines fetches a /metrics URL's text exposition, line by line.
func metricLines(url string) ([]string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}

// sample is one labelled sample of a metric family: the text inside its
// braces and its value as exposed.
type sample struct{ labels, value string }

// samples returns name's labelled samples among a scrape's lines, in the
// order exposed.
func samples(lines []string, name string) []sample {
	var out []sample
	for _, line := range lines {
		if rest, ok := strings.CutPrefix(line, name+"{"); ok {
			if i := strings.Index(rest, "}"); i >= 0 {
				out = append(out, sample{rest[:i], strings.TrimSpace(rest[i+1:])})
			}
		}
	}
	return out
}

// scrapeHistogram reads name's buckets from a /metrics URL.
func scrapeHistogram(url, name string) (histogram, error) {
	lines, err := metricLines(url)
	if lines == nil && err != nil {
		return nil, err
	}
	h := histogram{}
	for _, line := range lines {
		if !strings.HasPrefix(line, name+"_bucket{") {
			continue
		}
		i := strings.Index(line, `le="`)
		j := strings.LastIndex(line, `"}`)
		if i < 0 || j < i {
			continue
		}
		le := line[i+4 : j]
		bound, err := strconv.ParseFloat(le, 64)
		if le == "+Inf" {
			bound, err = 1e9, nil
		}
		if err != nil {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[j+2:]), 64)
		if err != nil {
			continue
		}
		h[bound] += v
	}
	return h, err
}

// since is the histogram of what was observed between old and h.
func (h histogram) since(old histogram) histogram {
	out := histogram{}
	for b, v := range h {
		out[b] = v - old[b]
	}
	return out
}

// summary gives the share of observations within 20 ms and the bucket
// holding the 99th percentile ("≤ 50 ms"), as alertfan itself measured
// them (decode, route, durable commit; not the client's wait for a CPU).
func (h histogram) summary() string {
	var bounds []float64
	for b := range h {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	if len(bounds) == 0 || h[bounds[len(bounds)-1]] == 0 {
		return "—"
	}
	total := h[bounds[len(bounds)-1]]
	p99 := "> 2.5 s"
	for _, b := range bounds {
		if h[b] >= 0.99*total {
			p99 = fmt.Sprintf("≤ %g ms", b*1000)
			break
		}
	}
	return fmt.Sprintf("%.1f%% ≤ 20 ms, p99 %s", 100*h[0.02]/total, p99)
}

// scrapeValue reads an unlabelled counter or gauge from a /metrics URL.
func scrapeValue(url, name string) string {
	if f, ok := scrapeFloat(url, name); ok {
		return fmt.Sprintf("%.1f", f)
	}
	return "—"
}

// scrapeFloat reads an unlabelled sample (a counter, a gauge, a
// histogram's _sum or _count) from a /metrics URL.
func scrapeFloat(url, name string) (float64, bool) {
	lines, _ := metricLines(url)
	for _, line := range lines {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				return f, true
			}
		}
	}
	return 0, false
}

// writerBusy is what the store's writer did over a run, from
// alertfan_store_commit_duration_seconds: the share of the run it spent in
// commits, how many, and the notifications per commit.
type writerBusy struct{ sum, count float64 }

func scrapeWriter(metrics string) writerBusy {
	s, _ := scrapeFloat(metrics, "alertfan_store_commit_duration_seconds_sum")
	c, _ := scrapeFloat(metrics, "alertfan_store_commit_duration_seconds_count")
	return writerBusy{s, c}
}

func (w writerBusy) report(before writerBusy, r *result) string {
	commits := w.count - before.count
	if commits <= 0 || r.elapsed <= 0 {
		return "—"
	}
	return fmt.Sprintf("in commits %.0f%% of the run (%.0f commits, %.1f notifications each)",
		100*(w.sum-before.sum)/r.elapsed.Seconds(), commits, float64(r.n)/commits)
}
