// Package web serves the bridge's built-in pages: an index of the live
// streams, a browser player that watches a stream over WHEP, and a page
// that publishes the browser's camera and microphone over WHIP. Everything
// is embedded in the binary (plain HTML, CSS and JavaScript, no CDN, no
// framework) and same-origin with the WHIP and WHEP endpoints (in a
// cluster, also with the other nodes' public URLs, where a POST may be
// redirected), so the pages run under a strict Content-Security-Policy.
package web

import (
	"embed"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/wishbridge/bridge/internal/forwarded"
	"github.com/wishbridge/bridge/internal/staticfile"
)

//go:embed templates/*.html
var templatesFS embed.FS

//go:embed static
var staticFS embed.FS

// The Content-Security-Policy allows nothing but this origin: scripts and
// styles come from /static/, the pages only talk to /whep/, /whip/ and
// /sessions/, and the videos play MediaStreams. No inline script or style
// anywhere. In a cluster connect-src also lists the nodes' origins
// (Config.ConnectSources): a WHEP or WHIP POST may be redirected (307) to
// another node, where its session then lives.
const (
	cspBefore = "default-src 'self'; script-src 'self'; style-src 'self'; " +
		"img-src 'self' data:; media-src blob: 'self'; connect-src 'self'"
	cspAfter = "; object-src 'none'; base-uri 'none'; form-action 'self'"
)

// maxConnectSources bounds the bytes the origins of Config.ConnectSources
// add to connect-src: every page carries the header, and a reverse proxy
// in front of the bridge holds a response's whole header in one buffer
// (nginx's proxy_buffer_size: 4 KiB by default on most platforms, a 502
// beyond it); 3 KiB leaves room for the policy's fixed part and the
// other headers, and lists about 70 nodes' origins of a usual length
// (~40 bytes). Origins beyond it are left out: a redirect to one of those
// nodes fails in the browser, whose player then retries.
const maxConnectSources = 3 << 10

// Config configures a Handler.
type Config struct {
	// Streams returns the paths of the live streams (required).
	Streams func() []string
	// AudioNote, when non-empty, is shown on the player page (e.g. "this
	// build cannot transcode AAC audio; AAC sources play without sound").
	AudioNote string
	// RTMPPort and RTMPSPort are the ports of the RTMP and RTMPS
	// listeners, 0 for one that is off. The index's publish hint names
	// rtmp:// when RTMP is on, else rtmps://; with both off it shows
	// only the browser's WHIP publisher.
	RTMPPort, RTMPSPort int
	// ConnectSources, when set, returns the base URLs of the other places
	// the pages' scripts may send their requests to besides the page's
	// own origin: in a cluster, every node's public_url, where a WHEP (or
	// WHIP) POST may be redirected with a 307 and its session then
	// lives. Their origins join the policy's connect-src; a URL that is
	// not http(s)://host[:port][/path] is left out. nil: 'self' only.
	ConnectSources func() []string
}

// Handler serves the pages. Create it with New.
type Handler struct {
	cfg     Config
	index   *template.Template
	watch   *template.Template
	publish *template.Template
	static  map[string]staticfile.File // by name under static/
}

// staticTypes are the content types of the files we ship; a file with any
// other extension is not served.
var staticTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
	".svg": "image/svg+xml",
}

var templates = template.Must(template.ParseFS(templatesFS, "templates/*.html"))

// New returns a Handler for cfg.
func New(cfg Config) *Handler {
	if cfg.Streams == nil {
		cfg.Streams = func() []string { return nil }
	}
	static, err := staticfile.Load(staticFS, "static", staticTypes)
	if err != nil {
		panic("web: embedded static files: " + err.Error()) // cannot happen: the FS is compiled in
	}
	return &Handler{
		cfg:     cfg,
		index:   templates.Lookup("index.html"),
		watch:   templates.Lookup("watch.html"),
		publish: templates.Lookup("publish.html"),
		static:  static,
	}
}

// Register adds the pages to mux: GET / (index), GET /watch/{path...}
// (player), GET /publish/{path...} (camera publisher) and
// GET /static/{file...} (scripts and styles).
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", h.serveIndex)
	mux.HandleFunc("GET /watch/{path...}", h.serveWatch)
	mux.HandleFunc("GET /publish/{path...}", h.servePublish)
	h.RegisterStatic(mux)
}

// RegisterStatic adds only GET /static/{file...}: the WHEP client the
// dashboard's previews import, where the pages are not served (listen.api).
func (h *Handler) RegisterStatic(mux *http.ServeMux) {
	mux.HandleFunc("GET /static/{file...}", h.serveStatic)
}

// pageHeaders sets the headers every HTML page carries. no-referrer keeps
// a ?token= in the page URL from leaking to other sites.
func (h *Handler) pageHeaders(w http.ResponseWriter) {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Content-Security-Policy", h.contentSecurityPolicy())
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Cache-Control", "no-store")
}

// contentSecurityPolicy is the pages' policy, connect-src listing the
// origins of Config.ConnectSources (at most maxConnectSources).
func (h *Handler) contentSecurityPolicy() string {
	if h.cfg.ConnectSources == nil {
		return cspBefore + cspAfter
	}
	var b strings.Builder
	b.WriteString(cspBefore)
	seen := make(map[string]bool)
	added := 0
	for _, u := range h.cfg.ConnectSources() {
		o, ok := origin(u)
		if !ok || seen[o] || added+1+len(o) > maxConnectSources {
			continue
		}
		seen[o] = true
		added += 1 + len(o)
		b.WriteString(" " + o)
	}
	b.WriteString(cspAfter)
	return b.String()
}

