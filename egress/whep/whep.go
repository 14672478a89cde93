// Package whep serves WHEP (draft-ietf-wish-whep): a viewer POSTs an SDP
// offer to /whep/{path} and gets a PeerConnection that plays the stream
// published at path. Media leaves as RTP packetized once per track by the
// hub's "rtp" processor; per viewer only SSRC, payload type, sequence
// numbers, the timestamp offset and SRTP differ.
package whep

import (
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/ratelog"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/transcode"
)

// Config configures a Handler. Registry, Engine, Sessions and Authorize are
// required.
type Config struct {
	Registry *media.Registry
	Engine   *rtc.Engine
	Sessions *rtc.Sessions
	// Authorize admits viewers: it gets Action Read, Protocol WHEP, the
	// path, the bearer token as Credential ("" if none) and the peer's
	// address; the session logs its Grant's route. See servePost for the
	// answers to its refusals.
	Authorize access.Authorizer
	// Locate finds the stream an admitted viewer plays, starting an
	// on-demand source or waiting for tracks as the node decides; nil
	// means access.Local(Registry, defaultLocateWait).
	Locate access.Locator
	Log    *slog.Logger
	// ConnectTimeout bounds ICE+DTLS after the answer; 0 means 20 s. The
	// sessions table ends a session that has not connected sooner
	// (rtc.Limits.ConnectTimeout).
	ConnectTimeout time.Duration
	// MaxReaders returns the route's limit of readers of the stream at
	// path (max_readers); nil or 0 means the sessions table's
	// (rtc.Limits.ReadersPerStream).
	MaxReaders func(path string) int
	// RetransmitPercent is each viewer's NACK resend budget per track, in
	// percent of the track's bitrate (rtc.OutTrack.SetRetransmitPercent);
	// 0 means rtc.DefaultRetransmitPercent.
	RetransmitPercent int
	// OpusBitrate returns the bitrate (bit/s) of Opus transcoded from AAC
	// for the stream at path; nil or 0 means transcode.DefaultOpusBitrate.
	OpusBitrate func(path string) int
	// BFrames returns the route's B-frame policy for path: "reencode"
	// (also when nil), "passthrough" or "reject".
	BFrames func(path string) string
	// Reencoders caps the streams re-encoded at once ("reencode" above):
	// over it, viewers of another stream are refused as with "reject".
	// Share one per process; nil means a cap of this handler's own with
	// the default size (transcode.DefaultReencoders).
	Reencoders *transcode.ReencodeSlots
	// SendDelay, when set, is told the delay the bridge added to each live
	// unit sent to a viewer (see rtc.OutTrack.SetDelayObserver).
	SendDelay func(video bool, d time.Duration)
}

// Handler serves POST /whep/{path...}. Session resources (PATCH for trickle
// ICE and ICE restarts, DELETE) are served by the shared rtc.Sessions table.
type Handler struct {
	cfg Config
	log *slog.Logger
	// bframesLogged holds the live streams whose B-frame decision was
	// logged; an entry goes when its stream ends.
	bframesLogged sync.Map // *media.Stream -> bool
	// pumps send the viewers' units.
	pumps pumps
	// reencodeRefusals logs viewers refused for want of a re-encoder, one
	// line per stream per interval.
	reencodeRefusals ratelog.Limiter
	// refusals logs refused POSTs, one line per client per interval.
	refusals rtc.RefusalLog
}

// NewHandler returns a WHEP handler.
func NewHandler(cfg Config) *Handler {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Locate == nil {
		cfg.Locate = access.Local(cfg.Registry, defaultLocateWait)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 20 * time.Second
	}
	if cfg.Reencoders == nil {
		cfg.Reencoders = &transcode.ReencodeSlots{}
	}
	return &Handler{cfg: cfg, log: cfg.Log.With("component", "whep")}
}

// Register adds the WHEP endpoint to mux: POST creates a viewer session,
// GET and HEAD answer 204 (rtc.RegisterEndpoint).
func (h *Handler) Register(mux *http.ServeMux) {
	rtc.RegisterEndpoint(mux, "/whep/", h.servePost)
}

// servePost creates a viewer session. With ?preview=1 and the admin API
// token as bearer token (api.token), the viewer is the dashboard's muted
// preview (access.Request.Preview): admitted on any route WHEP may read,
// private ones too, listed as a "preview" session, and not counted as a
// reader (media.ReaderOptions.Uncounted: out of the stream's reader
// count, its max_readers and the reader metrics). Refusals, each with a text/plain
// reason (and Retry-After on 429 and 503):
//
//	400  the path breaks the stream path rule (internal/streampath), the
//	     offer cannot receive the stream, or the body is empty but has a
//	     Content-Type (without one, an empty POST gets the bridge's offer:
//	     201 with the offer, Location and ETag; the viewer PATCHes its
//	     answer, see wantsOffer)
//	307  *access.Elsewhere: the stream is served by another node, whose
//	     URL is the Location
//	401  access.ErrBadKey, with WWW-Authenticate: Bearer (with ?preview=1:
//	     the bearer token is not the admin API's token)
//	404  any other refusal of Authorize (no route serves WHEP at path), or
//	     no stream at path (access.ErrNoStream from Locate)
//	406  the stream has B-frames and the route rejects them
//	413, 415  the offer is too large, or not application/sdp
//	429  the client's address holds its share of sessions, or of sessions
//	     still connecting (rtc.Limits)
//	503  the server holds its maximum of sessions or of sessions
//	     connecting, or the stream its readers, or it is draining
//	     (rtc.Sessions.Drain: shutting down)
func (h *Handler) servePost(w http.ResponseWriter, r *http.Request) {
	path := r.PathValue("path")
	if err := rtc.CheckPath(path); err != nil {
		// Not logged with the path: it may be kilobytes of anything.
		h.refusals.Log(h.log.With("peer", r.RemoteAddr), r, "viewer refused", err)
		rtc.WriteError(w, err)
		return
	}
	log := h.log.With("stream", path, "peer", r.RemoteAddr)
	answer, id, etag, err := h.newSession(w, r, path, log)
	if err != nil {
		h.refusals.Log(log, r, "viewer refused", err)
		rtc.WriteError(w, err)
		return
	}
	rtc.WriteAnswer(w, h.cfg.Sessions.Location(r, id), etag, answer, h.cfg.Engine.ICEServers(id))
}

