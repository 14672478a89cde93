// Package whip serves WHIP (RFC 9725): a publisher POSTs an SDP offer to
// /whip/{path} and its PeerConnection's H.264 and Opus tracks are published
// at path in the hub.
//
// Each unit written carries the RTP packets as they arrived (header
// extensions and padding stripped, timestamps moved to the stream clock),
// which WHEP viewers get without depacketizing; video units also carry the
// access unit as NAL units (reassembled from FU-A/STAP-A, normalised by
// transcode.H264Normalizer) for readers that need frames. A video unit
// whose packets were not all received carries no NAL units, and neither do
// the units after it up to the next IDR; the publisher is asked for one.
//
// The session resource (PATCH /sessions/{id} for trickle ICE and ICE
// restarts, DELETE) is served by the shared rtc.Sessions table.
//
// Refusals, each with a text/plain reason:
//
//	400  the path breaks the stream path rule (internal/streampath),
//	     empty included; the body is not an SDP offer, or it offers
//	     neither H.264 (packetization-mode=1; Baseline, Main or High) nor
//	     Opus to send (RFC 9725 leaves the code to the server; 400 says
//	     "fix the request")
//	307  *access.Elsewhere: the stream is published on another node,
//	     whose URL is the Location
//	401  access.ErrBadKey, with WWW-Authenticate: Bearer
//	403  access.ErrProtocolNotAllowed, or any other refusal of Authorize
//	404  access.ErrNoRoute
//	409  the path already has a publisher (media.ErrPublisherExists)
//	413  the offer is larger than rtc.MaxSDPSize
//	415  Content-Type is not application/sdp
//	429  the client's address holds its share of sessions, or of sessions
//	     still connecting (rtc.Limits), with Retry-After
//	503  the server holds its maximum of sessions, or of sessions
//	     connecting, or it is draining (rtc.Sessions.Drain: shutting
//	     down), with Retry-After
package whip