// origin returns the origin of base URL u (scheme://host[:port]) as a CSP
// source: false unless u is an absolute http or https URL whose host is a
// name or an IP address, so that nothing from a registry entry can add a
// directive (";"), a wildcard or a keyword to the policy.
func origin(u string) (string, bool) {
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "http" && p.Scheme != "https" || p.User != nil || p.Host == "" {
		return "", false
	}
	for _, c := range p.Host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]", c)) {
			return "", false
		}
	}
	return p.Scheme + "://" + p.Host, true
}

type indexStream struct {
	Path     string // as published, e.g. "live/test"
	WatchURL string // relative link to the player
	WHEPURL  string // absolute WHEP endpoint
}

type indexData struct {
	Streams       []indexStream
	PublishServer string // rtmp(s)://HOST:PORT/live: the stream key goes after it; "" without RTMP
}

func (h *Handler) serveIndex(w http.ResponseWriter, r *http.Request) {
	paths := slices.Clone(h.cfg.Streams())
	slices.Sort(paths)
	base := baseURL(r)
	d := indexData{PublishServer: h.publishServer(r)}
	for _, p := range paths {
		esc := escapePath(p)
		d.Streams = append(d.Streams, indexStream{Path: p, WatchURL: "/watch/" + esc, WHEPURL: base + "/whep/" + esc})
	}
	h.pageHeaders(w)
	_ = h.index.Execute(w, d)
}

// publishServer is the RTMP server URL an encoder publishes to, on the
// host the client used: RTMP when it is on, else RTMPS; "" with neither.
func (h *Handler) publishServer(r *http.Request) string {
	scheme, port := "rtmp", h.cfg.RTMPPort
	if port <= 0 {
		scheme, port = "rtmps", h.cfg.RTMPSPort
	}
	if port <= 0 {
		return ""
	}
	return scheme + "://" + net.JoinHostPort(hostname(r), strconv.Itoa(port)) + "/live"
}

type watchData struct {
	Path      string
	WHEPURL   string // same-origin endpoint the player POSTs its offer to
	WHEPAbs   string // the same, absolute, for other WHEP players
	AudioNote string
}

func (h *Handler) serveWatch(w http.ResponseWriter, r *http.Request) {
	p := strings.Trim(r.PathValue("path"), "/")
	if p == "" {
		http.Redirect(w, r, "/", http.StatusFound)
		return
	}
	h.pageHeaders(w)
	esc := escapePath(p)
	_ = h.watch.Execute(w, watchData{Path: p, WHEPURL: "/whep/" + esc, WHEPAbs: baseURL(r) + "/whep/" + esc, AudioNote: h.cfg.AudioNote})
}

type publishData struct {
	Path     string
	WHIPURL  string // same-origin endpoint the page POSTs its offer to
	WHIPAbs  string // the same, absolute, for OBS and other WHIP clients
	WatchURL string // relative link to the player
}

// servePublish serves the publish page. The index's form arrives as
// /publish/?path=P[&token=T] and is redirected to /publish/P[?token=T].
func (h *Handler) servePublish(w http.ResponseWriter, r *http.Request) {
	p := strings.Trim(r.PathValue("path"), "/")
	if p == "" {
		q := r.URL.Query()
		target := "/"
		if fp := cleanPath(q.Get("path")); fp != "" {
			target = "/publish/" + escapePath(fp)
			if tok := q.Get("token"); tok != "" {
				target += "?" + url.Values{"token": {tok}}.Encode()
			}
		}
		w.Header().Set("Referrer-Policy", "no-referrer")
		http.Redirect(w, r, target, http.StatusFound)
		return
	}
	h.pageHeaders(w)
	// The page may use this origin's camera and microphone; nothing it
	// embeds may.
	w.Header().Set("Permissions-Policy", "camera=(self), microphone=(self)")
	esc := escapePath(p)
	_ = h.publish.Execute(w, publishData{
		Path:     p,
		WHIPURL:  "/whip/" + esc,
		WHIPAbs:  baseURL(r) + "/whip/" + esc,
		WatchURL: "/watch/" + esc,
	})
}

// cleanPath turns what a user typed as a stream path into one: no
// surrounding blanks or slashes, no empty, "." or ".." segments.
func cleanPath(p string) string {
	var segs []string
	for s := range strings.SplitSeq(strings.TrimSpace(p), "/") {
		if s = strings.TrimSpace(s); s != "" && s != "." && s != ".." {
			segs = append(segs, s)
		}
	}
	return strings.Join(segs, "/")
}

func (h *Handler) serveStatic(w http.ResponseWriter, r *http.Request) {
	f, ok := h.static[r.PathValue("file")]
	if !ok {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		http.NotFound(w, r)
		return
	}
	f.Serve(w, r)
}

// escapePath percent-encodes each segment of a stream path, keeping the
// slashes: "live/a b" -> "live/a%20b".
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// baseURL is scheme://host as the client used them (forwarded.Scheme;
// r.Host, which a trusted proxy's headers set), as rtc.Location builds
// session URLs.
func baseURL(r *http.Request) string {
	host := r.Host
	if host == "" {
		host = "HOST"
	}
	return forwarded.Scheme(r) + "://" + host
}

// hostname is the request's host without its port ("HOST" if unknown).
func hostname(r *http.Request) string {
	if r.Host == "" {
		return "HOST"
	}
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		return h
	}
	return strings.Trim(r.Host, "[]")
}
