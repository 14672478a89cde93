package rtc

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/internal/forwarded"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/ratelog"
	"github.com/wishbridge/bridge/internal/streampath"
	"github.com/wishbridge/bridge/media"
)

// MaxSDPSize bounds an SDP offer body. Real offers are 2-10 KiB (Chromium
// with every codec: ~7 KiB); 64 KiB leaves room without inviting abuse.
const MaxSDPSize = 64 << 10

// SessionPathPrefix is where WHIP and WHEP session resources live: the
// Location of a session is SessionPathPrefix + its unguessable id.
const SessionPathPrefix = "/sessions/"

// Error is an HTTP error with the status to answer and a message for the
// client. The message must not contain secrets.
type Error struct {
	Status int
	Msg    string
	// RetryAfter, when set, is sent as Retry-After (whole seconds, rounded
	// up); 429 and 503 without it get defaultRetryAfter.
	RetryAfter time.Duration
	// Location, when set, is sent as Location (a redirect, see Redirect).
	Location string
}

// defaultRetryAfter is the Retry-After of a 429 or 503 that names none.
const defaultRetryAfter = 10 * time.Second

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Msg) }

// Errorf returns an *Error with a formatted message.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// Redirect returns a 307 Temporary Redirect to location (RFC 9110 section
// 15.4.8: the client repeats its request, body and method included,
// there), for a stream served by another node.
func Redirect(location, format string, args ...any) *Error {
	return &Error{Status: http.StatusTemporaryRedirect, Msg: fmt.Sprintf(format, args...), Location: location}
}

