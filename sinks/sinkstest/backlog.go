package sinkstest

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Backlog error codes, as the API documents them.
const (
	BacklogInternalError              = 1
	BacklogNoResourceError            = 6
	BacklogUnauthorizedOperationError = 5
	BacklogInvalidRequestError        = 7
	BacklogAuthenticationError        = 11
	BacklogTooManyRequestsError       = 13
)

// Limits the fake enforces, as Backlog documents or answers them: an issue
// summary is at most 255 characters (add-issue,
// https://developer.nulab.com/docs/backlog/api/2/add-issue/); a text custom
// field at most 255. Description and comment bodies are refused above
// BacklogMaxBody characters.
const (
	BacklogMaxSummary   = 255
	BacklogMaxTextField = 255
	BacklogMaxBody      = 100000
	// BacklogMaxComment: "The Comment must be no longer than 50,000."
	// (code 7), measured against the API in 2025
	// (https://qiita.com/otLenz/items/8e21020b37880f6392c6).
	BacklogMaxComment = 50000
)

// subjectLength is Backlog's answer to an empty summary or one over 255
// characters (code 7; the English text, measured against the API in 2025:
// https://qiita.com/otLenz/items/8e21020b37880f6392c6).
const subjectLength = "The Subject must be no shorter than 1 and no longer than 255."

// Custom field types (typeId of get-custom-field-list,
// https://developer.nulab.com/docs/backlog/api/2/get-custom-field-list/).
const (
	BacklogFieldText     = 1
	BacklogFieldSentence = 2
	BacklogFieldNumeric  = 3
	BacklogFieldDate     = 4
	BacklogFieldList     = 5
	BacklogFieldMulti    = 6
	BacklogFieldCheckbox = 7
	BacklogFieldRadio    = 8
)

// BacklogItem is one choice of a list, checkbox or radio field.
type BacklogItem struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// BacklogCustomField is a project custom field.
type BacklogCustomField struct {
	ID       int64
	TypeID   int
	Name     string
	Required bool
	// ApplicableIssueTypes limits the field to these issue type ids
	// (useIssueType); empty means every type.
	ApplicableIssueTypes []int64
	Items                []BacklogItem
	// AllowAddItem lets users add items (list types); AllowInput is the
	// "other" free-text choice of checkbox and radio fields.
	AllowAddItem bool
	AllowInput   bool
	// Min, Max bound a numeric field; get-custom-field-list shows them as
	// JSON numbers (nulab/backlog4j NumericCustomFieldSetting: BigDecimal).
	Min, Max *float64
	// MinDate, MaxDate bound a date field, as days (yyyy-MM-dd) in the
	// space's Timezone; get-custom-field-list shows each as the instant
	// that day begins, "2014-06-09T15:00:00Z" for 2014-06-10 in Tokyo
	// (backlog4j DateCustomFieldSetting, test fixture custom_fields.json).
	MinDate, MaxDate string
}

// BacklogIssue is an issue in the fake.
type BacklogIssue struct {
	ID          int64
	Key         string
	ProjectID   int64
	Summary     string
	Description string
	IssueTypeID int64
	PriorityID  int64
	// AssigneeID is nil when nobody is assigned.
	AssigneeID *int64
	StatusID   int64
	// Resolution is nil until one is set: Backlog's "Fixed" is id 0.
	Resolution *int64
	// Custom holds customField_{id} values as sent (repeated for
	// multiple-choice fields); Other holds customField_{id}_otherValue.
	Custom   map[string][]string
	Other    map[string]string
	Comments []string
	// CommentedAt is when each comment was made (get-comment-list's created).
	CommentedAt []time.Time
	Created     time.Time
}

// BacklogCall is one request the fake answered.
type BacklogCall struct {
	Method string
	Path   string
	Status int
	At     time.Time
	Form   url.Values
}

// BacklogResponse scripts one answer.
type BacklogResponse struct {
	Status int
	Body   string
	Header map[string]string
}

