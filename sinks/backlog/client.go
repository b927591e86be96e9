package backlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/alertfan/alertfan/sinks"
)

// Why not a library: github.com/griffin-stewie/go-backlog (2018) cannot
// create issues or comments and drops HTTP errors; kenzo0107/backlog has
// been seen to take a 500 with "{}" for success, panic on a 429 without
// moreInfo, lose the status code and put the API key in error text. The
// dozen calls alertfan needs are small enough to own, with typed errors.

// APIError is a non-2xx answer of the Backlog API.
type APIError struct {
	Method     string
	Endpoint   string // path template, e.g. /api/v2/issues/:key
	StatusCode int
	Errors     []APIErrorItem
	RetryAfter time.Duration
}

// APIErrorItem is one entry of Backlog's {"errors":[…]} body.
type APIErrorItem struct {
	Message  string `json:"message"`
	Code     int    `json:"code"`
	MoreInfo string `json:"moreInfo"`
}

func (e *APIError) Error() string {
	msgs := make([]string, 0, len(e.Errors))
	for _, it := range e.Errors {
		m := fmt.Sprintf("%s (code %d)", it.Message, it.Code)
		if it.MoreInfo != "" {
			m += ": " + it.MoreInfo
		}
		msgs = append(msgs, m)
	}
	if len(msgs) == 0 {
		msgs = append(msgs, http.StatusText(e.StatusCode))
	}
	return fmt.Sprintf("backlog %s %s: %d: %s", e.Method, e.Endpoint, e.StatusCode, strings.Join(msgs, "; "))
}

// Client calls the Backlog API v2 with an API key. The key travels as the
// apiKey query parameter, as Backlog documents, and is kept out of every
// error and log line.
type Client struct {
	base   string
	apiKey string
	http   *http.Client
	// timeout bounds each call through its context (0: none), not through
	// http.Client.Timeout, which starts two goroutines and a timer per
	// request (net/http's setRequestCancel).
	timeout time.Duration
	observe func(endpoint string, code int)
	// exhausted, when set, is told how long until Backlog's update window
	// resets when a write succeeded with X-RateLimit-Remaining: 0: the
	// user's budget is spent (by alertfan or any other tool of the same
	// user), and the next write would get 429.
	exhausted func(wait time.Duration)
}

// NewClient returns a client for a space's root URL.
func NewClient(base, apiKey string, rt http.RoundTripper, timeout time.Duration, observe func(endpoint string, code int)) *Client {
	if rt == nil {
		rt = http.DefaultTransport
	}
	if observe == nil {
		observe = func(string, int) {}
	}
	return &Client{base: strings.TrimSuffix(base, "/"), apiKey: apiKey, http: &http.Client{Transport: rt}, timeout: timeout, observe: observe}
}

// unanswered is a call that got no whole answer (err, as the HTTP client
// returned it; msg, what to report): a timeout — before the answer or
// while it trickled in — or another network failure, both retryable.
func unanswered(err, msg error) error {
	if sinks.IsTimeout(err) {
		return sinks.Retryable(sinks.ReasonTimeout, 0, msg)
	}
	return sinks.Retryable(sinks.ReasonNetwork, 0, msg)
}

