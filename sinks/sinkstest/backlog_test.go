package sinkstest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/alertfan/alertfan/sinks/sinkstest"
)

const key = "fake-key"

func call(t *testing.T, b *sinkstest.Backlog, method, path string, form url.Values) (int, http.Header, any) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.URL+path+"?apiKey="+key, body)
	require.NoError(t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return resp.StatusCode, resp.Header, out
}

// errorMessage checks Backlog's error shape
// {"errors":[{"message":…,"code":…,"moreInfo":…}]} and returns the message.
func errorMessage(t *testing.T, v any) string {
	t.Helper()
	m, ok := v.(map[string]any)
	require.True(t, ok, "%v", v)
	errs, ok := m["errors"].([]any)
	require.True(t, ok, "%v", v)
	require.Len(t, errs, 1)
	e := errs[0].(map[string]any)
	require.Contains(t, e, "code")
	require.Contains(t, e, "moreInfo")
	return e["message"].(string)
}

// The fake answers as the Backlog API v2 reference documents: these rows
// are the reference's own examples and rules.
func TestFakeBacklogFollowsTheDocs(t *testing.T) {
	en := sinkstest.NewBacklog(key)
	defer en.Close()
	ja := sinkstest.NewBacklogJa(key)
	defer ja.Close()
	en.AllFieldTypes(false)

	// get-project: textFormattingRule.
	_, _, p := call(t, en, http.MethodGet, "/api/v2/projects/OPS", nil)
	require.Equal(t, "markdown", p.(map[string]any)["textFormattingRule"])
	_, _, p = call(t, ja, http.MethodGet, "/api/v2/projects/OPS", nil)
	require.Equal(t, "backlog", p.(map[string]any)["textFormattingRule"])

	// Localized names, fixed ids.
	_, _, prios := call(t, ja, http.MethodGet, "/api/v2/priorities", nil)
	require.Equal(t, []any{map[string]any{"id": 2.0, "name": "高"}, map[string]any{"id": 3.0, "name": "中"}, map[string]any{"id": 4.0, "name": "低"}}, prios)
	_, _, res := call(t, en, http.MethodGet, "/api/v2/resolutions", nil)
	require.Equal(t, map[string]any{"id": 0.0, "name": "Fixed"}, res.([]any)[0])
	_, _, st := call(t, ja, http.MethodGet, "/api/v2/projects/OPS/statuses", nil)
	require.Equal(t, "未対応", st.([]any)[0].(map[string]any)["name"])

	// get-custom-field-list: typeId, items, allowAddItem / allowInput.
	_, _, cfs := call(t, en, http.MethodGet, "/api/v2/projects/OPS/customFields", nil)
	byName := map[string]map[string]any{}
	for _, f := range cfs.([]any) {
		byName[f.(map[string]any)["name"].(string)] = f.(map[string]any)
	}
	require.Equal(t, 5.0, byName["Environment"]["typeId"])
	require.Len(t, byName["Environment"]["items"], 2)
	require.Equal(t, true, byName["Impact"]["allowInput"])
	require.NotContains(t, byName["Note"], "items")
	// Numeric bounds are numbers; date bounds are strings, the instant the
	// day begins in the space's zone (backlog4j's custom_fields.json:
	// "min":"2014-06-09T15:00:00Z"), with initialValueType and initialDate.
	require.Equal(t, 0.0, byName["Cost"]["min"])
	require.Equal(t, 1000.0, byName["Cost"]["max"])
	require.Contains(t, byName["Cost"], "unit")
	require.Equal(t, "2020-01-01T00:00:00Z", byName["Due"]["min"])
	require.Equal(t, "2099-12-31T00:00:00Z", byName["Due"]["max"])
	require.Contains(t, byName["Due"], "initialValueType")
	require.Contains(t, byName["Due"], "initialDate")
	ja.AllFieldTypes(true)
	_, _, jcfs := call(t, ja, http.MethodGet, "/api/v2/projects/OPS/customFields", nil)
	for _, f := range jcfs.([]any) {
		if f := f.(map[string]any); f["name"] == "期限" {
			require.Equal(t, "2019-12-31T15:00:00Z", f["min"], "midnight in Asia/Tokyo")
		}
	}
	_, _, space := call(t, ja, http.MethodGet, "/api/v2/space", nil)
	require.Equal(t, "Asia/Tokyo", space.(map[string]any)["timezone"])
	_, _, me := call(t, en, http.MethodGet, "/api/v2/users/myself", nil)
	require.Equal(t, 4001.0, me.(map[string]any)["id"])

	base := url.Values{"projectId": {"1001"}, "summary": {"s"}, "issueTypeId": {"2001"}, "priorityId": {"3"}}
	with := func(kv ...string) url.Values {
		f := url.Values{}
		for k, v := range base {
			f[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			f.Add(kv[i], kv[i+1])
		}
		return f
	}
	cases := []struct {
		name string
		form url.Values
		code int
		msg  string
	}{
		{"minimal issue", with(), 201, ""},
		{"summary of 255 characters", url.Values{"projectId": {"1001"}, "summary": {strings.Repeat("あ", 255)}, "issueTypeId": {"2001"}, "priorityId": {"3"}}, 201, ""},
		{"summary of 256 characters", url.Values{"projectId": {"1001"}, "summary": {strings.Repeat("あ", 256)}, "issueTypeId": {"2001"}, "priorityId": {"3"}}, 400, "no longer than 255"},
		{"empty summary", url.Values{"projectId": {"1001"}, "summary": {" "}, "issueTypeId": {"2001"}, "priorityId": {"3"}}, 400, "no shorter than 1"},
		{"emoji in the summary", url.Values{"projectId": {"1001"}, "summary": {"🔥 CPU"}, "issueTypeId": {"2001"}, "priorityId": {"3"}}, 400, "Incorrect String: %F0%9F%94%A5"},
		{"CJK Extension B kanji in a custom field", with("customField_3101", "𠮷野家"), 400, "Incorrect String: %F0"},
		{"3-byte characters are fine", with("customField_3101", "吉野家 ✓ ①"), 201, ""},
		{"priority 1 does not exist", url.Values{"projectId": {"1001"}, "summary": {"s"}, "issueTypeId": {"2001"}, "priorityId": {"1"}}, 400, "priorityId"},
		{"list by item id", with("customField_3105", "5001"), 201, ""},
		{"list by name is refused", with("customField_3105", "prod"), 400, "valid item id"},
		{"multiple list repeated", with("customField_3106", "5011", "customField_3106", "5012"), 201, ""},
		{"single list repeated", with("customField_3105", "5001", "customField_3105", "5002"), 400, "one value"},
		{"checkbox other", with("customField_3107", "5021", "customField_3107_otherValue", "partners"), 201, ""},
		{"list has no other", with("customField_3105_otherValue", "dev"), 400, "no other value"},
		{"numeric", with("customField_3103", "12.5"), 201, ""},
		{"numeric out of range", with("customField_3103", "1001"), 400, "out of range"},
		{"date", with("customField_3104", "2026-11-29"), 201, ""},
		{"date in another form", with("customField_3104", "2026/11/29"), 400, "yyyy-MM-dd"},
		{"date before min", with("customField_3104", "2019-12-31"), 400, "out of range"},
		{"date after max", with("customField_3104", "2100-01-01"), 400, "out of range"},
		{"date on max", with("customField_3104", "2099-12-31"), 201, ""},
		{"text too long", with("customField_3101", strings.Repeat("x", 256)), 400, "255"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, out := call(t, en, http.MethodPost, "/api/v2/issues", c.form)
			require.Equal(t, c.code, code, "%v", out)
			if c.msg != "" {
				require.Contains(t, errorMessage(t, out), c.msg)
			}
		})
	}

	// update-issue: resolutionId 0 (Fixed) is a value, not "unset"; and
	// get-issue shows it.
	code, _, _ := call(t, en, http.MethodPatch, "/api/v2/issues/OPS-1", url.Values{"statusId": {"4"}, "resolutionId": {"0"}})
	require.Equal(t, 200, code)
	_, _, is := call(t, en, http.MethodGet, "/api/v2/issues/OPS-1", nil)
	require.Equal(t, map[string]any{"id": 0.0, "name": "Fixed"}, is.(map[string]any)["resolution"])
	_, _, is = call(t, en, http.MethodGet, "/api/v2/issues/OPS-2", nil)
	require.Nil(t, is.(map[string]any)["resolution"])
	code, _, out := call(t, en, http.MethodGet, "/api/v2/issues/OPS-999", nil)
	require.Equal(t, 404, code)
	require.Equal(t, "No issue.", errorMessage(t, out))

	// Rate-limit headers on every answer; 429 with code 13 above the limit.
	en.UpdateLimit = 1
	_, h, _ := call(t, en, http.MethodGet, "/api/v2/priorities", nil)
	require.NotEmpty(t, h.Get("X-RateLimit-Limit"))
	require.NotEmpty(t, h.Get("X-RateLimit-Remaining"))
	require.NotEmpty(t, h.Get("X-RateLimit-Reset"))
	for {
		code, h, out = call(t, en, http.MethodPost, "/api/v2/issues", with())
		if code == 429 {
			break
		}
	}
	require.Equal(t, "0", h.Get("X-RateLimit-Remaining"))
	require.Equal(t, 13.0, out.(map[string]any)["errors"].([]any)[0].(map[string]any)["code"])
}