// WriteError answers with err's status and message as text/plain; errors
// that are not *Error become 500 without details (they are logged by the
// caller).
func WriteError(w http.ResponseWriter, err error) {
	var he *Error
	if !errors.As(err, &he) {
		he = &Error{Status: http.StatusInternalServerError, Msg: "internal error"}
	}
	if he.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="bridge"`)
	}
	if he.Status == http.StatusServiceUnavailable || he.Status == http.StatusTooManyRequests || he.RetryAfter > 0 {
		// A full server or a greedy client: back off instead of hammering.
		retry := he.RetryAfter
		if retry <= 0 {
			retry = defaultRetryAfter
		}
		if w.Header().Get("Retry-After") == "" {
			w.Header().Set("Retry-After", strconv.Itoa(int((retry+time.Second-1)/time.Second)))
		}
	}
	if he.Location != "" {
		w.Header().Set("Location", he.Location)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(he.Status)
	_, _ = io.WriteString(w, he.Msg+"\n")
}

// ReadSDP checks that r carries an application/sdp body of at most
// MaxSDPSize bytes and returns it.
func ReadSDP(w http.ResponseWriter, r *http.Request) (string, error) {
	return readBody(w, r, "application/sdp", MaxSDPSize, "SDP offer")
}

// readBody checks that r carries a non-empty body of media type mtype and
// at most limit bytes and returns it: 415, 413 or 400 otherwise.
func readBody(w http.ResponseWriter, r *http.Request, mtype string, limit int64, what string) (string, error) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != mtype {
		if ct == "" {
			ct = "none"
		}
		return "", Errorf(http.StatusUnsupportedMediaType, "Content-Type must be %s (got %s)", mtype, ct)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", Errorf(http.StatusRequestEntityTooLarge, "%s is larger than %d bytes", what, limit)
		}
		return "", Errorf(http.StatusBadRequest, "reading %s: %v", what, err)
	}
	if len(body) == 0 {
		return "", Errorf(http.StatusBadRequest, "empty %s", what)
	}
	return string(body), nil
}

// CheckPath applies the one stream path rule (internal/streampath) to the
// stream path of a WHIP or WHEP URL: a 400 with the reason if it breaks it.
func CheckPath(path string) error {
	if err := streampath.Check(path); err != nil {
		return Errorf(http.StatusBadRequest, "%v", err)
	}
	return nil
}

// RefusalLog logs an endpoint's refusals: one line per client address per
// interval (internal/ratelog), which says how many it held back, so a
// flood of bad requests cannot flood the log. The zero value is ready.
type RefusalLog struct {
	lim ratelog.Limiter
}

// Log logs err, the refusal of request r, with msg: the status and reason
// of an *Error at Info, anything else (answered 500) at Error.
func (l *RefusalLog) Log(log *slog.Logger, r *http.Request, msg string, err error) {
	ok, suppressed := l.lim.Allow(addrlimit.AddrOf(r.RemoteAddr).String())
	if !ok {
		return
	}
	var he *Error
	if errors.As(err, &he) {
		log.Info(msg, "status", he.Status, "reason", he.Msg, "suppressed", suppressed)
		return
	}
	log.Error(msg, "err", err, "suppressed", suppressed)
}

// BearerToken returns the token of an "Authorization: Bearer" header, or "".
func BearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// CORS answers OPTIONS (preflights and plain ones alike, never requiring
// auth: browsers send no credentials on preflights) with 200 OK (what WHIP
// and WHEP conformance checkers expect; any 2xx passes a preflight), the
// methods the resource allows (Allow, Access-Control-Allow-Methods) and what
// it accepts: Accept-Post: application/sdp on endpoints (RFC 9725 section 4.2,
// draft-ietf-wish-whep section 4.2), Accept-Patch:
// application/trickle-ice-sdpfrag on sessions (RFC 5789 section 3.1). It
// adds to every response the headers WHIP/WHEP clients on other origins
// need to read ours.
func CORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Expose-Headers", "Location, ETag, Link, Accept-Post, Accept-Patch, Access-Control-Allow-Methods")
		if r.Method == http.MethodOptions {
			methods := endpointMethods
			if strings.HasPrefix(r.URL.Path, SessionPathPrefix) {
				methods = sessionMethods
				h.Set("Accept-Patch", SdpfragType)
			} else {
				h.Set("Accept-Post", "application/sdp")
			}
			h.Set("Allow", methods)
			h.Set("Access-Control-Allow-Methods", methods)
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match")
			h.Set("Access-Control-Max-Age", "86400")
			w.WriteHeader(http.StatusOK)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// The methods WHIP/WHEP endpoints and session resources allow.
const (
	endpointMethods = "OPTIONS, GET, HEAD, POST"
	sessionMethods  = "OPTIONS, GET, HEAD, PATCH, DELETE"
)

// RegisterEndpoint adds a WHIP or WHEP endpoint under prefix (e.g.
// "/whep/") to mux: POST prefix{path...} creates sessions with post; GET
// and HEAD answer 204 without content, for clients and monitors that probe
// the URL first (WHIP drafts up to -10 reserved GET with a 405; a 2xx is
// what those probes need). Other methods get 405 with Allow from the
// ServeMux; OPTIONS is CORS's. No authorization is asked: nothing is
// revealed, not even whether a stream exists.
func RegisterEndpoint(mux *http.ServeMux, prefix string, post http.HandlerFunc) {
	mux.HandleFunc("POST "+prefix+"{path...}", post)
	mux.HandleFunc("GET "+prefix+"{path...}", serveNoContent)
}

func serveNoContent(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }

// WriteAnswer answers a WHIP or WHEP POST: 201 Created with the session's
// absolute Location, its entity-tag (RFC 9725 section 4.3.1), Accept-Patch
// (trickle ICE and ICE restarts are supported), one Link per ICE server and
// the SDP answer. iceServers come from Engine.ICEServers, and only once the
// route has admitted the client: they may carry TURN credentials.
func WriteAnswer(w http.ResponseWriter, location, etag, answer string, iceServers []webrtc.ICEServer) {
	hdr := w.Header()
	hdr.Set("Content-Type", "application/sdp")
	hdr.Set("Location", location)
	hdr.Set("ETag", etag)
	hdr.Set("Accept-Patch", SdpfragType)
	for _, l := range LinkHeaders(iceServers) {
		hdr.Add("Link", l)
	}
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, answer)
}

// LinkHeaders returns one Link header value per ICE server URL, as RFC 9725
// section 4.6 describes, so clients can use our STUN/TURN servers.
func LinkHeaders(servers []webrtc.ICEServer) []string {
	var out []string
	for _, s := range servers {
		for _, u := range s.URLs {
			v := fmt.Sprintf(`<%s>; rel="ice-server"`, u)
			if s.Username != "" {
				if cred, ok := s.Credential.(string); ok {
					v += fmt.Sprintf(`; username=%q; credential=%q; credential-type="password"`, s.Username, cred)
				}
			}
			out = append(out, v)
		}
	}
	return out
}

// Session is a WHIP or WHEP session resource. WHIP and WHEP sessions get
// everything but Close from an embedded *ICESession.
type Session interface {
	// Close ends the session and releases everything it holds; safe to
	// call more than once and from any goroutine.
	Close(reason string)
	// ETag returns the strong entity-tag (quoted) of the session's current
	// ICE session; it changes with every ICE restart.
	ETag() string
	// RemoteICEUfrag returns the client's ice-ufrag in the current ICE
	// session: a PATCH with another one is an ICE restart.
	RemoteICEUfrag() string
	// Trickle adds the client's candidates in frag to the current ICE
	// session, silently dropping those that cannot be used.
	Trickle(frag *Sdpfrag) error
	// RestartICE restarts ICE with the client's new credentials and
	// candidates in frag, and returns the session's new ones as an sdpfrag
	// body, and the new entity-tag. On failure the session goes on.
	RestartICE(frag *Sdpfrag) (answerFrag, etag string, err error)
}

// Sessions is the table of live session resources, addressed by an
// unguessable id. It serves DELETE, PATCH and GET on SessionPathPrefix +
// id, and it bounds what clients can hold (see Limits): sessions in total
// and per client address, sessions not connected yet in total and per
// address, and the viewers joining one stream. A session that has not
// connected (ICE and DTLS) within Limits.ConnectTimeout is closed by the
// table, which frees its slots. Safe for concurrent use; create it with
// NewSessions.
//
// An id's life: Reserve (slots taken, connect timer started), Set (the
// session becomes addressable), Connected (its pending slot is freed),
// Remove (every slot freed). A session whose offer the bridge made
// (WHEP's server-offer mode) has its connect timer started again when
// its answer comes (answered). Set after Remove is refused, so a session
// that ended before its handler stored it can never hold a slot.
type Sessions struct {
	log *slog.Logger
	lim Limits

	// Slots per client address; each has its own lock, taken under mu.
	all     *addrlimit.Limiter // every reserved session
	pending *addrlimit.Limiter // reserved sessions not connected yet

	refused  [numLimits]atomic.Uint64
	timedOut atomic.Uint64
	// refusal, when set, refuses every new claim (Drain).
	refusal atomic.Pointer[Error]
	// patchLog logs refused PATCHes once per client per interval: a
	// flood of them (429s) must not write a line each.
	patchLog RefusalLog

	// node and publicURL place the table's sessions in a cluster (see
	// SetNode); "" outside one. Set before serving, read-only after.
	node, publicURL string

	mu   sync.Mutex
	byID map[string]*entry // guarded by mu
	// joining counts the viewers of each stream that are reserved but not
	// connected, so they count toward its reader limit before they have
	// a reader; no zero entries. Guarded by mu.
	joining map[*media.Stream]int
}

// entry is one reserved id. Its fields are guarded by Sessions.mu.
type entry struct {
	s       Session // nil until Set
	release func()  // frees the session slot
	// connect is the connect timer, releasePending frees the pending slot
	// and joins is the stream the viewer joins (nil for a publisher): all
	// three are cleared when the session connects.
	connect        *time.Timer
	releasePending func()
	joins          *media.Stream
}

// Limits bound a Sessions table. A zero field means its default; the
// defaults are those of the config's limits block (config/default.yaml),
// repeated here so a hand-built table is bounded too.
type Limits struct {
	// Sessions and SessionsPerAddress bound WHIP and WHEP sessions
	// together, in total and per client address (IPv6 per /64).
	Sessions, SessionsPerAddress int
	// Pending and PendingPerAddress bound the sessions not connected yet:
	// the ones a client can open without a working peer. They are closed
	// after ConnectTimeout.
	Pending, PendingPerAddress int
	ConnectTimeout             time.Duration
	// ReadersPerStream bounds the readers of one stream (all protocols,
	// see media.Stream.CheckReaders) when a WHEP viewer joins it, unless
	// the Claim says otherwise (a route's max_readers).
	ReadersPerStream int
}

// Defaults of Limits: those of config/default.yaml. 2000 sessions are
// about what one bridge can serve (docs/BENCHMARKS.md: 540-630 viewers per
// core); 500 per address lets the load tool and a large NAT in; 50
// connecting per address is more than any page opens at once, and 5 s is
// several times the slowest ICE+DTLS over TURN.
const (
	DefaultSessions           = 2000
	DefaultSessionsPerAddress = 500
	DefaultPending            = 500
	DefaultPendingPerAddress  = 50
	DefaultConnectTimeout     = 5 * time.Second
	DefaultReadersPerStream   = 1000
)

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.Sessions, DefaultSessions)
	def(&l.SessionsPerAddress, DefaultSessionsPerAddress)
	def(&l.Pending, DefaultPending)
	def(&l.PendingPerAddress, DefaultPendingPerAddress)
	def(&l.ReadersPerStream, DefaultReadersPerStream)
	if l.ConnectTimeout <= 0 {
		l.ConnectTimeout = DefaultConnectTimeout
	}
	return l
}

// Limit names one limit of a Sessions table; String is its config key.
type Limit int

// The limits Reserve enforces.
const (
	LimitSessions Limit = iota
	LimitSessionsPerAddress
	LimitPending
	LimitPendingPerAddress
	LimitReadersPerStream
	numLimits
)

func (l Limit) String() string {
	return [numLimits]string{"webrtc_sessions", "webrtc_sessions_per_address", "webrtc_pending",
		"webrtc_pending_per_address", "readers_per_stream"}[l]
}

// NewSessions returns a table bounded by lim (zero fields: defaults).
func NewSessions(lim Limits, log *slog.Logger) *Sessions {
	lim = lim.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	return &Sessions{
		log:     log.With("component", "webrtc sessions"),
		lim:     lim,
		all:     addrlimit.New(lim.Sessions, lim.SessionsPerAddress),
		pending: addrlimit.New(lim.Pending, lim.PendingPerAddress),
		byID:    make(map[string]*entry),
		joining: make(map[*media.Stream]int),
	}
}

// A Claim asks Reserve for a session slot.
type Claim struct {
	// Peer is the client's address ("host:port", as in
	// http.Request.RemoteAddr).
	Peer string
	// Joins is the stream a viewer will read (nil for a publisher): the
	// claim is refused when the stream is at MaxReaders, its readers and
	// the viewers still connecting to it counted.
	Joins *media.Stream
	// MaxReaders overrides Limits.ReadersPerStream for Joins (a route's
	// max_readers); 0 means the table's.
	MaxReaders int
}

// retryPerClient is the Retry-After of a refusal whose slots are held
// until sessions end (they may last hours): long enough that a client
// does not hammer, short enough that a player recovers soon.
const retryPerClient = 10 * time.Second

// Drain makes Reserve refuse every new claim with refusal, until Drain(nil)
// admits them again; the sessions running are not touched. The shutdown
// drains with a 503 while load balancers learn from /readyz to send new
// clients elsewhere; a node handing its new sessions to another one can
// drain with a redirect.
func (t *Sessions) Drain(refusal *Error) { t.refusal.Store(refusal) }

// Refusal returns a copy of the refusal Drain set, nil while sessions are
// admitted: a handler asks before work that a refused session would waste
// (Reserve refuses anyway). A nil *Sessions (a handler built without a
// session table, as in package tests) refuses nothing.
func (t *Sessions) Refusal() error {
	if t == nil {
		return nil
	}
	r := t.refusal.Load()
	if r == nil {
		return nil
	}
	c := *r
	return &c
}

// Reserve allocates a new session id for c, or refuses it with an *Error:
// Drain's refusal while draining; 429 when c's address holds its share of
// sessions or of sessions still connecting, 503 when the server holds its
// maximum of either or the stream its readers; each with Retry-After. The
// caller must either Set the session or Remove the id.
func (t *Sessions) Reserve(c Claim) (string, error) {
	if err := t.Refusal(); err != nil {
		return "", err
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b[:])
	if t.node != "" {
		id += sessionNodeSep + t.node
	}
	addr := addrlimit.AddrOf(c.Peer)
	t.mu.Lock()
	defer t.mu.Unlock()
	release, err := t.all.Acquire(addr)
	if err != nil {
		if errors.Is(err, addrlimit.ErrPerAddr) {
			return "", t.refuse(LimitSessionsPerAddress, http.StatusTooManyRequests, retryPerClient,
				"your address holds %d WebRTC sessions, the limit per address: end one first", t.lim.SessionsPerAddress)
		}
		return "", t.refuse(LimitSessions, http.StatusServiceUnavailable, retryPerClient,
			"the server is at its WebRTC session limit (%d), try again later", t.lim.Sessions)
	}
	releasePending, err := t.pending.Acquire(addr)
	if err != nil {
		release()
		// Pending slots free within the connect timeout.
		if errors.Is(err, addrlimit.ErrPerAddr) {
			return "", t.refuse(LimitPendingPerAddress, http.StatusTooManyRequests, t.lim.ConnectTimeout,
				"your address has %d WebRTC sessions still connecting, the limit per address: complete or end them first", t.lim.PendingPerAddress)
		}
		return "", t.refuse(LimitPending, http.StatusServiceUnavailable, t.lim.ConnectTimeout,
			"the server has %d WebRTC sessions connecting, its limit, try again later", t.lim.Pending)
	}
	if c.Joins != nil {
		max := c.MaxReaders
		if max <= 0 {
			max = t.lim.ReadersPerStream
		}
		if err := c.Joins.CheckReaders(max, t.joining[c.Joins]); err != nil {
			release()
			releasePending()
			return "", t.refuse(LimitReadersPerStream, http.StatusServiceUnavailable, retryPerClient,
				"stream %q is at its limit of %d readers, try again later", c.Joins.Path(), max)
		}
		t.joining[c.Joins]++
	}
	e := &entry{release: release, releasePending: releasePending, joins: c.Joins}
	e.connect = time.AfterFunc(t.lim.ConnectTimeout, func() { t.expire(id, e) })
	t.byID[id] = e
	return id, nil
}

// refuse counts a refusal by limit and returns its error.
func (t *Sessions) refuse(l Limit, status int, retry time.Duration, format string, args ...any) *Error {
	t.refused[l].Add(1)
	err := Errorf(status, format, args...)
	err.RetryAfter = retry
	return err
}

// Set stores s under a reserved id. It reports false, storing nothing,
// when the id is not reserved (any more): the session ended, or did not
// connect in time, before it was stored. The caller must then end s.
func (t *Sessions) Set(id string, s Session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byID[id]
	if e == nil || e.s != nil {
		return false
	}
	e.s = s
	return true
}

// Connected tells the table that session id has connected (ICE and DTLS):
// it no longer counts as pending and is not timed out. Later calls, and
// calls for an id not in the table, do nothing.
func (t *Sessions) Connected(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.byID[id]; e != nil {
		t.connectedLocked(e)
	}
}

func (t *Sessions) connectedLocked(e *entry) {
	if e.connect == nil {
		return
	}
	e.connect.Stop()
	e.connect = nil
	e.releasePending()
	if e.joins != nil {
		if t.joining[e.joins]--; t.joining[e.joins] <= 0 {
			delete(t.joining, e.joins)
		}
		e.joins = nil
	}
}

// answered restarts the connect timer of session id, whose offer the
// bridge made, at the client's answer: it has Limits.ConnectTimeout from
// there to connect, as a session that answered has from the POST (the
// wait for the answer was bounded by the same timeout). A timer that has
// fired already ends the session as it would have.
func (t *Sessions) answered(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.byID[id]; e != nil && e.connect != nil && e.connect.Stop() {
		e.connect.Reset(t.lim.ConnectTimeout)
	}
}

// Remove forgets id and frees its slots (the session calls it when it
// ends). Calling it again, or for an unknown id, does nothing.
func (t *Sessions) Remove(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.byID[id]; e != nil {
		t.removeLocked(id, e)
	}
}

// removeLocked forgets id, reserved as e, and frees its slots.
func (t *Sessions) removeLocked(id string, e *entry) {
	delete(t.byID, id)
	t.connectedLocked(e)
	e.release()
}

// expire ends session id, reserved as e, if it has not connected within
// the connect timeout. A session not stored yet is only forgotten: its
// handler's Set fails and the handler ends it.
func (t *Sessions) expire(id string, e *entry) {
	defer panics.Recover("webrtc sessions", t.log, func() { t.Remove(id) })
	t.mu.Lock()
	if t.byID[id] != e || e.connect == nil {
		t.mu.Unlock()
		return
	}
	s := e.s
	t.mu.Unlock()
	t.timedOut.Add(1)
	if s != nil {
		s.Close(fmt.Sprintf("ICE/DTLS did not complete within %v", t.lim.ConnectTimeout))
	}
	t.Remove(id)
}

// Len returns the number of sessions, reserved ones included.
func (t *Sessions) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// Pending returns the number of sessions not connected yet.
func (t *Sessions) Pending() int {
	n, _ := t.pending.Len(netip.Addr{})
	return n
}

// Refused returns how many claims Reserve refused, by the limit that
// refused them.
func (t *Sessions) Refused() map[Limit]uint64 {
	out := make(map[Limit]uint64, numLimits)
	for l := range numLimits {
		out[l] = t.refused[l].Load()
	}
	return out
}

// TimedOut returns how many sessions were ended for not connecting within
// Limits.ConnectTimeout.
func (t *Sessions) TimedOut() uint64 { return t.timedOut.Load() }

// CloseAll ends every session (at shutdown, after Drain). An id reserved
// but not stored yet is forgotten, so its handler's Set fails and the
// handler ends that session itself.
func (t *Sessions) CloseAll(reason string) {
	t.mu.Lock()
	all := make([]Session, 0, len(t.byID))
	for id, e := range t.byID {
		if e.s != nil {
			all = append(all, e.s)
		} else {
			t.removeLocked(id, e)
		}
	}
	t.mu.Unlock()
	for _, s := range all {
		s.Close(reason)
	}
}

// Location returns the absolute URL of session id for request r, on the
// scheme and host the client used (forwarded.Scheme; r.Host, which a
// trusted proxy's headers set). Absolute, because some clients (OBS)
// mishandle relative ones.
func Location(r *http.Request, id string) string {
	return forwarded.Scheme(r) + "://" + r.Host + SessionPathPrefix + id
}

// Register adds the session resource routes to mux: PATCH (trickle ICE,
// ICE restart), DELETE, and GET/HEAD (204, for clients that probe). Other
// methods get 405 with Allow from the ServeMux; OPTIONS is CORS's.
func (t *Sessions) Register(mux *http.ServeMux) {
	mux.HandleFunc("DELETE "+SessionPathPrefix+"{id}", t.serveDelete)
	mux.HandleFunc("PATCH "+SessionPathPrefix+"{id}", t.servePatch)
	mux.HandleFunc("GET "+SessionPathPrefix+"{id}", t.serveGet)
}

func (t *Sessions) lookup(w http.ResponseWriter, r *http.Request) (Session, bool) {
	var s Session
	t.mu.Lock()
	if e := t.byID[r.PathValue("id")]; e != nil {
		s = e.s
	}
	t.mu.Unlock()
	if s == nil {
		WriteError(w, Errorf(http.StatusNotFound, "no such session"))
		return nil, false
	}
	return s, true
}

// serveDelete ends a session: 200 whatever If-Match says (RFC 9725 section
// 4.3.1: sessions MUST ignore entity-tags where no ICE session has to be
// matched, as in DELETE).
func (t *Sessions) serveDelete(w http.ResponseWriter, r *http.Request) {
	s, ok := t.lookup(w, r)
	if !ok {
		return
	}
	s.Close("client sent DELETE")
	w.WriteHeader(http.StatusOK)
}

// serveGet answers 204 with the current entity-tag for a live session.
func (t *Sessions) serveGet(w http.ResponseWriter, r *http.Request) {
	s, ok := t.lookup(w, r)
	if !ok {
		return
	}
	w.Header().Set("ETag", s.ETag())
	w.WriteHeader(http.StatusNoContent)
}

// servePatch applies an application/trickle-ice-sdpfrag PATCH (RFC 9725
// section 4.3, draft-ietf-wish-whep section 4.3):
//
//	404  no such session
//	     (an application/sdp PATCH is an SDP answer: see serveAnswer)
//	409  a session whose offer the bridge made has no answer yet
//	415  another Content-Type (with Accept-Patch, as RFC 5789 section 2.2 asks)
//	413  a body over MaxSdpfragSize
//	412  If-Match names neither the current entity-tag nor "*" (RFC 9725
//	     section 4.3.1: "412 Precondition Failed" for a non-matching
//	     entity-tag; checked before the body, RFC 9110 section 13.2.1)
//	400  the body is not an SDP fragment (an a=candidate line that does not
//	     parse included: the message names it), or an ICE restart lacks
//	     ice-pwd
//	428  an ICE restart (an ice-ufrag other than the current one) without
//	     If-Match: RFC 9725 section 4.3.3 has restarts carry If-Match: "*",
//	     and section 4.3.1 answers a missing entity-tag with "428
//	     Precondition Required" (RFC 6585 section 3)
//	200  ICE restarted: the new sdpfrag and, in ETag, the new entity-tag
//	     (RFC 9725 section 4.3.3); If-Match may be *, "*" or the current tag
//	204  candidates trickled, no body and no ETag (RFC 9725 section 4.3.2);
//	     candidates that parse but the bridge cannot or may not use (TCP,
//	     an address it never probes, over the session's candidate limit)
//	     are dropped silently, and counted (ICESession.Trickle). A trickle without
//	     If-Match is accepted although section 4.3.1 says 428: clients
//	     (whip-whep.js) send them, and the ufrag in the body already ties
//	     them to the ICE session.
func (t *Sessions) servePatch(w http.ResponseWriter, r *http.Request) {
	s, ok := t.lookup(w, r)
	if !ok {
		return
	}
	w.Header().Set("Accept-Patch", SdpfragType)
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/sdp" {
		t.serveAnswer(w, r, s)
		return
	}
	body, err := readBody(w, r, SdpfragType, MaxSdpfragSize, "SDP fragment")
	if err != nil {
		WriteError(w, err)
		return
	}
	present, match := ifMatch(r.Header.Values("If-Match"), s.ETag())
	if present && !match {
		WriteError(w, Errorf(http.StatusPreconditionFailed, "If-Match does not name the current ICE session (its entity-tag is %s)", s.ETag()))
		return
	}
	frag, err := ParseSdpfrag(body)
	if err != nil {
		WriteError(w, Errorf(http.StatusBadRequest, "malformed SDP fragment: %v", err))
		return
	}
	log := t.log.With("session", LogID(r.PathValue("id")), "peer", r.RemoteAddr)
	if at, ok := s.(answerTaker); ok {
		// Before the answer there is no ICE session to trickle to or restart.
		if err := at.awaitingAnswer(); err != nil {
			WriteError(w, err)
			return
		}
	}
	if frag.ICEUfrag != "" && frag.ICEUfrag != s.RemoteICEUfrag() {
		if !present {
			WriteError(w, Errorf(http.StatusPreconditionRequired, `new ICE credentials (an ICE restart) need If-Match: "*"`))
			return
		}
		if frag.ICEPwd == "" {
			WriteError(w, Errorf(http.StatusBadRequest, "an ICE restart needs both a=ice-ufrag and a=ice-pwd"))
			return
		}
		answer, etag, err := s.RestartICE(frag)
		if err != nil {
			t.patchLog.Log(log, r, "ICE restart refused", err)
			WriteError(w, err)
			return
		}
		w.Header().Set("Content-Type", SdpfragType)
		w.Header().Set("ETag", etag)
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, answer)
		return
	}
	if err := s.Trickle(frag); err != nil {
		t.patchLog.Log(log, r, "trickle refused", err)
		WriteError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// answerTaker is a Session that may take the client's SDP answer to an
// offer of the bridge's (ICESession.SetAnswer).
type answerTaker interface {
	SetAnswer(answer string) error
	// awaitingAnswer is a 409 while the session waits for the answer.
	awaitingAnswer() error
}

// serveAnswer applies an application/sdp PATCH: the client's answer to the
// offer of a session created in WHEP's server-offer mode (a POST without a
// body). 204 when set, after which the session has Limits.ConnectTimeout
// to connect; 422 on a session that answered the client's offer, 409 for
// a second answer, 412 for an If-Match that does not match, 413 and 400
// for a body too large or refused (see ICESession.SetAnswer).
func (t *Sessions) serveAnswer(w http.ResponseWriter, r *http.Request, s Session) {
	id := r.PathValue("id")
	log := t.log.With("session", LogID(id), "peer", r.RemoteAddr)
	at, ok := s.(answerTaker)
	if !ok {
		WriteError(w, Errorf(http.StatusUnprocessableEntity, "this session takes no SDP answer, only %s PATCHes", SdpfragType))
		return
	}
	body, err := readBody(w, r, "application/sdp", MaxSDPSize, "SDP answer")
	if err != nil {
		WriteError(w, err)
		return
	}
	if present, match := ifMatch(r.Header.Values("If-Match"), s.ETag()); present && !match {
		WriteError(w, Errorf(http.StatusPreconditionFailed, "If-Match does not name the current ICE session (its entity-tag is %s)", s.ETag()))
		return
	}
	if err := at.SetAnswer(body); err != nil {
		t.patchLog.Log(log, r, "SDP answer refused", err)
		WriteError(w, err)
		return
	}
	t.answered(id)
	w.WriteHeader(http.StatusNoContent)
}

// LogID is the form of a WHIP or WHEP session id that log lines carry
// (under "session") and the admin API lists beside the id (log_id): its
// first 8 characters, 32 random bits, enough to tell apart the sessions of
// one log. The whole id is the capability of the session's URL (whoever
// knows it may DELETE or PATCH the session) and is never logged.
func LogID(id string) string {
	if len(id) > logIDLen {
		return id[:logIDLen]
	}
	return id
}

// logIDLen is LogID's length.
const logIDLen = 8

// ifMatch evaluates If-Match header values against the current strong
// entity-tag etag (quoted), as RFC 9110 section 13.1.1 says: "*" matches
// (quoted or not, see below), a list matches if one of its entity-tags does by strong comparison (weak
// tags never do). present is false when there is no If-Match at all; a
// malformed field does not match.
func ifMatch(values []string, etag string) (present, match bool) {
	for _, v := range values {
		rest := v
		for {
			rest = strings.TrimLeft(rest, " \t,")
			if rest == "" {
				break
			}
			present = true
			switch {
			case rest[0] == '*':
				match = true
				rest = rest[1:]
				continue
			case strings.HasPrefix(rest, "W/\""):
				rest = rest[2:]
				end := strings.IndexByte(rest[1:], '"')
				if end < 0 {
					return present, match
				}
				rest = rest[end+2:]
				continue
			case rest[0] == '"':
				end := strings.IndexByte(rest[1:], '"')
				if end < 0 {
					return present, match
				}
				// "*" quoted is the wildcard too: RFC 9725's and the WHEP
				// draft's examples write If-Match: "*" and clients copy them.
				// Our entity-tags are hex, so no session's tag is "*".
				if tag := rest[:end+2]; tag == etag || tag == `"*"` {
					match = true
				}
				rest = rest[end+2:]
				continue
			}
			// Not an entity-tag: skip to the next list element.
			i := strings.IndexByte(rest, ',')
			if i < 0 {
				break
			}
			rest = rest[i:]
		}
	}
	return present, match
}
