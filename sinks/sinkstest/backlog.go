package sinkstest

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Backlog error codes, as the API documents them.
const (
	BacklogInternalError        = 1
	BacklogNoResourceError      = 6
	BacklogInvalidRequestError  = 7
	BacklogAuthenticationError  = 11
	BacklogTooManyRequestsError = 13
)

// BacklogIssue is an issue in the fake.
type BacklogIssue struct {
	ID          int64
	Key         string
	ProjectID   int64
	Summary     string
	Description string
	IssueTypeID int64
	PriorityID  int64
	AssigneeID  int64
	StatusID    int64
	Resolution  int64
	Custom      map[string]string
	Comments    []string
	Created     time.Time
}

// BacklogCall is one request the fake answered.
type BacklogCall struct {
	Method string
	Path   string
	Status int
	At     time.Time
}

// BacklogResponse scripts one answer.
type BacklogResponse struct {
	Status int
	Body   string
	Header map[string]string
}

// Backlog is a fake Backlog API v2 for one space with one project.
type Backlog struct {
	*httptest.Server

	APIKey      string
	ProjectKey  string
	ProjectID   int64
	IssueTypes  map[string]int64
	Statuses    map[string]int64
	Priorities  map[string]int64
	Resolutions map[string]int64
	Fields      map[string]int64
	Users       map[string]int64
	// UpdateLimit is how many POST/PATCH/DELETE calls one API key may make
	// per Window; 0 means no limit.
	UpdateLimit int
	Window      time.Duration

	mu          sync.Mutex
	issues      map[string]*BacklogIssue
	order       []string
	nextID      int64
	nextKey     int64
	calls       []BacklogCall
	script      []BacklogResponse
	down        bool
	windowStart time.Time
	windowCount int
	// AfterCreate, if set, runs after an issue is stored and before the
	// 201 is written: a test can kill the client there.
	AfterCreate func(*BacklogIssue)
}

// NewBacklog starts a fake with project OPS, Backlog's default issue
// types, statuses, priorities and resolutions.
func NewBacklog(apiKey string) *Backlog {
	return NewBacklogOn(nil, apiKey)
}

// NewBacklogOn starts the fake on l (a loopback port when nil).
func NewBacklogOn(l net.Listener, apiKey string) *Backlog {
	b := &Backlog{
		APIKey:      apiKey,
		ProjectKey:  "OPS",
		ProjectID:   1001,
		IssueTypes:  map[string]int64{"Bug": 2001, "Task": 2002, "Request": 2003, "Other": 2004},
		Statuses:    map[string]int64{"Open": 1, "In Progress": 2, "Resolved": 3, "Closed": 4},
		Priorities:  map[string]int64{"High": 2, "Normal": 3, "Low": 4},
		Resolutions: map[string]int64{"Fixed": 0, "Won't Fix": 1, "Invalid": 2, "Duplication": 3, "Cannot Reproduce": 4},
		Fields:      map[string]int64{"Runbook": 3001, "Team": 3002},
		Users:       map[string]int64{"oncall": 4001, "alice": 4002},
		Window:      time.Minute,
		issues:      map[string]*BacklogIssue{},
		nextID:      1,
		nextKey:     1,
	}
	b.Server = startOn(l, http.HandlerFunc(b.serve))
	return b
}

// Script queues answers given before normal handling resumes.
func (b *Backlog) Script(rs ...BacklogResponse) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.script = append(b.script, rs...)
}

// SetDown makes every request answer 503 until cleared.
func (b *Backlog) SetDown(down bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down = down
}

// Issues returns the issues in creation order.
func (b *Backlog) Issues() []BacklogIssue {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]BacklogIssue, 0, len(b.order))
	for _, k := range b.order {
		is := *b.issues[k]
		is.Comments = append([]string(nil), is.Comments...)
		out = append(out, is)
	}
	return out
}

// Calls returns every answered request.
func (b *Backlog) Calls() []BacklogCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]BacklogCall(nil), b.calls...)
}

