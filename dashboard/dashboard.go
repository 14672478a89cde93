// Package dashboard serves the operator's page, /dashboard: the live
// streams with their figures, a muted preview of each, and the buttons that
// kick sessions and publishers and reload the config. The page holds no
// data: it asks the operator for the api.token, keeps it in the tab's
// sessionStorage and reads and acts through the admin API (/api/v1, see
// package admin) with "Authorization: Bearer". Its HTML, CSS and
// JavaScript are embedded (no CDN, no build step); the preview player
// imports the WHEP client the built-in pages serve at /static/whep.js.
package dashboard

import (
	"embed"
	"net/http"

	"github.com/wishbridge/bridge/internal/staticfile"
)

//go:embed static
var staticFS embed.FS

// contentSecurityPolicy allows nothing but this origin: the page's script
// and style, the WHEP client under /static/, fetches to /api/v1 and /whep,
// and previews playing MediaStreams. frame-ancestors 'none' keeps another
// site from framing the kick buttons under the operator's pointer.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; media-src blob: 'self'; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// page is the file served at /dashboard and /dashboard/.
const page = "dashboard.html"

// Config configures a Handler.
type Config struct {
	// Enabled reports whether the admin API is on (api.token set in the
	// running config). Asked on every request, so a reload that sets or
	// clears the token turns the page on or off; nil means always off.
	Enabled func() bool
}

// Handler serves the page and its files. Create it with New.
type Handler struct {
	cfg   Config
	files map[string]staticfile.File // by name under static/
}

// types are the content types of the files the page is made of; a file
// with any other extension is not served.
var types = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// New returns a Handler for cfg.
func New(cfg Config) *Handler {
	if cfg.Enabled == nil {
		cfg.Enabled = func() bool { return false }
	}
	files, err := staticfile.Load(staticFS, "static", types)
	if err != nil {
		panic("dashboard: embedded files: " + err.Error()) // cannot happen: the FS is compiled in
	}
	return &Handler{cfg: cfg, files: files}
}

// Register adds the dashboard to mux: /dashboard and /dashboard/ (the
// page) and /dashboard/{file} (its script and style).
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("/dashboard", h.serve)
	mux.HandleFunc("/dashboard/{file...}", h.serve)
}

// serve answers:
//   - 404 for every method and name while the API is off (no api.token),
//     as the API does, so the page does not tell that it exists;
//   - 405 with Allow for a method other than GET or HEAD;
//   - 404 for a name that is not one of the page's files;
//   - 200 with the file, or 304 when the client's ETag matches
//     (staticfile.File.Serve).
func (h *Handler) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if !h.cfg.Enabled() {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := r.PathValue("file")
	if name == "" {
		name = page
	}
	f, ok := h.files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", contentSecurityPolicy)
	hdr.Set("Referrer-Policy", "no-referrer")
	f.Serve(w, r)
}