import (
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// Config configures a Handler. Registry, Engine and Sessions are required.
type Config struct {
	Registry *media.Registry
	Engine   *rtc.Engine
	Sessions *rtc.Sessions
	// Authorize admits publishers: it gets Action Publish, Protocol WHIP,
	// the path, the bearer token as Credential ("" if none) and the peer's
	// address; the session logs its Grant's route. Nil refuses everyone.
	Authorize access.Authorizer
	Log       *slog.Logger
}

// Handler serves POST /whip/{path...}.
type Handler struct {
	cfg Config
	log *slog.Logger
	// idleTimeout ends a session that received no RTP for that long (or
	// never connected); trackWait is how long after the first packet the
	// stream waits for the other expected track before it is declared
	// without it. NewHandler sets them; tests shorten them.
	idleTimeout time.Duration
	trackWait   time.Duration
	// refusals logs refused POSTs, one line per client per interval.
	refusals rtc.RefusalLog
}

// Timing defaults.
const (
	defaultIdleTimeout = 10 * time.Second
	// Browsers send a keyframe first and answer a PLI within a few frames;
	// 3 s leaves room for a slow encoder without holding viewers long.
	defaultTrackWait = 3 * time.Second
)

// NewHandler returns a WHIP handler.
func NewHandler(cfg Config) *Handler {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Handler{
		cfg:         cfg,
		log:         cfg.Log.With("component", "whip"),
		idleTimeout: defaultIdleTimeout,
		trackWait:   defaultTrackWait,
	}
}

// Register adds the WHIP endpoint to mux: POST publishes, GET and HEAD
// answer 204 (rtc.RegisterEndpoint).
func (h *Handler) Register(mux *http.ServeMux) {
	rtc.RegisterEndpoint(mux, "/whip/", h.servePost)
}

func (h *Handler) servePost(w http.ResponseWriter, r *http.Request) {
	path := r.PathValue("path")
	if err := rtc.CheckPath(path); err != nil {
		// Not logged with the path: it may be kilobytes of anything.
		h.refusals.Log(h.log.With("peer", r.RemoteAddr), r, "publish refused", err)
		rtc.WriteError(w, err)
		return
	}
	log := h.log.With("stream", path, "peer", r.RemoteAddr)
	s, answer, err := h.newSession(w, r, path, log)
	if err != nil {
		h.refusals.Log(log, r, "publish refused", err)
		rtc.WriteError(w, err)
		return
	}
	rtc.WriteAnswer(w, h.cfg.Sessions.Location(r, s.id), s.ETag(), answer, h.cfg.Engine.ICEServers(s.id))
}

// newSession admits the publisher, claims the path and answers the offer.
// The session is running and in the sessions table when it returns.
func (h *Handler) newSession(w http.ResponseWriter, r *http.Request, path string, log *slog.Logger) (*session, string, error) {
	grant, err := h.authorize(r, path, log)
	if err != nil {
		return nil, "", err
	}
	raw, err := rtc.ReadSDP(w, r)
	if err != nil {
		return nil, "", err
	}
	off, err := checkOffer(raw)
	if err != nil {
		return nil, "", err
	}
	id, err := h.cfg.Sessions.Reserve(rtc.Claim{Peer: r.RemoteAddr})
	if err != nil {
		return nil, "", err
	}
	pub, err := publish(h.cfg.Registry, path, "whip "+r.RemoteAddr)
	if err != nil {
		h.cfg.Sessions.Remove(id)
		if errors.Is(err, media.ErrPublisherExists) {
			return nil, "", rtc.Errorf(http.StatusConflict, "stream %q already has a publisher", path)
		}
		return nil, "", err
	}
	s, answer, err := startSession(h, pub, off, raw, id, grant.Logger(log.With("session", rtc.LogID(id))))
	if err != nil {
		pub.close()
		h.cfg.Sessions.Remove(id)
		return nil, "", err
	}
	s.peer = r.RemoteAddr
	stored := h.cfg.Sessions.Set(id, s)
	s.start() // after Set: the session removes itself when it ends
	if !stored {
		s.Close("ICE/DTLS did not complete in time")
		return nil, "", rtc.Errorf(http.StatusServiceUnavailable, "the session timed out before it was answered, try again")
	}
	s.log.Info("publish session created", "video", s.expectVideo, "audio", s.expectAudio)
	return s, answer, nil
}

// authorize asks the admission policy and turns its refusal into the
// HTTP error for the client. The token is never logged.
func (h *Handler) authorize(r *http.Request, path string, log *slog.Logger) (access.Grant, error) {
	if h.cfg.Authorize == nil {
		return access.Grant{}, rtc.Errorf(http.StatusForbidden, "publishing is not enabled on this server")
	}
	token := rtc.BearerToken(r)
	grant, err := h.cfg.Authorize(access.Request{Action: access.Publish, Protocol: access.WHIP, Path: path, Credential: token, Remote: r.RemoteAddr,
		Redirect: r.URL.Query().Get(access.RedirectParam)})
	if err == nil {
		return grant, nil
	}
	return access.Grant{}, refusal(err, path, token, log)
}

// refusal turns a refusal of Authorize into the HTTP error for the client.
func refusal(err error, path, token string, log *slog.Logger) error {
	var he *rtc.Error
	switch {
	case errors.As(err, &he): // the node's own answer (a cluster at its limit: 503)
		return he
	case access.ElsewhereOf(err) != nil:
		return rtc.Redirect(access.ElsewhereOf(err).Location, "the stream %q is published on another node", path)
	case errors.Is(err, access.ErrBadKey):
		if token == "" {
			return rtc.Errorf(http.StatusUnauthorized, "publishing at %q needs a bearer token (Authorization: Bearer ...)", path)
		}
		return rtc.Errorf(http.StatusUnauthorized, "wrong bearer token for %q", path)
	case errors.Is(err, access.ErrNoRoute):
		return rtc.Errorf(http.StatusNotFound, "no route accepts publishing at %q", path)
	case errors.Is(err, access.ErrProtocolNotAllowed):
		return rtc.Errorf(http.StatusForbidden, "the route for %q does not accept WHIP publishing", path)
	}
	log.Info("publish refused by policy", "err", err)
	return rtc.Errorf(http.StatusForbidden, "publishing at %q refused", path)
}