// do sends one request. endpoint is the path template used in errors and
// metrics; path is the real path. form, if not nil, is sent
// x-www-form-urlencoded.
func (c *Client) do(ctx context.Context, method, endpoint, path string, query, form url.Values, out any) error {
	ctx, cancel := sinks.WithTimeout(ctx, c.timeout)
	defer cancel()
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	q.Set("apiKey", c.apiKey)
	var body io.Reader
	if form != nil {
		for k, vs := range form {
			for i, v := range vs {
				form[k][i] = apiSafe(v)
			}
		}
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path+"?"+q.Encode(), body)
	if err != nil {
		return sinks.Permanent(sinks.ReasonConfig, fmt.Errorf("backlog %s %s: build request: %s", method, endpoint, c.scrub(err.Error())))
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "alertfan")
	resp, err := c.http.Do(req)
	if err != nil {
		c.observe(endpoint, 0)
		// *url.Error carries the full URL, API key included: keep only the
		// cause, scrubbed.
		var ue *url.Error
		cause := err
		if errors.As(err, &ue) {
			cause = ue.Err
		}
		return unanswered(err, fmt.Errorf("backlog %s %s: %s", method, endpoint, c.scrub(cause.Error())))
	}
	defer resp.Body.Close()
	c.observe(endpoint, resp.StatusCode)
	sinks.CallFrom(ctx).StatusCode = resp.StatusCode
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return unanswered(err, fmt.Errorf("backlog %s %s: read answer: %s", method, endpoint, c.scrub(err.Error())))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := &APIError{Method: method, Endpoint: endpoint, StatusCode: resp.StatusCode, RetryAfter: retryAfter(resp.Header, time.Now())}
		var eb struct {
			Errors []APIErrorItem `json:"errors"`
		}
		if json.Unmarshal(b, &eb) == nil {
			ae.Errors = eb.Errors
		}
		for i := range ae.Errors {
			ae.Errors[i].Message = c.scrub(ae.Errors[i].Message)
			ae.Errors[i].MoreInfo = c.scrub(ae.Errors[i].MoreInfo)
		}
		if ae.TargetWide() {
			// Every call of this key fails the same way until a person
			// fixes the key or the user: hold the target's work as for a
			// target that is down, do not dead-letter each alert.
			return &sinks.Error{Reason: sinks.ReasonUnauthorized, Retryable: true, StatusCode: resp.StatusCode, Err: ae}
		}
		return sinks.StatusError(resp.StatusCode, ae.RetryAfter, ae)
	}
	if method != http.MethodGet && c.exhausted != nil && resp.Header.Get("X-RateLimit-Remaining") == "0" {
		// Only a write's headers speak of the update budget that
		// rate_limit_per_minute paces; a GET's are the read or search
		// budget's (https://developer.nulab.com/docs/backlog/rate-limit/).
		if d := retryAfter(resp.Header, time.Now()); d > 0 {
			c.exhausted(d)
		}
	}
	if out == nil {
		return nil
	}
	// A 2xx whose body is not what the endpoint documents is not success:
	// taking "{}" for a created issue would lose the alert.
	if err := json.Unmarshal(b, out); err != nil {
		return sinks.Retryable(sinks.ReasonUnexpectedReply, 0, fmt.Errorf("backlog %s %s: %d with an unreadable body: %v", method, endpoint, resp.StatusCode, err))
	}
	return nil
}

// Backlog error codes
// (https://developer.nulab.com/docs/backlog/error-response/).
const (
	codeLicenceExpired        = 3  // LicenceExpiredError: the space's plan expired
	codeAccessDenied          = 4  // AccessDeniedError: e.g. the space's IP address restriction
	codeUnauthorizedOperation = 5  // UnauthorizedOperationError: the user may not do this
	codeAuthentication        = 11 // AuthenticationError: key revoked, user removed or locked
	codeRequiredMFA           = 12 // RequiredMFAError: the space requires 2FA the user lacks
)

// TargetWide reports whether the answer refuses alertfan's credentials
// for every call to the space or project, rather than this one request:
//   - 401, whatever its code (11 AuthenticationError: the key was revoked
//     or its user removed or locked; 12 RequiredMFAError);
//   - 403 with code 3 (the licence expired), 4 (access denied, e.g. the
//     space's IP restriction) or 12;
//   - 403 with code 5 (UnauthorizedOperationError) on a call that is not
//     about one issue (add-issue, the project's lists, search): the user
//     may not add issues to, or read, the project at all. On one issue
//     (/api/v2/issues/:key…) it may be that issue's alone, and stays a
//     permanent failure of that delivery.
func (e *APIError) TargetWide() bool {
	switch e.StatusCode {
	case http.StatusUnauthorized:
		return true
	case http.StatusForbidden:
		for _, it := range e.Errors {
			switch it.Code {
			case codeLicenceExpired, codeAccessDenied, codeAuthentication, codeRequiredMFA:
				return true
			case codeUnauthorizedOperation:
				if !strings.HasPrefix(e.Endpoint, "/api/v2/issues/:key") {
					return true
				}
			}
		}
	}
	return false
}

func (c *Client) scrub(s string) string { return sinks.Scrub(s, c.apiKey) }

// maxResetWait bounds a wait read from X-RateLimit-Reset: Backlog's
// windows are a minute long (https://developer.nulab.com/docs/backlog/rate-limit/),
// so a longer one is a clock or a header gone wrong, and the hold it makes
// is shared by every replica.
const maxResetWait = 2 * time.Minute

