package ui

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHandler(t *testing.T) {
	h := Handler()
	cases := []struct {
		name, method, path string
		code               int
		contentType        string
		body               string // a substring of the body, for GET
	}{
		{"page", "GET", "/", 200, "text/html; charset=utf-8", `<script type="module" src="static/app.js">`},
		{"page HEAD", "HEAD", "/", 200, "text/html; charset=utf-8", ""},
		{"script", "GET", "/static/app.js", 200, "text/javascript; charset=utf-8", "hashchange"},
		{"module", "GET", "/static/alerts.js", 200, "text/javascript; charset=utf-8", "export function alertsView"},
		{"style", "GET", "/static/app.css", 200, "text/css; charset=utf-8", "prefers-color-scheme"},
		{"icon", "GET", "/static/favicon.svg", 200, "image/svg+xml", "<svg"},
		{"index by name", "GET", "/static/index.html", 200, "text/html; charset=utf-8", "alertfan"},
		{"script HEAD", "HEAD", "/static/lib.js", 200, "text/javascript; charset=utf-8", ""},
		{"unknown asset", "GET", "/static/nope.js", 404, "", ""},
		{"directory", "GET", "/static/", 404, "", ""},
		{"outside static", "GET", "/app.js", 404, "", ""},
		{"traversal", "GET", "/static/../ui.go", 404, "", ""},
		{"post", "POST", "/", 405, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			require.Equal(t, tc.code, rec.Code)
			if tc.code != 200 {
				return
			}
			require.Equal(t, tc.contentType, rec.Header().Get("Content-Type"))
			require.Equal(t, "no-cache", rec.Header().Get("Cache-Control"))
			require.Equal(t, "nosniff", rec.Header().Get("X-Content-Type-Options"))
			require.NotEmpty(t, rec.Header().Get("ETag"))
			require.NotEmpty(t, rec.Header().Get("Content-Length"))
			if tc.method == "HEAD" {
				require.Empty(t, rec.Body.String())
				return
			}
			require.Contains(t, rec.Body.String(), tc.body)
		})
	}
}

func TestHandlerRevalidation(t *testing.T) {
	h := Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/static/app.css", nil))
	etag := rec.Header().Get("ETag")
	require.Regexp(t, `^"[0-9a-f]{16}"$`, etag)

	req := httptest.NewRequest("GET", "/static/app.css", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusNotModified, rec.Code)
	require.Empty(t, rec.Body.String())
}

func TestPageSecurityHeaders(t *testing.T) {
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	csp := rec.Header().Get("Content-Security-Policy")
	require.Contains(t, csp, "script-src 'self'")
	require.Contains(t, csp, "frame-ancestors 'none'")
	require.Equal(t, "DENY", rec.Header().Get("X-Frame-Options"))
}

// TestAssetsSelfContained: every asset the page and its modules name is
// embedded, and nothing is loaded from elsewhere (the page works offline
// and behind a sub-path: no absolute or external URLs).
func TestAssetsSelfContained(t *testing.T) {
	ref := regexp.MustCompile(`(?:src|href)="([^"#]+)"|from '([^']+)'|import\('([^']+)'\)`)
	err := fs.WalkDir(files, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(p)
		require.NoError(t, err)
		// The SVG namespace is a name, not a fetch.
		body := strings.ReplaceAll(string(b), `xmlns="http://www.w3.org/2000/svg"`, "")
		require.NotContains(t, body, "http://", p)
		require.NotRegexp(t, `https://[^'"]*\.(js|css|woff2?)`, body, p)
		for _, m := range ref.FindAllStringSubmatch(body, -1) {
			u := m[1] + m[2] + m[3]
			if strings.HasPrefix(u, "api/") || u == "metrics" {
				continue
			}
			require.False(t, strings.HasPrefix(u, "/"), "%s: %q is absolute; a sub-path proxy breaks it", p, u)
			name := u
			if strings.HasPrefix(u, "./") {
				name = "static/" + strings.TrimPrefix(u, "./")
			}
			_, err := fs.Stat(files, name)
			require.NoError(t, err, "%s names %q", p, u)
		}
		return nil
	})
	require.NoError(t, err)
}