// CountStatus counts answered requests with a status code.
func (b *Backlog) CountStatus(code int) int {
	n := 0
	for _, c := range b.Calls() {
		if c.Status == code {
			n++
		}
	}
	return n
}

// StatusName returns the name of a status id.
func (b *Backlog) StatusName(id int64) string {
	for k, v := range b.Statuses {
		if v == id {
			return k
		}
	}
	return ""
}

type backlogWriter struct {
	http.ResponseWriter
	status int
}

func (w *backlogWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func backlogErr(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"message": msg, "code": code, "moreInfo": ""}}}) //nolint:errcheck
}

func backlogJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) //nolint:errcheck
}

func (b *Backlog) serve(rw http.ResponseWriter, r *http.Request) {
	w := &backlogWriter{ResponseWriter: rw, status: 200}
	defer func() {
		b.mu.Lock()
		b.calls = append(b.calls, BacklogCall{Method: r.Method, Path: r.URL.Path, Status: w.status, At: time.Now()})
		b.mu.Unlock()
	}()
	if r.URL.Query().Get("apiKey") != b.APIKey {
		backlogErr(w, http.StatusUnauthorized, BacklogAuthenticationError, "Authentication failure.")
		return
	}
	b.mu.Lock()
	if len(b.script) > 0 {
		s := b.script[0]
		b.script = b.script[1:]
		b.mu.Unlock()
		for k, v := range s.Header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json;charset=utf-8")
		w.WriteHeader(s.Status)
		io.WriteString(w, s.Body) //nolint:errcheck
		return
	}
	if b.down {
		b.mu.Unlock()
		backlogErr(w, http.StatusServiceUnavailable, BacklogInternalError, "Service Unavailable")
		return
	}
	if r.Method != http.MethodGet && b.UpdateLimit > 0 {
		now := time.Now()
		if now.Sub(b.windowStart) >= b.Window {
			b.windowStart, b.windowCount = now, 0
		}
		reset := b.windowStart.Add(b.Window)
		w.Header().Set("X-RateLimit-Limit", strconv.Itoa(b.UpdateLimit))
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10))
		if b.windowCount >= b.UpdateLimit {
			b.mu.Unlock()
			w.Header().Set("X-RateLimit-Remaining", "0")
			backlogErr(w, http.StatusTooManyRequests, BacklogTooManyRequestsError, "Too many requests.")
			return
		}
		b.windowCount++
		w.Header().Set("X-RateLimit-Remaining", strconv.Itoa(b.UpdateLimit-b.windowCount))
	}
	b.mu.Unlock()

	if r.Method == http.MethodPost || r.Method == http.MethodPatch {
		ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if ct != "application/x-www-form-urlencoded" {
			backlogErr(w, http.StatusBadRequest, BacklogInvalidRequestError, "Content-Type must be application/x-www-form-urlencoded.")
			return
		}
		if err := r.ParseForm(); err != nil {
			backlogErr(w, http.StatusBadRequest, BacklogInvalidRequestError, "Malformed form body.")
			return
		}
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 3 || parts[0] != "api" || parts[1] != "v2" {
		backlogErr(w, http.StatusNotFound, BacklogNoResourceError, "No such API.")
		return
	}
	parts = parts[2:]
	switch {
	case r.Method == http.MethodGet && len(parts) == 1 && parts[0] == "priorities":
		backlogJSON(w, 200, namedList(b.Priorities))
	case r.Method == http.MethodGet && len(parts) == 1 && parts[0] == "resolutions":
		backlogJSON(w, 200, namedList(b.Resolutions))
	case parts[0] == "projects" && r.Method == http.MethodGet:
		b.serveProject(w, parts[1:])
	case parts[0] == "issues" && len(parts) == 1 && r.Method == http.MethodPost:
		b.createIssue(w, r)
	case parts[0] == "issues" && len(parts) == 1 && r.Method == http.MethodGet:
		b.searchIssues(w, r)
	case parts[0] == "issues" && len(parts) == 2 && r.Method == http.MethodPatch:
		b.updateIssue(w, r, parts[1])
	case parts[0] == "issues" && len(parts) == 3 && parts[2] == "comments" && r.Method == http.MethodPost:
		b.addComment(w, r, parts[1])
	default:
		backlogErr(w, http.StatusNotFound, BacklogNoResourceError, "No such API.")
	}
}

