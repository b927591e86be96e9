// Package ui is alertfan's status page: static HTML, CSS and JavaScript
// modules embedded in the binary (no build step, no CDN, no external
// fonts), which read the JSON API under api/v1/.
//
// Every URL the page uses is relative (static/app.js, api/v1/alerts), and
// views live in the URL's fragment (#/alerts?matchers=…), so the page works
// unchanged behind a reverse proxy that serves alertfan under a sub-path.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var files embed.FS

// contentTypes is fixed here rather than read from the system's MIME
// tables, which differ between machines (a .js served as text/plain is
// refused as a module).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
}

// csp allows only the page's own assets and API: no inline script or
// style, nothing from elsewhere, no framing.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

type asset struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the page at "/" (index.html) and its assets at
// "/static/<name>". Mount it for "GET /{$}" and "GET /static/"; HEAD is
// answered like GET without a body. Unknown assets are 404, directories
// are not listed. Responses carry a strong ETag (a hash of the content)
// and "Cache-Control: no-cache", so a browser revalidates each load with
// If-None-Match and gets 304 until the binary changes.
func Handler() http.Handler {
	assets := map[string]asset{}
	err := fs.WalkDir(files, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			ct = "application/octet-stream"
		}
		assets["/"+p] = asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		// The files are compiled in; failing to read them is a build bug.
		panic("ui: reading embedded assets: " + err.Error())
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := r.URL.Path
		if name == "/" {
			name = "/static/index.html"
		}
		a, ok := assets[name]
		if !ok || !strings.HasPrefix(name, "/static/") {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("ETag", a.etag)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		if a.contentType == contentTypes[".html"] {
			h.Set("Content-Security-Policy", csp)
			h.Set("X-Frame-Options", "DENY")
			h.Set("Referrer-Policy", "no-referrer")
		}
		// ServeContent answers If-None-Match (304), Range and HEAD.
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
	})
}