// newSession answers the viewer's offer, or makes the bridge's when the
// POST has none (wantsOffer), and returns the session's id. The
// session is in the sessions table, then running, when it returns.
func (h *Handler) newSession(w http.ResponseWriter, r *http.Request, path string, log *slog.Logger) (answer, sessionID, etag string, err error) {
	if err := h.cfg.Sessions.Refusal(); err != nil {
		return "", "", "", err // draining: before Locate starts a pull for nobody
	}
	token := rtc.BearerToken(r)
	preview := r.URL.Query().Get("preview") == "1"
	grant, err := h.cfg.Authorize(access.Request{Action: access.Read, Protocol: access.WHEP, Path: path, Credential: token, Remote: r.RemoteAddr, Preview: preview,
		Redirect: r.URL.Query().Get(access.RedirectParam)})
	if err != nil {
		return "", "", "", refusal(err, path, token)
	}
	var raw string
	if !wantsOffer(r) {
		if raw, err = readOffer(w, r); err != nil {
			return "", "", "", err
		}
	}
	stream, err := h.cfg.Locate(r.Context(), path)
	if err != nil {
		return "", "", "", refusal(err, path, token)
	}
	var off *offer // nil: the bridge offers
	if raw != "" {
		if off, err = parseOffer(raw); err != nil {
			return "", "", "", err
		}
	}
	claim := rtc.Claim{Peer: r.RemoteAddr}
	if !preview { // a preview is not a reader the stream's limit counts
		claim.Joins = stream
		if h.cfg.MaxReaders != nil {
			claim.MaxReaders = h.cfg.MaxReaders(path)
		}
	}
	id, err := h.cfg.Sessions.Reserve(claim)
	if err != nil {
		return "", "", "", err
	}
	s, answer, err := startSession(h, stream, off, raw, id, grant.Logger(log.With("session", rtc.LogID(id))))
	if err != nil {
		h.cfg.Sessions.Remove(id)
		return "", "", "", err
	}
	s.peer, s.preview = r.RemoteAddr, preview
	// In the table first, then running: the session removes itself from
	// the table when it ends, which must come after Set.
	stored := h.cfg.Sessions.Set(id, s)
	go s.run()
	if !stored {
		s.Close("ICE/DTLS did not complete in time")
		return "", "", "", rtc.Errorf(http.StatusServiceUnavailable, "the session timed out before it was answered, try again")
	}
	return answer, id, s.ETag(), nil
}

// wantsOffer reports whether r asks for the bridge's offer (the server-offer
// mode of the early WHEP drafts, "POST with intent to receive an offer
// back", which some players still use): no body (Content-Length: 0) and no
// Content-Type. The viewer then PATCHes its answer as application/sdp.
func wantsOffer(r *http.Request) bool {
	return r.ContentLength == 0 && len(r.Header.Values("Content-Type")) == 0
}

// readOffer reads the viewer's SDP offer: an empty body with a
// Content-Type is a 400 that names the server-offer mode.
func readOffer(w http.ResponseWriter, r *http.Request) (string, error) {
	if r.ContentLength == 0 {
		return "", rtc.Errorf(http.StatusBadRequest, "empty SDP offer; to get the bridge's offer instead, POST without a body and without Content-Type")
	}
	return rtc.ReadSDP(w, r)
}

// defaultLocateWait bounds the wait of a Handler without Config.Locate
// for a stream whose publisher has connected but whose tracks are not
// known yet: an encoder sends its parameter sets within its first second.
const defaultLocateWait = 5 * time.Second

// refusal answers an Authorize or Locate error as WHEP clients expect (see
// servePost).
func refusal(err error, path, token string) error {
	var he *rtc.Error
	switch e := access.ElsewhereOf(err); {
	case errors.As(err, &he):
		return he
	case e != nil:
		return rtc.Redirect(e.Location, "the stream %q is served by another node", path)
	case errors.Is(err, access.ErrBadKey) && token == "":
		return rtc.Errorf(http.StatusUnauthorized, "this stream needs a bearer token (Authorization: Bearer ...)")
	case errors.Is(err, access.ErrBadKey):
		return rtc.Errorf(http.StatusUnauthorized, "wrong bearer token")
	case errors.Is(err, access.ErrNoStream):
		return rtc.Errorf(http.StatusNotFound, "%v", err)
	default:
		return rtc.Errorf(http.StatusNotFound, "no route serves WHEP playback at %q", path)
	}
}