// Backlog is a fake Backlog API v2 for one space with one project. It
// follows the API reference (https://developer.nulab.com/docs/backlog/):
// real ids (statuses 1–4, resolutions 0–4, priorities 2–4), names in the
// space's language, custom fields with types and items, length limits, the
// project's textFormattingRule, {"errors":[…]} error bodies and the
// X-RateLimit-* headers.
type Backlog struct {
	*httptest.Server

	APIKey      string
	ProjectKey  string
	ProjectID   int64
	ProjectName string
	// TextFormattingRule is "markdown" or "backlog" (get-project).
	TextFormattingRule string
	IssueTypes         map[string]int64
	Statuses           map[string]int64
	Priorities         map[string]int64
	Resolutions        map[string]int64
	CustomFields       []BacklogCustomField
	Users              map[string]int64
	// Timezone is the space's (get-space's timezone), an IANA name.
	Timezone string
	// UserID is the user APIKey belongs to (get-own-user); AddAPIKey
	// gives a user more keys.
	UserID   int64
	UserName string
	// RoleType is the users' role (get-own-user's roleType,
	// https://developer.nulab.com/docs/backlog/api/2/get-own-user/):
	// 1 Administrator, 2 Normal User, 3 Reporter, 4 Viewer, 5 Guest
	// Reporter, 6 Guest Viewer; 0 means 1. Reporters may add issues and
	// comments (add-comment) but not edit issues (update-issue); viewers
	// may do neither (https://backlogtool.com/guide/en/others/others5.html,
	// https://developer.nulab.com/docs/backlog/api/2/add-comment/).
	RoleType int
	// UpdateLimit, ReadLimit and SearchLimit are how many calls of each
	// of Backlog's request types one USER may make per Window, whichever
	// of its keys it uses (https://developer.nulab.com/docs/backlog/rate-limit/:
	// "This limit is per user, not per API key"): Update is POST, PATCH
	// and DELETE; Search is get-issue-list (GET /api/v2/issues); Read is
	// every other GET. 0 means no limit (the headers show 1<<20).
	UpdateLimit int
	ReadLimit   int
	SearchLimit int
	Window      time.Duration
	// SearchLag is how long a new issue stays out of keyword searches
	// (get-issue-list with keyword): a search index behind the writes.
	// Lists without a keyword see every issue at once.
	SearchLag time.Duration

	mu          sync.Mutex
	issues      map[string]*BacklogIssue
	order       []string
	nextID      int64
	nextKey     int64
	calls       []BacklogCall
	script      []BacklogResponse
	writeScript []BacklogResponse
	down        bool
	// keys maps extra API keys to their users (AddAPIKey).
	keys map[string]int64
	// windows count each user's calls per request type in the window.
	windows map[rateWindowKey]*rateWindow
	// AfterCreate, if set, runs after an issue is stored and before the
	// 201 is written: a test can kill the client there.
	AfterCreate func(*BacklogIssue)
}

// SetRoleType changes the users' role while the fake serves (RoleType).
func (b *Backlog) SetRoleType(role int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.RoleType = role
}

func (b *Backlog) roleType() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.RoleType == 0 {
		return 1
	}
	return b.RoleType
}

// NewBacklog starts a fake English-language space with project OPS and
// Backlog's default issue types, statuses, priorities and resolutions.
func NewBacklog(apiKey string) *Backlog {
	return NewBacklogOn(nil, apiKey)
}

// NewBacklogOn starts the English fake on l (a loopback port when nil).
func NewBacklogOn(l net.Listener, apiKey string) *Backlog {
	b := newBacklog(apiKey)
	b.Server = startOn(l, http.HandlerFunc(b.serve), nil)
	return b
}

// NewBacklogJa starts a fake Japanese-language space: the same ids, the
// names a Japanese space shows (未対応/処理中/処理済み/完了, 高/中/低,
// 対応済み/対応しない/無効/重複/再現しない, バグ/タスク/要望/その他) and
// Backlog notation as the project's formatting rule.
func NewBacklogJa(apiKey string) *Backlog {
	b := newBacklog(apiKey)
	b.ProjectName = "運用"
	b.TextFormattingRule = "backlog"
	b.IssueTypes = map[string]int64{"バグ": 2001, "タスク": 2002, "要望": 2003, "その他": 2004}
	b.Statuses = map[string]int64{"未対応": 1, "処理中": 2, "処理済み": 3, "完了": 4}
	b.Priorities = map[string]int64{"高": 2, "中": 3, "低": 4}
	b.Resolutions = map[string]int64{"対応済み": 0, "対応しない": 1, "無効": 2, "重複": 3, "再現しない": 4}
	b.CustomFields = []BacklogCustomField{
		{ID: 3001, TypeID: BacklogFieldText, Name: "手順書"},
		{ID: 3002, TypeID: BacklogFieldText, Name: "チーム"},
	}
	b.Timezone = "Asia/Tokyo"
	b.Server = startOn(nil, http.HandlerFunc(b.serve), nil)
	return b
}

