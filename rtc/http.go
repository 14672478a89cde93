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
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(he.Status)
	_, _ = io.WriteString(w, he.Msg+"\n")
}

// ReadSDP checks that r carries an application/sdp body of at most
// MaxSDPSize bytes and returns it.
func ReadSDP(w http.ResponseWriter, r *http.Request) (string, error) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/sdp" {
		if ct == "" {
			ct = "none"
		}
		return "", Errorf(http.StatusUnsupportedMediaType, "Content-Type must be application/sdp (got %s)", ct)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxSDPSize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", Errorf(http.StatusRequestEntityTooLarge, "SDP offer is larger than %d bytes", MaxSDPSize)
		}
		return "", Errorf(http.StatusBadRequest, "reading SDP offer: %v", err)
	}
	if len(body) == 0 {
		return "", Errorf(http.StatusBadRequest, "empty SDP offer")
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

// CORS answers preflight requests (never requiring auth: browsers send
// no credentials on them) and adds the headers WHIP/WHEP clients on other
// origins need to read our responses.
func CORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Expose-Headers", "Location, ETag, Link, Accept-Post, Accept-Patch, Access-Control-Allow-Methods")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "GET, POST, PATCH, DELETE, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match")
			h.Set("Access-Control-Max-Age", "86400")
			if strings.HasPrefix(r.URL.Path, SessionPathPrefix) {
				h.Set("Accept-Patch", "application/trickle-ice-sdpfrag")
			} else {
				h.Set("Accept-Post", "application/sdp")
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
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

// Session is a WHIP or WHEP session resource.
type Session interface {
	// Close ends the session and releases everything it holds; safe to
	// call more than once and from any goroutine.
	Close(reason string)
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

// Register adds the session resource routes to mux.
func (t *Sessions) Register(mux *http.ServeMux) {
	mux.HandleFunc("DELETE "+SessionPathPrefix+"{id}", t.serveDelete)
	mux.HandleFunc("PATCH "+SessionPathPrefix+"{id}", t.servePatch)
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

// serveDelete ends a session: 200 whatever If-Match says (the client wants
// it gone).
func (t *Sessions) serveDelete(w http.ResponseWriter, r *http.Request) {
	s, ok := t.lookup(w, r)
	if !ok {
		return
	}
	s.Close("client sent DELETE")
	w.WriteHeader(http.StatusOK)
}

// servePatch: trickle ICE and ICE restarts are not supported yet; RFC 9725
// section 4.3.1 has servers without trickle answer 405 so clients stop
// trying.
func (t *Sessions) servePatch(w http.ResponseWriter, r *http.Request) {
	if _, ok := t.lookup(w, r); !ok {
		return
	}
	w.Header().Set("Allow", "DELETE, OPTIONS")
	WriteError(w, Errorf(http.StatusMethodNotAllowed, "trickle ICE is not supported; send all candidates in the offer"))
}
