package receiver

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// commitHealth is whether the store can commit now, as the commit path
// last saw it: every intake commit reports, and a probe commits an empty
// transaction when intake has been quiet. /-/ready reads it, so a load
// balancer stops sending to a replica whose store refuses every request.
type commitHealth struct {
	mu    sync.Mutex
	ok    bool
	since time.Time // when ok last changed
	okAt  time.Time // last success
}

func (s *server) commitResult(err error) {
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	ok := err == nil
	if ok {
		h.okAt = now
	}
	if ok != h.ok {
		h.ok, h.since = ok, now
		if ok {
			s.metrics.storeCanCommit.Set(1)
			s.logger.Info("The store commits again; ready")
		} else {
			s.metrics.storeCanCommit.Set(0)
			s.logger.Error("The store cannot commit; not ready until it does", "err", err)
		}
	}
}

func (s *server) canCommit() (ok bool, since time.Time, okAt time.Time) {
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ok, h.since, h.okAt
}

// probeLoop commits an empty transaction every probe interval unless
// intake committed within it.
func (s *server) probeLoop(ctx context.Context) {
	t := time.NewTicker(s.opts.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, _, okAt := s.canCommit(); time.Since(okAt) < s.opts.ProbeInterval {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, s.opts.CommitTimeout)
		err := s.store.Probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		s.commitResult(err)
	}
}

// commitContext bounds how long an intake request waits for its commit,
// so that a hung database gets a 503 in bounded time, not a held request.
func (s *server) commitContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.opts.CommitTimeout)
}

// accepted records an intake request's durable commit.
func (s *server) accepted(r *http.Request, input string, start time.Time) {
	s.commitResult(nil)
	now := time.Now()
	if ended, failed, n := s.unavailableRun.Succeeded(now); ended {
		s.logger.Info("Intake accepts again after answering 503 while the store could not commit", "failing_for", failed.Round(time.Millisecond), "refused", n)
	}
	if ended, failed, n := s.differRun.Succeeded(now); ended {
		s.logger.Info("Intake accepts again: this replica's destinations are the deployment's", "refusing_for", failed.Round(time.Millisecond), "refused", n)
	}
	s.metrics.intakeDuration.WithLabelValues(input).Observe(time.Since(start).Seconds())
	s.logger.Debug("Accepted intake request", "input", input, "remote", r.RemoteAddr, "route", r.Pattern, "duration", time.Since(start))
}

func (s *server) handleReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !s.store.Ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "alertfan is not ready: the store is not open.\n") //nolint:errcheck
		return
	}
	if ok, since, _ := s.canCommit(); !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "alertfan is not ready: the store cannot commit (since %s); intake answers 503.\n", since.UTC().Format(time.RFC3339))
		return
	}
	var b strings.Builder
	b.WriteString("alertfan is Ready.\n")
	if nr := s.rt.Load().notReadyTargets(); len(nr) > 0 {
		b.WriteString("Targets not ready (their deliveries are held in the queue and retried):\n")
		for _, id := range sortedIDs(nr) {
			fmt.Fprintf(&b, "  %s: %s\n", id, nr[id])
		}
	}
	io.WriteString(w, b.String()) //nolint:errcheck
}