// Backlog counts its limits per user, whichever of the user's API keys a
// call uses, and per request type (Read, Update, Search); every answer
// carries that type's X-RateLimit-* headers
// (https://developer.nulab.com/docs/backlog/rate-limit/).
func TestFakeBacklogRateLimitsPerUser(t *testing.T) {
	b := sinkstest.NewBacklog(key)
	defer b.Close()
	b.AddAPIKey("same-user-key", 4001)
	b.AddAPIKey("other-user-key", 4002)
	b.UpdateLimit, b.ReadLimit, b.SearchLimit = 2, 3, 1
	form := url.Values{"projectId": {"1001"}, "summary": {"s"}, "issueTypeId": {"2001"}, "priorityId": {"3"}}
	as := func(k, method, path string, form url.Values) (int, http.Header) {
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequest(method, b.URL+path+"?apiKey="+k, body)
		require.NoError(t, err)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}
	cases := []struct {
		name, key, method, path string
		form                    url.Values
		code                    int
		limit, remaining        string
	}{
		{"update by key 1", key, http.MethodPost, "/api/v2/issues", form, 201, "2", "1"},
		{"update by key 2 of the same user", "same-user-key", http.MethodPost, "/api/v2/issues", form, 201, "2", "0"},
		{"the user's updates are spent", key, http.MethodPost, "/api/v2/issues", form, 429, "2", "0"},
		{"and by the other key too", "same-user-key", http.MethodPatch, "/api/v2/issues/OPS-1", url.Values{"statusId": {"2"}}, 429, "2", "0"},
		{"another user has its own", "other-user-key", http.MethodPost, "/api/v2/issues", form, 201, "2", "1"},
		{"reads are counted apart", key, http.MethodGet, "/api/v2/priorities", nil, 200, "3", "2"},
		{"search is counted apart", key, http.MethodGet, "/api/v2/issues", nil, 200, "1", "0"},
		{"search spent", "same-user-key", http.MethodGet, "/api/v2/issues", nil, 429, "1", "0"},
		{"reads still there", "same-user-key", http.MethodGet, "/api/v2/issues/OPS-1", nil, 200, "3", "1"},
		{"an error answer carries them too", key, http.MethodGet, "/api/v2/issues/OPS-999", nil, 404, "3", "0"},
	}
	for _, c := range cases {
		code, h := as(c.key, c.method, c.path, c.form)
		require.Equal(t, c.code, code, c.name)
		require.Equal(t, c.limit, h.Get("X-RateLimit-Limit"), c.name)
		require.Equal(t, c.remaining, h.Get("X-RateLimit-Remaining"), c.name)
		require.NotEmpty(t, h.Get("X-RateLimit-Reset"), c.name)
	}
	b.RevokeAPIKey("same-user-key")
	code, _ := as("same-user-key", http.MethodGet, "/api/v2/priorities", nil)
	require.Equal(t, http.StatusUnauthorized, code)
}