// retryAfter reads Retry-After, else Backlog's X-RateLimit-Reset (epoch
// seconds when the window resets). The reset is measured against the
// answer's own Date, not this machine's clock: a replica whose clock is
// off would otherwise hold the key for everyone far too long, or not at
// all.
func retryAfter(h http.Header, now time.Time) time.Duration {
	if d := sinks.ParseRetryAfter(h, now); d > 0 {
		return d
	}
	if v := h.Get("X-RateLimit-Reset"); v != "" {
		if sec, err := strconv.ParseInt(v, 10, 64); err == nil {
			ref, slack := now, time.Second // reset has whole seconds
			if date, err := http.ParseTime(h.Get("Date")); err == nil {
				ref, slack = date, 100*time.Millisecond
			}
			if d := time.Unix(sec, 0).Sub(ref); d > 0 {
				return min(d+slack, maxResetWait)
			}
		}
	}
	return 0
}

// Named is any Backlog entity with an id and a name.
type Named struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// Project is the part of a project alertfan uses
// (https://developer.nulab.com/docs/backlog/api/2/get-project/).
type Project struct {
	ID         int64  `json:"id"`
	ProjectKey string `json:"projectKey"`
	Name       string `json:"name"`
	// TextFormattingRule is "markdown" or "backlog" (Backlog notation).
	TextFormattingRule string `json:"textFormattingRule"`
}

// CustomField is one entry of get-custom-field-list
// (https://developer.nulab.com/docs/backlog/api/2/get-custom-field-list/).
type CustomField struct {
	ID                   int64   `json:"id"`
	TypeID               int     `json:"typeId"`
	Name                 string  `json:"name"`
	Required             bool    `json:"required"`
	UseIssueType         bool    `json:"useIssueType"`
	ApplicableIssueTypes []int64 `json:"applicableIssueTypes"`
	Items                []Named `json:"items"`
	AllowAddItem         bool    `json:"allowAddItem"`
	// AllowInput is the "other" free-text choice of checkbox and radio
	// fields, sent as customField_{id}_otherValue.
	AllowInput bool `json:"allowInput"`
	// Min and Max bound numeric fields (typeId 3: numbers) and date
	// fields (typeId 4: instants such as "2014-06-09T15:00:00Z", the
	// first moment of the bounding day in the space's time zone).
	Min Bound `json:"min"`
	Max Bound `json:"max"`
}

// Bound is a custom field's min or max as get-custom-field-list returns
// it (https://developer.nulab.com/docs/backlog/api/2/get-custom-field-list/;
// nulab/backlog4j NumericCustomFieldSetting: BigDecimal,
// DateCustomFieldSetting: a date string): a JSON number, a string, or
// null/absent for no bound. A value of a shape alertfan does not know is
// kept as no bound: one field's setting must never stop the whole list
// (and with it every delivery) from decoding.
type Bound struct {
	// Num is set for a number (or a string holding a decimal number).
	Num *float64
	// Time is set for a date or date-time string.
	Time *time.Time
	// dateOnly: the string was a day (yyyy-MM-dd), not an instant.
	dateOnly bool
}

// UnmarshalJSON reads a number, a string or null.
func (b *Bound) UnmarshalJSON(data []byte) error {
	*b = Bound{}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil //nolint:nilerr // an unreadable bound is no bound, see Bound
	}
	switch v := v.(type) {
	case float64:
		b.Num = &v
	case string:
		v = strings.TrimSpace(v)
		for _, l := range []string{time.RFC3339Nano, "2006-01-02T15:04:05Z0700", dayLayout} {
			if t, err := time.Parse(l, v); err == nil {
				b.Time, b.dateOnly = &t, l == dayLayout
				return nil
			}
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil && decimalNumber.MatchString(v) {
			b.Num = &f
		}
	}
	return nil
}

// NumBound is a numeric bound.
func NumBound(f float64) Bound { return Bound{Num: &f} }

// TimeBound is a date bound.
func TimeBound(t time.Time) Bound { return Bound{Time: &t} }

// User is a project member.
type User struct {
	ID     int64  `json:"id"`
	UserID string `json:"userId"`
	Name   string `json:"name"`
	// RoleType is the user's role in the space (get-own-user), one of the
	// Role* constants; 0 when Backlog did not say.
	RoleType int `json:"roleType"`
}

// Backlog's user roles (roleType), and what each may do to issues
// (https://backlogtool.com/guide/en/others/others5.html): a Reporter
// "can view and add issues as well as post comments. Changing the status
// of an issue is not permitted", and may not edit issues (update-issue,
// which alertfan's comments, closes and reopens go through); a Viewer
// "can view issues. Adding and editing issues are not permitted".
const (
	RoleAdministrator = 1
	RoleNormalUser    = 2
	RoleReporter      = 3
	RoleViewer        = 4
	RoleGuestReporter = 5
	RoleGuestViewer   = 6
)

