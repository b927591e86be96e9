package receiver

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/alertfan/alertfan/receiver/queue"
	"github.com/alertfan/alertfan/sinks/backlog"
)

// The admin API serves `alertfan queue`. The CLI talks to the running
// server because an SQLite store belongs to one process.
//
// Authentication is the web layer's alone (exporter-toolkit basic auth or
// client certificates from --web.config.file), as for every other path;
// the intake token is a sender's credential and grants nothing here.
// Reading the queue is always served; changing it (retry, drop) only with
// --web.enable-admin-api, and reloading only with --web.enable-lifecycle,
// as in Prometheus.

// adminEnabled answers 403 unless --web.enable-admin-api is set.
func (s *server) adminEnabled(w http.ResponseWriter, r *http.Request) bool {
	if s.opts.EnableAdminAPI {
		return true
	}
	s.logger.Warn("Refused admin request: the admin API is off (--web.enable-admin-api)", "remote", r.RemoteAddr, "route", r.Pattern)
	writeError(w, http.StatusForbidden, "Admin API is not enabled; start alertfan with --web.enable-admin-api", nil)
	return false
}

func (s *server) handleDeadList(w http.ResponseWriter, r *http.Request) {
	dead, err := s.store.DeadLetters(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store unavailable", nil)
		return
	}
	if dead == nil {
		dead = []queue.DeadLetter{}
	}
	if recv := r.URL.Query().Get("receiver"); recv != "" {
		kept := dead[:0]
		for _, d := range dead {
			if receiverOf(d.Target) == recv {
				kept = append(kept, d)
			}
		}
		dead = kept
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": dead})
}

// receiverOf reads the receiver from a target id ("receiver/kind/index").
func receiverOf(target string) string {
	for i := len(target) - 1; i >= 0; i-- {
		if target[i] == '/' {
			rest := target[:i]
			for j := len(rest) - 1; j >= 0; j-- {
				if rest[j] == '/' {
					return rest[:j]
				}
			}
			return rest
		}
	}
	return target
}

func (s *server) handleDeadShow(w http.ResponseWriter, r *http.Request) {
	id, ok := deadID(w, r)
	if !ok {
		return
	}
	dead, err := s.store.DeadLetters(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store unavailable", nil)
		return
	}
	for _, d := range dead {
		if d.ID == id {
			writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": d})
			return
		}
	}
	writeError(w, http.StatusNotFound, "no dead letter with id "+strconv.FormatInt(id, 10), nil)
}

// handleQueueList lists deliveries still owed (pending and retrying).
func (s *server) handleQueueList(w http.ResponseWriter, r *http.Request) {
	entries, err := s.store.Pending(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store unavailable", nil)
		return
	}
	out := []queue.Entry{}
	recv := r.URL.Query().Get("receiver")
	for _, e := range entries {
		if recv == "" || receiverOf(e.Target) == recv {
			out = append(out, e)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": out})
}

// forgetter is a sink that caches what it read of its destination.
type forgetter interface{ Forget() }

var _ forgetter = (*backlog.Notifier)(nil)

func (s *server) handleDeadRetry(w http.ResponseWriter, r *http.Request) {
	if !s.adminEnabled(w, r) {
		return
	}
	all := r.PathValue("id") == ""
	var id int64
	if !all {
		var ok bool
		if id, ok = deadID(w, r); !ok {
			return
		}
	}
	// Retrying usually follows a fix at the destination: targets that
	// cache what they read of it (Backlog's names) read it again.
	for _, t := range s.rt.Load().targets {
		if f, ok := t.Sink.(forgetter); ok {
			f.Forget()
		}
	}
	n, err := s.store.RetryDead(r.Context(), id, all)
	switch {
	case errors.Is(err, queue.ErrNotFound):
		writeError(w, http.StatusNotFound, "no dead letter with id "+strconv.FormatInt(id, 10), nil)
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "store unavailable: "+err.Error(), nil)
	default:
		s.logger.Info("Dead letters re-queued", "id", r.PathValue("id"), "count", n, "remote", r.RemoteAddr)
		writeJSON(w, http.StatusOK, map[string]any{"status": "success", "retried": n})
	}
}

func (s *server) handleDeadDrop(w http.ResponseWriter, r *http.Request) {
	if !s.adminEnabled(w, r) {
		return
	}
	id, ok := deadID(w, r)
	if !ok {
		return
	}
	err := s.store.DropDead(r.Context(), id)
	switch {
	case errors.Is(err, queue.ErrNotFound):
		writeError(w, http.StatusNotFound, "no dead letter with id "+strconv.FormatInt(id, 10), nil)
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "store unavailable: "+err.Error(), nil)
	default:
		s.logger.Info("Dead letter dropped", "id", id, "remote", r.RemoteAddr)
		writeJSON(w, http.StatusOK, map[string]any{"status": "success", "dropped": 1})
	}
}

func deadID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, "id: not a dead letter id (a positive number)", nil)
		return 0, false
	}
	return id, true
}