func newBacklog(apiKey string) *Backlog {
	return &Backlog{
		APIKey:             apiKey,
		ProjectKey:         "OPS",
		ProjectID:          1001,
		ProjectName:        "Operations",
		TextFormattingRule: "markdown",
		IssueTypes:         map[string]int64{"Bug": 2001, "Task": 2002, "Request": 2003, "Other": 2004},
		Statuses:           map[string]int64{"Open": 1, "In Progress": 2, "Resolved": 3, "Closed": 4},
		Priorities:         map[string]int64{"High": 2, "Normal": 3, "Low": 4},
		Resolutions:        map[string]int64{"Fixed": 0, "Won't Fix": 1, "Invalid": 2, "Duplicate": 3, "Cannot Reproduce": 4},
		CustomFields: []BacklogCustomField{
			{ID: 3001, TypeID: BacklogFieldText, Name: "Runbook"},
			{ID: 3002, TypeID: BacklogFieldText, Name: "Team"},
		},
		Users:    map[string]int64{"oncall": 4001, "alice": 4002},
		Timezone: "UTC",
		UserID:   4001,
		UserName: "oncall",
		Window:   time.Minute,
		keys:     map[string]int64{},
		windows:  map[rateWindowKey]*rateWindow{},
		issues:   map[string]*BacklogIssue{},
		nextID:   1,
		nextKey:  1,
	}
}

// AllFieldTypes replaces the project's custom fields with one of each type
// (ids 3101–3108, list items from 5001): Note (text), Details (sentence),
// Cost (numeric, 0–1000), Due (date, 2020-01-01–2099-12-31), Environment (single list: prod, stg),
// Regions (multiple list: tokyo, osaka), Impact (checkbox: users, billing,
// with "other"), Severity (radio: sev1, sev2, with "other"). ja gives the
// fields Japanese names (メモ, 詳細, 費用, 期限, 環境, 地域, 影響, 重大度).
func (b *Backlog) AllFieldTypes(ja bool) {
	n := func(en, jp string) string {
		if ja {
			return jp
		}
		return en
	}
	lo, hi := 0.0, 1000.0
	b.mu.Lock()
	defer b.mu.Unlock()
	b.CustomFields = []BacklogCustomField{
		{ID: 3101, TypeID: BacklogFieldText, Name: n("Note", "メモ")},
		{ID: 3102, TypeID: BacklogFieldSentence, Name: n("Details", "詳細")},
		{ID: 3103, TypeID: BacklogFieldNumeric, Name: n("Cost", "費用"), Min: &lo, Max: &hi},
		{ID: 3104, TypeID: BacklogFieldDate, Name: n("Due", "期限"), MinDate: "2020-01-01", MaxDate: "2099-12-31"},
		{ID: 3105, TypeID: BacklogFieldList, Name: n("Environment", "環境"), Items: []BacklogItem{{5001, "prod"}, {5002, "stg"}}},
		{ID: 3106, TypeID: BacklogFieldMulti, Name: n("Regions", "地域"), Items: []BacklogItem{{5011, "tokyo"}, {5012, "osaka"}}},
		{ID: 3107, TypeID: BacklogFieldCheckbox, Name: n("Impact", "影響"), Items: []BacklogItem{{5021, "users"}, {5022, "billing"}}, AllowInput: true},
		{ID: 3108, TypeID: BacklogFieldRadio, Name: n("Severity", "重大度"), Items: []BacklogItem{{5031, "sev1"}, {5032, "sev2"}}, AllowInput: true},
	}
}

// AddListItem is an administrator adding item to the list, checkbox or
// radio custom field fieldID while alertfan runs.
func (b *Backlog) AddListItem(fieldID int64, item BacklogItem) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.CustomFields {
		if b.CustomFields[i].ID == fieldID {
			b.CustomFields[i].Items = append(b.CustomFields[i].Items, item)
		}
	}
}

// AddAPIKey makes key another API key of user userID: its calls count
// toward that user's rate limits, with every other key of the user.
func (b *Backlog) AddAPIKey(key string, userID int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.keys[key] = userID
}

// SetAPIKey replaces APIKey while the fake serves: the old key answers
// 401 from now on, as after an administrator revoked it.
func (b *Backlog) SetAPIKey(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.APIKey = key
}

// RevokeAPIKey makes key answer 401, as Backlog does once a key is
// deleted or its user locked; APIKey itself is revoked by setting another.
func (b *Backlog) RevokeAPIKey(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.keys, key)
}

// user is the user of an API key, false when Backlog would refuse it.
func (b *Backlog) user(key string) (int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if key != "" && key == b.APIKey {
		return b.UserID, true
	}
	id, ok := b.keys[key]
	return id, ok
}