// Issue is the part of an issue alertfan uses.
type Issue struct {
	ID          int64  `json:"id"`
	IssueKey    string `json:"issueKey"`
	Summary     string `json:"summary"`
	Description string `json:"description"`
	Status      Named  `json:"status"`
	// Resolution is nil when unset; "Fixed" is id 0.
	Resolution *Named `json:"resolution"`
	// Created is when the issue was created, as Backlog writes it
	// (RFC 3339, "2013-08-05T06:15:06Z"); kept as text so that a form
	// alertfan does not expect never fails the whole answer (CreatedAt).
	Created string `json:"created"`
}

// CreatedAt is Created as a time, zero when absent or not RFC 3339.
func (is *Issue) CreatedAt() time.Time { return backlogTime(is.Created) }

// backlogTime reads a time as Backlog writes it (RFC 3339), zero when
// absent or in another form.
func backlogTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// GetProject returns a project by key.
func (c *Client) GetProject(ctx context.Context, key string) (*Project, error) {
	var p Project
	err := c.do(ctx, http.MethodGet, "/api/v2/projects/:key", "/api/v2/projects/"+url.PathEscape(key), nil, nil, &p)
	if err == nil && p.ID == 0 {
		return nil, sinks.Retryable(sinks.ReasonUnexpectedReply, 0, errors.New("backlog GET /api/v2/projects/:key: answer has no project id"))
	}
	return &p, err
}

func (c *Client) list(ctx context.Context, endpoint, path string) ([]Named, error) {
	var out []Named
	return out, c.do(ctx, http.MethodGet, endpoint, path, nil, nil, &out)
}

// IssueTypes lists a project's issue types.
func (c *Client) IssueTypes(ctx context.Context, key string) ([]Named, error) {
	return c.list(ctx, "/api/v2/projects/:key/issueTypes", "/api/v2/projects/"+url.PathEscape(key)+"/issueTypes")
}

// Statuses lists a project's statuses.
func (c *Client) Statuses(ctx context.Context, key string) ([]Named, error) {
	return c.list(ctx, "/api/v2/projects/:key/statuses", "/api/v2/projects/"+url.PathEscape(key)+"/statuses")
}

// CustomFields lists a project's custom fields with their types and items.
func (c *Client) CustomFields(ctx context.Context, key string) ([]CustomField, error) {
	var out []CustomField
	return out, c.do(ctx, http.MethodGet, "/api/v2/projects/:key/customFields", "/api/v2/projects/"+url.PathEscape(key)+"/customFields", nil, nil, &out)
}

// GetIssue reads an issue's current state
// (https://developer.nulab.com/docs/backlog/api/2/get-issue/).
func (c *Client) GetIssue(ctx context.Context, key string) (*Issue, error) {
	var is Issue
	if err := c.do(ctx, http.MethodGet, "/api/v2/issues/:key", "/api/v2/issues/"+url.PathEscape(key), nil, nil, &is); err != nil {
		return nil, err
	}
	if is.IssueKey == "" {
		return nil, sinks.Retryable(sinks.ReasonUnexpectedReply, 0, errors.New("backlog GET /api/v2/issues/:key: answer has no issueKey"))
	}
	return &is, nil
}

// Myself returns the user the API key belongs to
// (https://developer.nulab.com/docs/backlog/api/2/get-own-user/):
// Backlog counts its rate limits per user, not per key.
func (c *Client) Myself(ctx context.Context) (*User, error) {
	var u User
	if err := c.do(ctx, http.MethodGet, "/api/v2/users/myself", "/api/v2/users/myself", nil, nil, &u); err != nil {
		return nil, err
	}
	if u.ID == 0 {
		return nil, sinks.Retryable(sinks.ReasonUnexpectedReply, 0, errors.New("backlog GET /api/v2/users/myself: answer has no user id"))
	}
	return &u, nil
}

// Space is the part of the space alertfan uses
// (https://developer.nulab.com/docs/backlog/api/2/get-space/).
type Space struct {
	SpaceKey string `json:"spaceKey"`
	// Timezone is an IANA name, e.g. "Asia/Tokyo".
	Timezone string `json:"timezone"`
}

