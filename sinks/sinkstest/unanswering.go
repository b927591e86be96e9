package sinkstest

import (
	"net/http"
	"net/http/httptest"
	"sync"
)

// Unanswering is a target that takes every request and never answers: a
// host that accepted the connection and hung. A client gives up on it by
// its own timeout only. Close ends the requests it holds.
type Unanswering struct {
	*httptest.Server
	release chan struct{}
	once    sync.Once
}

// NewUnanswering starts an Unanswering server on a loopback port.
func NewUnanswering() *Unanswering {
	u := &Unanswering{release: make(chan struct{})}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-u.release:
		case <-r.Context().Done():
		}
	}))
	return u
}

// Close ends the held requests, then the server.
func (u *Unanswering) Close() {
	u.once.Do(func() { close(u.release) })
	u.Server.Close()
}
