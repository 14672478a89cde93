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
	"strings"
	"sync"

	"github.com/pion/webrtc/v4"
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
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Msg) }

// Errorf returns an *Error with a formatted message.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
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
	if he.Status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		// A full server: clients back off instead of hammering it.
		w.Header().Set("Retry-After", "10")
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

// BearerToken returns the token of an "Authorization: Bearer" header, or "".
func BearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// CORS answers OPTIONS (preflights and plain ones alike, never requiring
// auth: browsers send no credentials on preflights) with 204, the methods
// the resource allows (Allow, Access-Control-Allow-Methods) and what it
// accepts: Accept-Post: application/sdp on endpoints (RFC 9725 section 4.2,
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
			w.WriteHeader(http.StatusNoContent)
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
// the SDP answer.
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
// unguessable id. It serves DELETE on SessionPathPrefix + id. Safe for
// concurrent use; create it with NewSessions.
type Sessions struct {
	log *slog.Logger
	max int

	mu   sync.Mutex
	byID map[string]Session // guarded by mu
}

// NewSessions returns a table that holds at most max sessions (0 = 1000).
func NewSessions(max int, log *slog.Logger) *Sessions {
	if max <= 0 {
		max = 1000
	}
	if log == nil {
		log = slog.Default()
	}
	return &Sessions{log: log, max: max, byID: make(map[string]Session)}
}

// ErrFull is returned by Reserve when the server holds its maximum number
// of sessions.
var ErrFull = Errorf(http.StatusServiceUnavailable, "server is at its session limit, try again later")

// Reserve allocates a new session id. The caller must either Set the
// session or Remove the id.
func (t *Sessions) Reserve() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b[:])
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.byID) >= t.max {
		return "", ErrFull
	}
	t.byID[id] = nil
	return id, nil
}

// Set stores s under a reserved id.
func (t *Sessions) Set(id string, s Session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byID[id] = s
}

// Remove forgets id (the session calls it when it ends).
func (t *Sessions) Remove(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byID, id)
}

// Len returns the number of sessions, reserved ones included.
func (t *Sessions) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// CloseAll ends every session (at shutdown).
func (t *Sessions) CloseAll(reason string) {
	t.mu.Lock()
	all := make([]Session, 0, len(t.byID))
	for _, s := range t.byID {
		if s != nil {
			all = append(all, s)
		}
	}
	t.mu.Unlock()
	for _, s := range all {
		s.Close(reason)
	}
}

// Location returns the absolute URL of session id for request r. Absolute,
// because some clients (OBS) mishandle relative ones.
func Location(r *http.Request, id string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + SessionPathPrefix + id
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
	t.mu.Lock()
	s := t.byID[r.PathValue("id")]
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
//	415  another Content-Type (with Accept-Patch, as RFC 5789 section 2.2 asks)
//	413  a body over MaxSdpfragSize
//	412  If-Match names neither the current entity-tag nor "*" (RFC 9725
//	     section 4.3.1: "412 Precondition Failed" for a non-matching
//	     entity-tag; checked before the body, RFC 9110 section 13.2.1)
//	400  the body is not an SDP fragment, or an ICE restart lacks ice-pwd
//	428  an ICE restart (an ice-ufrag other than the current one) without
//	     If-Match: RFC 9725 section 4.3.3 has restarts carry If-Match: "*",
//	     and section 4.3.1 answers a missing entity-tag with "428
//	     Precondition Required" (RFC 6585 section 3)
//	200  ICE restarted: the new sdpfrag and, in ETag, the new entity-tag
//	     (RFC 9725 section 4.3.3); If-Match may be "*" or the current tag
//	204  candidates trickled, no body and no ETag (RFC 9725 section 4.3.2);
//	     unusable candidates are dropped silently. A trickle without
//	     If-Match is accepted although section 4.3.1 says 428: clients
//	     (whip-whep.js) send them, and the ufrag in the body already ties
//	     them to the ICE session.
func (t *Sessions) servePatch(w http.ResponseWriter, r *http.Request) {
	s, ok := t.lookup(w, r)
	if !ok {
		return
	}
	w.Header().Set("Accept-Patch", SdpfragType)
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
	log := t.log.With("session", shortID(r.PathValue("id")), "peer", r.RemoteAddr)
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
			log.Warn("ICE restart failed", "err", err)
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
		log.Info("trickle refused", "err", err)
		WriteError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// ifMatch evaluates If-Match header values against the current strong
// entity-tag etag (quoted), as RFC 9110 section 13.1.1 says: "*" matches, a
// list matches if one of its entity-tags does by strong comparison (weak
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
				if rest[:end+2] == etag {
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
