package receiver

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/alertfan/alertfan/receiver/queue"
)

// The admin API serves `alertfan queue list|retry`. The CLI talks to the
// running server because an SQLite store belongs to one process. When an
// intake token is configured the API requires it too.

func (s *server) adminAllowed(w http.ResponseWriter, r *http.Request) bool {
	if s.rt.Load().authorized(r, "") {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="alertfan"`)
	writeError(w, http.StatusUnauthorized, "unauthorized: missing or wrong token", nil)
	return false
}

func (s *server) handleDeadList(w http.ResponseWriter, r *http.Request) {
	if !s.adminAllowed(w, r) {
		return
	}
	dead, err := s.store.DeadLetters(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store unavailable", nil)
		return
	}
	if dead == nil {
		dead = []queue.DeadLetter{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": dead})
}

func (s *server) handleDeadRetry(w http.ResponseWriter, r *http.Request) {
	if !s.adminAllowed(w, r) {
		return
	}
	all := r.PathValue("id") == ""
	var id int64
	if !all {
		var err error
		if id, err = strconv.ParseInt(r.PathValue("id"), 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, "id: not a number", nil)
			return
		}
	}
	n, err := s.store.RetryDead(r.Context(), id, all)
	switch {
	case errors.Is(err, queue.ErrNotFound):
		writeError(w, http.StatusNotFound, "no dead letter with id "+strconv.FormatInt(id, 10), nil)
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "store unavailable: "+err.Error(), nil)
	default:
		writeJSON(w, http.StatusOK, map[string]any{"status": "success", "retried": n})
	}
}