// Rate-limit request types (https://developer.nulab.com/docs/backlog/rate-limit/).
const (
	rateRead   = "read"
	rateUpdate = "update"
	rateSearch = "search"
)

type rateWindowKey struct {
	user int64
	kind string
}

type rateWindow struct {
	start time.Time
	count int
}

// Issue returns one issue by key.
func (b *Backlog) Issue(key string) (BacklogIssue, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	is, ok := b.issues[key]
	if !ok {
		return BacklogIssue{}, false
	}
	return copyIssue(is), true
}

// PersonUpdates changes an issue as a person would in the web UI: its
// status and, when not nil, its resolution.
func (b *Backlog) PersonUpdates(key string, statusID int64, resolution *int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if is, ok := b.issues[key]; ok {
		is.StatusID = statusID
		if resolution != nil {
			r := *resolution
			is.Resolution = &r
		}
	}
}

// PersonComments adds a comment to an issue as a person (or a call whose
// answer was lost) would.
func (b *Backlog) PersonComments(key, content string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if is, ok := b.issues[key]; ok {
		is.Comments = append(is.Comments, content)
		is.CommentedAt = append(is.CommentedAt, time.Now())
	}
}

// Backdate sets when an issue was created (get-issue's created), to stand
// for an issue of long ago.
func (b *Backlog) Backdate(key string, created time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if is, ok := b.issues[key]; ok {
		is.Created = created
	}
}

// PersonEditsDescription replaces an issue's description as a person would.
func (b *Backlog) PersonEditsDescription(key, description string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if is, ok := b.issues[key]; ok {
		is.Description = description
	}
}

// PersonDeletes deletes an issue as a person would.
func (b *Backlog) PersonDeletes(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.issues, key)
	for i, k := range b.order {
		if k == key {
			b.order = append(b.order[:i:i], b.order[i+1:]...)
			break
		}
	}
}

func copyIssue(is *BacklogIssue) BacklogIssue {
	c := *is
	c.Comments = append([]string(nil), is.Comments...)
	c.CommentedAt = append([]time.Time(nil), is.CommentedAt...)
	c.Custom = map[string][]string{}
	for k, v := range is.Custom {
		c.Custom[k] = append([]string(nil), v...)
	}
	c.Other = maps.Clone(is.Other)
	if is.Resolution != nil {
		r := *is.Resolution
		c.Resolution = &r
	}
	if is.AssigneeID != nil {
		a := *is.AssigneeID
		c.AssigneeID = &a
	}
	return c
}

