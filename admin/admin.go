// Package admin serves the admin API, /api/v1 (JSON): the live streams
// with their publisher, tracks, inbound bitrate, readers by kind and bytes
// out; every session across the adapters (WHEP, WHIP, RTMP, SRT, forwards,
// pulls, dashboard previews); ending a session or a publisher (with an
// optional ban of its address on the path); reloading the config file; and
// its own OpenAPI 3.1 document (openapi.json, embedded), which is the
// contract the dashboard is built against.
//
// Every call needs "Authorization: Bearer <api.token>" (compared in
// constant time, never logged). Without a token configured every URL
// answers 404, as if the API did not exist; a token in the query string
// (?token=, ?access_token=) is refused with 400 and never looked at, so it
// cannot be accepted from a URL that ends up in logs and browser history.
//
// The package holds no session: it reads the adapters through the
// interface it declares (Sessions), and acts through the node (Evict) and
// the process (Reload).
package admin

import (
	"cmp"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/internal/ratelog"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

//go:embed openapi.json
var openAPI []byte

// Sessions is one adapter's session table as the API reads it (the RTMP
// and SRT servers, the WebRTC sessions table, the node's forwards and
// pulls implement it).
type Sessions interface {
	// Sessions returns a snapshot of the live sessions.
	Sessions() []access.Session
	// EndSession ends session id with reason and reports whether the
	// adapter had it.
	EndSession(id, reason string) bool
}

// ErrNothingToReload is what Config.Reload returns when the process runs
// on the embedded defaults (no file to read again): 409.
var ErrNothingToReload = errors.New("running on the embedded defaults, nothing to reload")

// Config configures a Handler. Token, Registry and Sessions are required.
type Config struct {
	// Token returns the running api.token, read per request so a reload
	// applies at once; "" turns the API off (404).
	Token func() string
	// Registry is the hub whose streams are listed.
	Registry *media.Registry
	// Private reports whether path's stream needs a read key (listed
	// with "private": true); nil: none is.
	Private func(path string) bool
	// Sessions are the adapters' session tables.
	Sessions []Sessions
	// Evict prepares an operator's end of path's publisher at remote: no
	// grace, and with ban > 0 that address refused on path for that long
	// (node.Node.Evict). nil: bans are refused (400).
	Evict func(path, remote string, ban time.Duration)
	// Reload reads the config file again and applies it, as SIGHUP does,
	// and returns the changed keys that need a restart (their running
	// values kept); the error is ErrNothingToReload (409), or the one to
	// answer with 400 (a config error says file:line).
	Reload func() (restartNeeded []string, err error)
	// Drain stops (on) or resumes new WHIP and WHEP sessions on this node
	// and reports whether that changed anything (node.Node.DrainSessions);
	// Drained reports the state. nil: the calls answer 404.
	Drain   func(on bool) (changed bool)
	Drained func() (since time.Time, ok bool)
	// Cluster is the cluster's registry: GET /cluster, and the streams'
	// owners (cluster.go). nil outside a cluster (GET /cluster is 404).
	Cluster Cluster
	Log     *slog.Logger
}

// Handler serves /api/v1. Create it with New.
type Handler struct {
	cfg  Config
	log  *slog.Logger
	mux  *http.ServeMux
	rate bitrates
	// refusals logs refused calls, one line per client address per
	// interval.
	refusals ratelog.Limiter
}

// KickReason is the end reason of a session or publisher an operator
// ends, in the adapter's log line.
const KickReason = "kicked by operator"

// MaxBan bounds ?ban=: a week covers any operator's intent; longer is a
// job for a firewall (and the ban table is in memory only).
const MaxBan = 7 * 24 * time.Hour

// publisherWait bounds how long DELETE /publishers waits for the evicted
// stream to end, so the 204 means "gone" for a client that looks again;
// an adapter tears a connection down within milliseconds.
const publisherWait = 3 * time.Second

// Prefix is where the API lives.
const Prefix = "/api/v1/"

// route is one operation the API serves; the test checks each is in the
// OpenAPI document.
type route struct {
	method, pattern string // pattern relative to /api/v1, ServeMux syntax
	serve           func(*Handler, http.ResponseWriter, *http.Request)
}

var routes = []route{
	{"GET", "/streams", (*Handler).serveStreams},
	{"GET", "/streams/{path...}", (*Handler).serveStream},
	{"GET", "/sessions", (*Handler).serveSessions},
	{"DELETE", "/sessions/{id}", (*Handler).serveKickSession},
	{"DELETE", "/publishers/{path...}", (*Handler).serveKickPublisher},
	{"POST", "/reload", (*Handler).serveReload},
	{"POST", "/node/drain", (*Handler).serveDrain},
	{"DELETE", "/node/drain", (*Handler).serveUndrain},
	{"GET", "/cluster", (*Handler).serveCluster},
	{"GET", "/openapi.json", (*Handler).serveOpenAPI},
}

// New returns the API handler.
func New(cfg Config) *Handler {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Private == nil {
		cfg.Private = func(string) bool { return false }
	}
	h := &Handler{cfg: cfg, log: cfg.Log.With("component", "admin api"), mux: http.NewServeMux()}
	for _, r := range routes {
		serve := r.serve
		h.mux.HandleFunc(r.method+" "+strings.TrimSuffix(Prefix, "/")+r.pattern, func(w http.ResponseWriter, req *http.Request) { serve(h, w, req) })
	}
	h.mux.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API call: "+r.Method+" "+r.URL.Path+" (see "+Prefix+"openapi.json)")
	})
	return h
}