func namedList(m map[string]int64) []map[string]any {
	out := make([]map[string]any, 0, len(m))
	for name, id := range m {
		out = append(out, map[string]any{"id": id, "name": name})
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["id"].(int64) < out[j]["id"].(int64) })
	return out
}

func (b *Backlog) serveProject(w http.ResponseWriter, rest []string) {
	if len(rest) == 0 || (rest[0] != b.ProjectKey && rest[0] != strconv.FormatInt(b.ProjectID, 10)) {
		backlogErr(w, http.StatusNotFound, BacklogNoResourceError, "No project.")
		return
	}
	if len(rest) == 1 {
		backlogJSON(w, 200, map[string]any{"id": b.ProjectID, "projectKey": b.ProjectKey, "name": "Operations", "textFormattingRule": "markdown", "archived": false})
		return
	}
	switch rest[1] {
	case "issueTypes":
		list := namedList(b.IssueTypes)
		for _, it := range list {
			it["projectId"] = b.ProjectID
			it["color"] = "#990000"
		}
		backlogJSON(w, 200, list)
	case "statuses":
		backlogJSON(w, 200, namedList(b.Statuses))
	case "customFields":
		list := namedList(b.Fields)
		for _, it := range list {
			it["typeId"] = 1
		}
		backlogJSON(w, 200, list)
	case "users":
		out := []map[string]any{}
		for name, id := range b.Users {
			out = append(out, map[string]any{"id": id, "userId": name, "name": strings.ToUpper(name[:1]) + name[1:]})
		}
		backlogJSON(w, 200, out)
	default:
		backlogErr(w, http.StatusNotFound, BacklogNoResourceError, "No such API.")
	}
}