// ScriptWrites queues answers for the next writes (POST, PATCH, DELETE)
// only; reads are answered as usual.
func (b *Backlog) ScriptWrites(rs ...BacklogResponse) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writeScript = append(b.writeScript, rs...)
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
		out = append(out, copyIssue(b.issues[k]))
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
		b.calls = append(b.calls, BacklogCall{Method: r.Method, Path: r.URL.Path, Status: w.status, At: time.Now(), Form: r.PostForm})
		b.mu.Unlock()
	}()
	user, ok := b.user(r.URL.Query().Get("apiKey"))
	if !ok {
		backlogErr(w, http.StatusUnauthorized, BacklogAuthenticationError, "Authentication failure.")
		return
	}
	b.mu.Lock()
	if r.Method != http.MethodGet && len(b.writeScript) > 0 {
		b.script = append([]BacklogResponse{b.writeScript[0]}, b.script...)
		b.writeScript = b.writeScript[1:]
	}
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
	// Every answer carries the rate-limit headers of its request type,
	// counted per user (https://developer.nulab.com/docs/backlog/rate-limit/).
	kind, limit := rateRead, b.ReadLimit
	switch {
	case r.Method != http.MethodGet:
		kind, limit = rateUpdate, b.UpdateLimit
	case strings.TrimSuffix(r.URL.Path, "/") == "/api/v2/issues":
		kind, limit = rateSearch, b.SearchLimit
	}
	if limit == 0 {
		limit = 1 << 20
	}
	now := time.Now()
	win := b.windows[rateWindowKey{user, kind}]
	if win == nil {
		win = &rateWindow{}
		b.windows[rateWindowKey{user, kind}] = win
	}
	if now.Sub(win.start) >= b.Window {
		win.start, win.count = now, 0
	}
	reset := win.start.Add(b.Window)
	w.Header().Set("X-RateLimit-Limit", strconv.Itoa(limit))
	w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10))
	if win.count >= limit {
		b.mu.Unlock()
		w.Header().Set("X-RateLimit-Remaining", "0")
		backlogErr(w, http.StatusTooManyRequests, BacklogTooManyRequestsError, "Too many requests.")
		return
	}
	win.count++
	w.Header().Set("X-RateLimit-Remaining", strconv.Itoa(limit-win.count))
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
		// Backlog's API refuses any character outside the Basic
		// Multilingual Plane (4 bytes in UTF-8: emoji, CJK Extension B
		// kanji such as 𠮷), though its web pages take them: 400,
		// code 7, "Incorrect String: %F0..." with the character's first
		// bytes percent-encoded (reported against the API in 2024:
		// https://qiita.com/mizukyf/items/537d18b4cfc7937f3228).
		for _, vs := range r.PostForm {
			for _, v := range vs {
				if i := strings.IndexFunc(v, func(c rune) bool { return c > 0xFFFF }); i >= 0 {
					backlogErr(w, http.StatusBadRequest, BacklogInvalidRequestError, "Incorrect String: "+strings.ToUpper(url.QueryEscape(v[i:i+4]))+"...")
					return
				}
			}
		}
	}
	if role := b.roleType(); r.Method != http.MethodGet && (role == 4 || role == 6 ||
		(role == 3 || role == 5) && !(r.Method == http.MethodPost && (strings.TrimSuffix(r.URL.Path, "/") == "/api/v2/issues" || strings.HasSuffix(r.URL.Path, "/comments")))) {
		backlogErr(w, http.StatusForbidden, BacklogUnauthorizedOperationError, "You do not have permission to perform this operation.")
		return
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
	case r.Method == http.MethodGet && len(parts) == 1 && parts[0] == "space":
		backlogJSON(w, 200, map[string]any{"spaceKey": "EXAMPLE", "name": "Example", "ownerId": b.UserID, "lang": "en",
			"timezone": b.Timezone, "reportSendTime": "08:00:00", "textFormattingRule": b.TextFormattingRule,
			"created": "2008-07-06T15:00:00Z", "updated": "2013-06-18T07:55:37Z"})
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "users" && parts[1] == "myself":
		name := b.UserName
		if name == "" {
			name = "user" + strconv.FormatInt(user, 10)
		}
		backlogJSON(w, 200, map[string]any{"id": user, "userId": name, "name": name, "roleType": b.roleType(), "lang": "en",
			"mailAddress": name + "@example.com"})
	case parts[0] == "projects" && r.Method == http.MethodGet:
		b.serveProject(w, parts[1:])
	case parts[0] == "issues" && len(parts) == 1 && r.Method == http.MethodPost:
		b.createIssue(w, r)
	case parts[0] == "issues" && len(parts) == 1 && r.Method == http.MethodGet:
		b.searchIssues(w, r)
	case parts[0] == "issues" && len(parts) == 2 && r.Method == http.MethodGet:
		b.getIssue(w, parts[1])
	case parts[0] == "issues" && len(parts) == 2 && r.Method == http.MethodPatch:
		b.updateIssue(w, r, parts[1])
	case parts[0] == "issues" && len(parts) == 3 && parts[2] == "comments" && r.Method == http.MethodGet:
		b.listComments(w, r, parts[1])
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
		backlogJSON(w, 200, map[string]any{"id": b.ProjectID, "projectKey": b.ProjectKey, "name": b.ProjectName,
			"chartEnabled": false, "subtaskingEnabled": false, "projectLeaderCanEditProjectLeader": false,
			"textFormattingRule": b.TextFormattingRule, "archived": false, "displayOrder": 0})
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
		list := namedList(b.Statuses)
		for _, it := range list {
			it["projectId"] = b.ProjectID
			it["color"] = "#ed8077"
			it["displayOrder"] = it["id"].(int64) * 1000
		}
		backlogJSON(w, 200, list)
	case "customFields":
		b.mu.Lock()
		fields := append([]BacklogCustomField(nil), b.CustomFields...)
		b.mu.Unlock()
		out := []map[string]any{}
		for _, f := range fields {
			m := map[string]any{"id": f.ID, "typeId": f.TypeID, "name": f.Name, "description": "", "required": f.Required,
				"useIssueType": len(f.ApplicableIssueTypes) > 0, "applicableIssueTypes": nonNil(f.ApplicableIssueTypes), "displayOrder": f.ID}
			switch f.TypeID {
			case BacklogFieldList, BacklogFieldMulti, BacklogFieldCheckbox, BacklogFieldRadio:
				items := []map[string]any{}
				for i, it := range f.Items {
					items = append(items, map[string]any{"id": it.ID, "name": it.Name, "displayOrder": i})
				}
				m["items"] = items
				m["allowAddItem"] = f.AllowAddItem
				if f.TypeID == BacklogFieldCheckbox || f.TypeID == BacklogFieldRadio {
					m["allowInput"] = f.AllowInput
				}
			case BacklogFieldNumeric:
				m["min"], m["max"], m["initialValue"], m["unit"] = f.Min, f.Max, nil, ""
			case BacklogFieldDate:
				// Strings, the instant each bounding day begins in the
				// space's zone, and the initial value setting.
				m["min"], m["max"] = b.dayStart(f.MinDate), b.dayStart(f.MaxDate)
				m["initialValueType"] = 1
				m["initialDate"] = map[string]any{"id": 1, "shift": nil, "date": nil}
			}
			out = append(out, m)
		}
		backlogJSON(w, 200, out)
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

// dayStart is the instant a day (yyyy-MM-dd) begins in the space's time
// zone, as Backlog shows a date field's bound; nil for no day.
func (b *Backlog) dayStart(day string) any {
	if day == "" {
		return nil
	}
	loc, err := time.LoadLocation(b.Timezone)
	if err != nil {
		loc = time.UTC
	}
	t, err := time.ParseInLocation("2006-01-02", day, loc)
	if err != nil {
		return day
	}
	return t.UTC().Format(time.RFC3339)
}

func nonNil(ids []int64) []int64 {
	if ids == nil {
		return []int64{}
	}
	return ids
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

func nameOf(m map[string]int64, id int64) string {
	for k, v := range m {
		if v == id {
			return k
		}
	}
	return ""
}

func (b *Backlog) issueJSON(is *BacklogIssue) map[string]any {
	var res any
	if is.Resolution != nil {
		res = map[string]any{"id": *is.Resolution, "name": nameOf(b.Resolutions, *is.Resolution)}
	}
	return map[string]any{
		"id": is.ID, "projectId": is.ProjectID, "issueKey": is.Key, "keyId": is.ID,
		"summary": is.Summary, "description": is.Description,
		"issueType":  map[string]any{"id": is.IssueTypeID, "name": nameOf(b.IssueTypes, is.IssueTypeID)},
		"priority":   map[string]any{"id": is.PriorityID, "name": nameOf(b.Priorities, is.PriorityID)},
		"status":     map[string]any{"id": is.StatusID, "name": b.StatusName(is.StatusID)},
		"resolution": res,
		"created":    is.Created.UTC().Format(time.RFC3339),
	}
}

func runes(s string) int { return utf8.RuneCountInString(s) }

// customValues checks customField_* parameters as add-issue documents them:
// list, checkbox and radio fields take item ids (multiple and checkbox
// repeated), _otherValue only where the field has the "other" choice,
// numeric a number within min/max, date yyyy-MM-dd, text at most 255
// characters. Required fields applicable to the issue type must be set.
func (b *Backlog) customValues(r *http.Request, issueType int64) (map[string][]string, map[string]string, string) {
	custom, other := map[string][]string{}, map[string]string{}
	b.mu.Lock()
	fields := append([]BacklogCustomField(nil), b.CustomFields...)
	b.mu.Unlock()
	byID := map[string]BacklogCustomField{}
	for _, f := range fields {
		byID[strconv.FormatInt(f.ID, 10)] = f
	}
	for k, vs := range r.PostForm {
		rest, ok := strings.CutPrefix(k, "customField_")
		if !ok {
			continue
		}
		id, isOther := strings.CutSuffix(rest, "_otherValue")
		f, ok := byID[id]
		if !ok {
			return nil, nil, "No such custom field: " + k + "."
		}
		if isOther {
			if !f.AllowInput || (f.TypeID != BacklogFieldCheckbox && f.TypeID != BacklogFieldRadio) {
				return nil, nil, "Custom field " + f.Name + " has no other value."
			}
			other[k] = vs[0]
			continue
		}
		if len(vs) > 1 && f.TypeID != BacklogFieldMulti && f.TypeID != BacklogFieldCheckbox {
			return nil, nil, "Custom field " + f.Name + " takes one value."
		}
		for _, v := range vs {
			switch f.TypeID {
			case BacklogFieldText:
				if runes(v) > BacklogMaxTextField || strings.ContainsAny(v, "\r\n") {
					return nil, nil, "Please input " + f.Name + " within 255 characters in one line."
				}
			case BacklogFieldSentence:
				if runes(v) > BacklogMaxBody {
					return nil, nil, "Custom field " + f.Name + " is too long."
				}
			case BacklogFieldNumeric:
				n, err := strconv.ParseFloat(v, 64)
				if err != nil || math.IsNaN(n) || math.IsInf(n, 0) || strings.ContainsAny(v, "xXnN") {
					return nil, nil, "Please input a number for " + f.Name + "."
				}
				if (f.Min != nil && n < *f.Min) || (f.Max != nil && n > *f.Max) {
					return nil, nil, "Custom field " + f.Name + " is out of range."
				}
			case BacklogFieldDate:
				if _, err := time.Parse("2006-01-02", v); err != nil {
					return nil, nil, "Please input " + f.Name + " as yyyy-MM-dd."
				}
				if (f.MinDate != "" && v < f.MinDate) || (f.MaxDate != "" && v > f.MaxDate) {
					return nil, nil, "Custom field " + f.Name + " is out of range."
				}
			default:
				n, err := strconv.ParseInt(v, 10, 64)
				found := false
				for _, it := range f.Items {
					found = found || (err == nil && it.ID == n)
				}
				if !found {
					return nil, nil, "Please input a valid item id for " + f.Name + "."
				}
			}
		}
		custom[k] = vs
	}
	for _, f := range fields {
		if !f.Required || (len(f.ApplicableIssueTypes) > 0 && !slices.Contains(f.ApplicableIssueTypes, issueType)) {
			continue
		}
		k := "customField_" + strconv.FormatInt(f.ID, 10)
		if len(custom[k]) == 0 && other[k+"_otherValue"] == "" {
			return nil, nil, "Please input " + f.Name + "."
		}
	}
	return custom, other, ""
}

func (b *Backlog) createIssue(w http.ResponseWriter, r *http.Request) {
	bad := func(msg string) { backlogErr(w, http.StatusBadRequest, BacklogInvalidRequestError, msg) }
	pid, ok := formInt(r, "projectId")
	if !ok || pid != b.ProjectID {
		bad("Please input valid projectId.")
		return
	}
	summary := r.PostForm.Get("summary")
	if strings.TrimSpace(summary) == "" {
		bad(subjectLength)
		return
	}
	if runes(summary) > BacklogMaxSummary {
		bad(subjectLength)
		return
	}
	if strings.ContainsAny(summary, "\r\n") {
		bad("Summary must be one line.")
		return
	}
	desc := r.PostForm.Get("description")
	if runes(desc) > BacklogMaxBody {
		bad("The Description must be no longer than 100,000 characters.")
		return
	}
	tid, ok := formInt(r, "issueTypeId")
	if !ok || !hasValue(b.IssueTypes, tid) {
		bad("Please input valid issueTypeId.")
		return
	}
	prio, ok := formInt(r, "priorityId")
	if !ok || !hasValue(b.Priorities, prio) {
		bad("Please input valid priorityId.")
		return
	}
	custom, other, msg := b.customValues(r, tid)
	if msg != "" {
		bad(msg)
		return
	}
	is := &BacklogIssue{ProjectID: pid, Summary: summary, Description: desc, IssueTypeID: tid, PriorityID: prio, StatusID: 1, Custom: custom, Other: other, Created: time.Now()}
	if a, ok := formInt(r, "assigneeId"); ok {
		if !hasValue(b.Users, a) {
			bad("Please input valid assigneeId.")
			return
		}
		is.AssigneeID = &a
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

// issueOr404 is the issue key names, or Backlog's 404 for an issue that
// does not exist (written to w). The caller holds b.mu.
func (b *Backlog) issueOr404(w http.ResponseWriter, key string) (*BacklogIssue, bool) {
	is, ok := b.issues[key]
	if !ok {
		backlogErr(w, http.StatusNotFound, BacklogNoResourceError, "No issue.")
	}
	return is, ok
}

func (b *Backlog) getIssue(w http.ResponseWriter, key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	is, ok := b.issueOr404(w, key)
	if !ok {
		return
	}
	backlogJSON(w, http.StatusOK, b.issueJSON(is))
}

func (b *Backlog) updateIssue(w http.ResponseWriter, r *http.Request, key string) {
	bad := func(msg string) { backlogErr(w, http.StatusBadRequest, BacklogInvalidRequestError, msg) }
	b.mu.Lock()
	defer b.mu.Unlock()
	is, ok := b.issueOr404(w, key)
	if !ok {
		return
	}
	next := *is
	for _, f := range []struct {
		name  string
		valid map[string]int64
		set   func(int64)
	}{
		{"statusId", b.Statuses, func(id int64) { next.StatusID = id }},
		{"resolutionId", b.Resolutions, func(id int64) { next.Resolution = &id }},
		{"priorityId", b.Priorities, func(id int64) { next.PriorityID = id }},
	} {
		if _, set := r.PostForm[f.name]; !set {
			continue
		}
		id, err := strconv.ParseInt(r.PostForm.Get(f.name), 10, 64)
		if err != nil || !hasValue(f.valid, id) {
			bad("Please input valid " + f.name + ".")
			return
		}
		f.set(id)
	}
	if v, set := r.PostForm["summary"]; set {
		if strings.TrimSpace(v[0]) == "" || runes(v[0]) > BacklogMaxSummary || strings.ContainsAny(v[0], "\r\n") {
			bad(subjectLength)
			return
		}
		next.Summary = v[0]
	}
	if v, set := r.PostForm["description"]; set {
		if runes(v[0]) > BacklogMaxBody {
			bad("The Description must be no longer than 100,000 characters.")
			return
		}
		next.Description = v[0]
	}
	c := r.PostForm.Get("comment")
	if runes(c) > BacklogMaxComment {
		bad("The Comment must be no longer than 50,000.")
		return
	}
	if c != "" {
		next.Comments = append(next.Comments, c)
		next.CommentedAt = append(next.CommentedAt, time.Now())
	}
	*is = next
	backlogJSON(w, http.StatusOK, b.issueJSON(is))
}

func (b *Backlog) addComment(w http.ResponseWriter, r *http.Request, key string) {
	content := r.PostForm.Get("content")
	b.mu.Lock()
	defer b.mu.Unlock()
	is, ok := b.issueOr404(w, key)
	if !ok {
		return
	}
	if strings.TrimSpace(content) == "" {
		backlogErr(w, http.StatusBadRequest, BacklogInvalidRequestError, "Please input content.")
		return
	}
	if runes(content) > BacklogMaxComment {
		backlogErr(w, http.StatusBadRequest, BacklogInvalidRequestError, "The Comment must be no longer than 50,000.")
		return
	}
	is.Comments = append(is.Comments, content)
	is.CommentedAt = append(is.CommentedAt, time.Now())
	backlogJSON(w, http.StatusCreated, map[string]any{"id": len(is.Comments), "content": content, "created": time.Now().UTC().Format(time.RFC3339)})
}

// countParam is a list's count parameter as Backlog takes it: 1–100,
// default 20.
func countParam(q url.Values) int {
	if c, err := strconv.Atoi(q.Get("count")); err == nil && c >= 1 && c <= 100 {
		return c
	}
	return 20
}

// listComments is get-comment-list
// (https://developer.nulab.com/docs/backlog/api/2/get-comment-list/): the
// newest first by default (order=desc), at most count (1–100, default 20).
func (b *Backlog) listComments(w http.ResponseWriter, r *http.Request, key string) {
	q := r.URL.Query()
	count := countParam(q)
	b.mu.Lock()
	defer b.mu.Unlock()
	is, ok := b.issueOr404(w, key)
	if !ok {
		return
	}
	out := []map[string]any{}
	for i := range is.Comments {
		j := len(is.Comments) - 1 - i
		if q.Get("order") == "asc" {
			j = i
		}
		if len(out) == count {
			break
		}
		c := map[string]any{"id": j + 1, "content": is.Comments[j]}
		if j < len(is.CommentedAt) {
			c["created"] = is.CommentedAt[j].UTC().Format(time.RFC3339)
		}
		out = append(out, c)
	}
	backlogJSON(w, http.StatusOK, out)
}

// searchIssues is get-issue-list
// (https://developer.nulab.com/docs/backlog/api/2/get-issue-list/), newest
// first: projectId[], keyword (behind SearchLag, as Backlog's search
// index), count (1–100, default 20) and offset (the matches skipped).
func (b *Backlog) searchIssues(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	kw := q.Get("keyword")
	count := countParam(q)
	offset, _ := strconv.Atoi(q.Get("offset"))
	projects := q["projectId[]"]
	b.mu.Lock()
	defer b.mu.Unlock()
	out := []map[string]any{}
	for i := len(b.order) - 1; i >= 0 && len(out) < count; i-- {
		is := b.issues[b.order[i]]
		if len(projects) > 0 && !containsID(projects, is.ProjectID) {
			continue
		}
		if kw != "" && (!strings.Contains(is.Summary, kw) && !strings.Contains(is.Description, kw) || time.Since(is.Created) < b.SearchLag) {
			continue
		}
		if offset > 0 {
			offset--
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