// Register adds the API to mux under Prefix.
func (h *Handler) Register(mux *http.ServeMux) { mux.Handle(Prefix, h) }

// ServeHTTP authenticates the call and serves it:
//
//	404  api.token is not set (the API is off), or no such call
//	400  a token in the query string (?token=, ?access_token=)
//	401  no bearer token, or a wrong one (WWW-Authenticate: Bearer)
//
// then the call's own answers (openapi.json lists them).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	want := h.cfg.Token()
	if want == "" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	if q.Has("token") || q.Has("access_token") {
		h.refuse(w, r, http.StatusBadRequest, "a token in the URL is refused (URLs end up in logs and histories): send Authorization: Bearer <api.token>")
		return
	}
	switch got := rtc.BearerToken(r); {
	case got == "":
		h.refuse(w, r, http.StatusUnauthorized, "the admin API needs a bearer token (Authorization: Bearer <api.token>)")
		return
	case subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1:
		h.refuse(w, r, http.StatusUnauthorized, "wrong bearer token")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	h.mux.ServeHTTP(w, r)
}

// refuse answers a refused call and logs it, once per client address per
// interval.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if ok, n := h.refusals.Allow(addrlimit.AddrOf(r.RemoteAddr).String()); ok {
		h.log.Info("admin API call refused", "peer", r.RemoteAddr, "status", status, "reason", msg, "suppressed", n)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="bridge"`)
	}
	writeError(w, status, msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// allSessions gathers every adapter's sessions.
func (h *Handler) allSessions() []access.Session {
	var out []access.Session
	for _, s := range h.cfg.Sessions {
		out = append(out, s.Sessions()...)
	}
	return out
}

// Session is one session as the API lists it. LogID is the id its log
// lines carry under "session" (access.Session.LogID): the whole ID, or for
// WHIP and WHEP, whose ID is their URL's capability, its first
// characters; an operator greps the log for session=<log_id>.
type Session struct {
	ID                   string             `json:"id"`
	LogID                string             `json:"log_id"`
	Kind                 access.SessionKind `json:"kind"`
	Stream               string             `json:"stream"`
	Peer                 string             `json:"peer"`
	State                string             `json:"state"`
	Since                time.Time          `json:"since"`
	Bytes                *uint64            `json:"bytes,omitempty"`
	PacketsLost          *uint64            `json:"packets_lost,omitempty"`
	PacketsRetransmitted *uint64            `json:"packets_retransmitted,omitempty"`
}

func sessionOf(s access.Session) Session {
	out := Session{ID: s.ID, LogID: cmp.Or(s.LogID, s.ID), Kind: s.Kind, Stream: s.Stream, Peer: s.Peer, State: s.State, Since: s.Since.UTC().Truncate(time.Second)}
	if s.HasBytes {
		out.Bytes = &s.Bytes
	}
	if s.HasPackets {
		out.PacketsLost, out.PacketsRetransmitted = &s.PacketsLost, &s.PacketsRetransmitted
	}
	return out
}

// serveSessions answers 200 {"sessions":[...]}, sorted by stream, kind
// and start.
func (h *Handler) serveSessions(w http.ResponseWriter, _ *http.Request) {
	all := h.allSessions()
	slices.SortFunc(all, func(a, b access.Session) int {
		return cmp.Or(strings.Compare(a.Stream, b.Stream), strings.Compare(string(a.Kind), string(b.Kind)), a.Since.Compare(b.Since), strings.Compare(a.ID, b.ID))
	})
	out := make([]Session, len(all))
	for i, s := range all {
		out[i] = sessionOf(s)
	}
	writeJSON(w, http.StatusOK, map[string][]Session{"sessions": out})
}

// serveKickSession ends a session: 204, or 404 when no adapter has it.
func (h *Handler) serveKickSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	for _, s := range h.cfg.Sessions {
		if s.EndSession(id, KickReason) {
			h.log.Info("session kicked", "session", id, "peer", r.RemoteAddr)
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("no session %q", id))
}

// serveKickPublisher ends the publisher of a stream at once, without the
// route's grace (its readers end with it), and with ?ban=DURATION refuses
// its address publishing on the path for that long: 204; 404 when nobody
// publishes the path; 400 for a ban that is not a duration in (0, MaxBan].
func (h *Handler) serveKickPublisher(w http.ResponseWriter, r *http.Request) {
	path := r.PathValue("path")
	var ban time.Duration
	if v := r.URL.Query().Get("ban"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > MaxBan {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("ban=%q is not a duration between 1s and %v (such as \"5m\" or \"2h\")", v, MaxBan))
			return
		}
		ban = d
	}
	var pub *access.Session
	for _, s := range h.allSessions() {
		if s.Stream == path && s.Kind.Publishes() {
			pub = &s
			break
		}
	}
	if pub == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no publisher on %q", path))
		return
	}
	if ban > 0 && (pub.Kind == access.SessionPull || h.cfg.Evict == nil) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%q is pulled by the bridge itself: there is no address to ban (change the route's pull instead)", path))
		return
	}
	st, _ := h.cfg.Registry.Get(path)
	if h.cfg.Evict != nil {
		h.cfg.Evict(path, pub.Peer, ban)
	}
	for _, s := range h.cfg.Sessions {
		if s.EndSession(pub.ID, KickReason) {
			break
		}
	}
	h.log.Info("publisher kicked", "stream", path, "session", pub.ID, "publisher", pub.Peer, "ban", ban.String(), "peer", r.RemoteAddr)
	if st != nil {
		t := time.NewTimer(publisherWait)
		defer t.Stop()
		select {
		case <-st.Done():
		case <-t.C:
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// reloaded is the answer of a reload (openapi.json: POST /reload, 200).
type reloaded struct {
	Reloaded bool `json:"reloaded"`
	// RestartNeeded are the changed keys that apply only at the next
	// start (e.g. "tls.cert_file"); [] when none.
	RestartNeeded []string `json:"restart_needed"`
}

// serveReload reads the config file again, as SIGHUP does: 200
// {"reloaded":true,"restart_needed":[keys]}; 400 with the file's errors
// (file:line: key: what is wrong), the running config kept; 409 on the
// embedded defaults.
func (h *Handler) serveReload(w http.ResponseWriter, r *http.Request) {
	restart, err := h.cfg.Reload()
	switch {
	case err == nil:
		h.log.Info("config reloaded through the API", "peer", r.RemoteAddr)
		writeJSON(w, http.StatusOK, reloaded{Reloaded: true, RestartNeeded: append([]string{}, restart...)})
	case errors.Is(err, ErrNothingToReload):
		writeError(w, http.StatusConflict, err.Error())
	default:
		h.log.Info("config reload through the API refused; keeping the running config", "peer", r.RemoteAddr, "err", err)
		writeError(w, http.StatusBadRequest, err.Error())
	}
}

func (h *Handler) serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI)
}

// bitrates estimates each stream's inbound bitrate from media's byte
// count: over the time since the previous sample at least minSampleGap
// old, so two calls close together do not divide by nothing. Bounded by
// the live streams (samples of gone ones are dropped).
type bitrates struct {
	mu      sync.Mutex
	samples map[*media.Stream]sample // guarded by mu
}

type sample struct {
	at    time.Time
	bytes uint64
	rate  int64 // bit/s measured up to at
}

// minSampleGap is the shortest interval a rate is measured over: shorter
// ones are noise (an encoder sends a keyframe, then little).
const minSampleGap = time.Second

// rate returns st's inbound bitrate, in bit/s; since is when its
// publisher started, for a first estimate (zero: unknown).
func (b *bitrates) rate(st *media.Stream, since, now time.Time) int64 {
	cur := st.BytesIn()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.samples == nil {
		b.samples = make(map[*media.Stream]sample)
	}
	prev, ok := b.samples[st]
	switch {
	case !ok:
		r := int64(0)
		if dt := now.Sub(since); !since.IsZero() && dt >= minSampleGap {
			r = int64(float64(cur) * 8 / dt.Seconds())
		}
		b.samples[st] = sample{at: now, bytes: cur, rate: r}
		return r
	case now.Sub(prev.at) < minSampleGap:
		return prev.rate
	}
	r := int64(float64(cur-prev.bytes) * 8 / now.Sub(prev.at).Seconds())
	b.samples[st] = sample{at: now, bytes: cur, rate: r}
	return r
}

// prune drops the samples of streams not in live.
func (b *bitrates) prune(live map[*media.Stream]bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for st := range b.samples {
		if !live[st] {
			delete(b.samples, st)
		}
	}
}