func formInt(r *http.Request, k string) (int64, bool) {
	v := r.PostForm.Get(k)
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

func hasValue(m map[string]int64, id int64) bool {
	for _, v := range m {
		if v == id {
			return true
		}
	}
	return false
}

func (b *Backlog) issueJSON(is *BacklogIssue) map[string]any {
	return map[string]any{
		"id": is.ID, "projectId": is.ProjectID, "issueKey": is.Key, "keyId": is.ID,
		"summary": is.Summary, "description": is.Description,
		"issueType": map[string]any{"id": is.IssueTypeID},
		"priority":  map[string]any{"id": is.PriorityID},
		"status":    map[string]any{"id": is.StatusID, "name": b.StatusName(is.StatusID)},
		"created":   is.Created.UTC().Format(time.RFC3339),
	}
}

func (b *Backlog) createIssue(w http.ResponseWriter, r *http.Request) {
	pid, ok := formInt(r, "projectId")
	if !ok || pid != b.ProjectID {
		backlogErr(w, http.StatusBadRequest, BacklogInvalidRequestError, "Please input valid projectId.")
		return
	}
	summary := r.PostForm.Get("summary")
	if strings.TrimSpace(summary) == "" {
		backlogErr(w, http.StatusBadRequest, BacklogInvalidRequestError, "Please input summary.")
		return
	}
	if len([]rune(summary)) > 255 {
		backlogErr(w, http.StatusBadRequest, BacklogInvalidRequestError, "Summary is too long.")
		return
	}
	tid, ok := formInt(r, "issueTypeId")
	if !ok || !hasValue(b.IssueTypes, tid) {
		backlogErr(w, http.StatusBadRequest, BacklogInvalidRequestError, "Please input valid issueTypeId.")
		return
	}
	prio, ok := formInt(r, "priorityId")
	if !ok || !hasValue(b.Priorities, prio) {
		backlogErr(w, http.StatusBadRequest, BacklogInvalidRequestError, "Please input valid priorityId.")
		return
	}
	is := &BacklogIssue{ProjectID: pid, Summary: summary, Description: r.PostForm.Get("description"), IssueTypeID: tid, PriorityID: prio, StatusID: b.Statuses["Open"], Custom: map[string]string{}, Created: time.Now()}
	if a, ok := formInt(r, "assigneeId"); ok {
		if !hasValue(b.Users, a) {
			backlogErr(w, http.StatusBadRequest, BacklogInvalidRequestError, "Please input valid assigneeId.")
			return
		}
		is.AssigneeID = a
	}
	for k, v := range r.PostForm {
		if strings.HasPrefix(k, "customField_") {
			is.Custom[k] = v[0]
		}
	}
	b.mu.Lock()
	is.ID = b.nextID
	b.nextID++
	is.Key = fmt.Sprintf("%s-%d", b.ProjectKey, b.nextKey)
	b.nextKey++
	b.issues[is.Key] = is
	b.order = append(b.order, is.Key)
	hook := b.AfterCreate
	cp := *is
	b.mu.Unlock()
	if hook != nil {
		hook(&cp)
	}
	w.Header().Set("Location", b.URL+"/view/"+is.Key)
	backlogJSON(w, http.StatusCreated, b.issueJSON(&cp))
}

func (b *Backlog) updateIssue(w http.ResponseWriter, r *http.Request, key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	is, ok := b.issues[key]
	if !ok {
		backlogErr(w, http.StatusNotFound, BacklogNoResourceError, "No issue.")
		return
	}
	for _, f := range []struct {
		name  string
		valid map[string]int64
		dst   *int64
	}{{"statusId", b.Statuses, &is.StatusID}, {"resolutionId", b.Resolutions, &is.Resolution}} {
		v := r.PostForm.Get(f.name)
		if v == "" {
			continue
		}
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || !hasValue(f.valid, id) {
			backlogErr(w, http.StatusBadRequest, BacklogInvalidRequestError, "Please input valid "+f.name+".")
			return
		}
		*f.dst = id
	}
	if v := r.PostForm.Get("summary"); v != "" {
		is.Summary = v
	}
	if c := r.PostForm.Get("comment"); c != "" {
		is.Comments = append(is.Comments, c)
	}
	backlogJSON(w, http.StatusOK, b.issueJSON(is))
}

func (b *Backlog) addComment(w http.ResponseWriter, r *http.Request, key string) {
	content := r.PostForm.Get("content")
	b.mu.Lock()
	defer b.mu.Unlock()
	is, ok := b.issues[key]
	if !ok {
		backlogErr(w, http.StatusNotFound, BacklogNoResourceError, "No issue.")
		return
	}
	if strings.TrimSpace(content) == "" {
		backlogErr(w, http.StatusBadRequest, BacklogInvalidRequestError, "Please input content.")
		return
	}
	is.Comments = append(is.Comments, content)
	backlogJSON(w, http.StatusCreated, map[string]any{"id": len(is.Comments), "content": content, "created": time.Now().UTC().Format(time.RFC3339)})
}

func (b *Backlog) searchIssues(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	kw := q.Get("keyword")
	count := 20
	if c, err := strconv.Atoi(q.Get("count")); err == nil && c >= 1 && c <= 100 {
		count = c
	}
	projects := q["projectId[]"]
	b.mu.Lock()
	defer b.mu.Unlock()
	out := []map[string]any{}
	for i := len(b.order) - 1; i >= 0 && len(out) < count; i-- {
		is := b.issues[b.order[i]]
		if len(projects) > 0 && !containsID(projects, is.ProjectID) {
			continue
		}
		if kw != "" && !strings.Contains(is.Summary, kw) && !strings.Contains(is.Description, kw) {
			continue
		}
		out = append(out, b.issueJSON(is))
	}
	backlogJSON(w, http.StatusOK, out)
}

func containsID(ids []string, id int64) bool {
	s := strconv.FormatInt(id, 10)
	for _, v := range ids {
		if v == s {
			return true
		}
	}
	return false
}