// GetSpace returns the space's settings.
func (c *Client) GetSpace(ctx context.Context) (*Space, error) {
	var sp Space
	return &sp, c.do(ctx, http.MethodGet, "/api/v2/space", "/api/v2/space", nil, nil, &sp)
}

// Priorities lists the space's priorities.
func (c *Client) Priorities(ctx context.Context) ([]Named, error) {
	return c.list(ctx, "/api/v2/priorities", "/api/v2/priorities")
}

// Resolutions lists the space's resolutions.
func (c *Client) Resolutions(ctx context.Context) ([]Named, error) {
	return c.list(ctx, "/api/v2/resolutions", "/api/v2/resolutions")
}

// Users lists a project's members.
func (c *Client) Users(ctx context.Context, key string) ([]User, error) {
	var out []User
	return out, c.do(ctx, http.MethodGet, "/api/v2/projects/:key/users", "/api/v2/projects/"+url.PathEscape(key)+"/users", nil, nil, &out)
}

// CreateIssue adds an issue; Backlog answers 201 with the issue.
func (c *Client) CreateIssue(ctx context.Context, form url.Values) (*Issue, error) {
	var is Issue
	if err := c.do(ctx, http.MethodPost, "/api/v2/issues", "/api/v2/issues", nil, form, &is); err != nil {
		return nil, err
	}
	if is.IssueKey == "" {
		return nil, sinks.Retryable(sinks.ReasonUnexpectedReply, 0, errors.New("backlog POST /api/v2/issues: answer has no issueKey"))
	}
	return &is, nil
}

// UpdateIssue patches an issue (status, resolution, comment, …).
func (c *Client) UpdateIssue(ctx context.Context, key string, form url.Values) (*Issue, error) {
	var is Issue
	return &is, c.do(ctx, http.MethodPatch, "/api/v2/issues/:key", "/api/v2/issues/"+url.PathEscape(key), nil, form, &is)
}

// Comment is the part of a comment alertfan reads.
type Comment struct {
	Content string `json:"content"`
	// Created is when the comment was made, as Backlog writes it (RFC
	// 3339); see CreatedAt.
	Created string `json:"created"`
}

// CreatedAt is Created as a time, zero when absent or not RFC 3339.
func (c *Comment) CreatedAt() time.Time { return backlogTime(c.Created) }

// RecentComments returns an issue's newest comments, newest first, at
// most count (1–100): get-comment-list
// (https://developer.nulab.com/docs/backlog/api/2/get-comment-list/).
func (c *Client) RecentComments(ctx context.Context, key string, count int) ([]Comment, error) {
	var out []Comment
	q := url.Values{"count": {strconv.Itoa(count)}, "order": {"desc"}}
	return out, c.do(ctx, http.MethodGet, "/api/v2/issues/:key/comments", "/api/v2/issues/"+url.PathEscape(key)+"/comments", q, nil, &out)
}

// AddComment comments on an issue.
func (c *Client) AddComment(ctx context.Context, key, content string) error {
	var out struct {
		ID int64 `json:"id"`
	}
	return c.do(ctx, http.MethodPost, "/api/v2/issues/:key/comments", "/api/v2/issues/"+url.PathEscape(key)+"/comments", nil, url.Values{"content": {content}}, &out)
}

// SearchIssues finds a project's issues by keyword.
func (c *Client) SearchIssues(ctx context.Context, projectID int64, keyword string) ([]Issue, error) {
	q := url.Values{"projectId[]": {strconv.FormatInt(projectID, 10)}, "keyword": {keyword}, "count": {"20"}}
	var out []Issue
	return out, c.do(ctx, http.MethodGet, "/api/v2/issues", "/api/v2/issues", q, nil, &out)
}

// RecentIssues lists a project's newest issues, newest first, at most
// count (1–100) after skipping offset of them: get-issue-list with
// sort=created, order=desc and no keyword
// (https://developer.nulab.com/docs/backlog/api/2/get-issue-list/).
// Unlike a keyword search it does not wait for Backlog's search index, so
// an issue created a moment ago is in it.
func (c *Client) RecentIssues(ctx context.Context, projectID int64, offset, count int) ([]Issue, error) {
	q := url.Values{"projectId[]": {strconv.FormatInt(projectID, 10)}, "sort": {"created"}, "order": {"desc"}, "count": {strconv.Itoa(count)}}
	if offset > 0 {
		q.Set("offset", strconv.Itoa(offset))
	}
	var out []Issue
	return out, c.do(ctx, http.MethodGet, "/api/v2/issues", "/api/v2/issues", q, nil, &out)
}
