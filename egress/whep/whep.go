// Package whep serves WHEP (draft-ietf-wish-whep): a viewer POSTs an SDP
// offer to /whep/{path} and gets a PeerConnection that plays the stream
// published at path. Media leaves as RTP packetized once per track by the
// hub's "rtp" processor; per viewer only SSRC, payload type, sequence
// numbers, the timestamp offset and SRTP differ.
package whep

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

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
	// Authorize decides whether path may be played with token (the bearer
	// token the client sent, "" if none). It returns nil, or an *rtc.Error:
	// 404 when no route serves WHEP at path, 401 for a missing/wrong token.
	Authorize func(path, token string) error
	Log       *slog.Logger
	// ReadyTimeout bounds how long a POST waits for a stream whose publisher
	// has connected but whose tracks are not known yet; 0 means 5 s.
	ReadyTimeout time.Duration
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
	// Demand, when set, is called for a path with no stream; it starts the
	// route's on-demand source if there is one and reports whether it did,
	// in which case the POST waits (up to ReadyTimeout) for the stream.
	Demand func(path string) bool
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
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 5 * time.Second
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

// servePost creates a viewer session. Refusals, each with a text/plain
// reason (and Retry-After on 429 and 503):
//
//	400  the path breaks the stream path rule (internal/streampath), or
//	     the offer cannot receive the stream
//	401, 404  refused by Authorize; 404 also for no stream at path
//	406  the stream has B-frames and the route rejects them
//	413, 415  the offer is too large, or not application/sdp
//	429  the client's address holds its share of sessions, or of sessions
//	     still connecting (rtc.Limits)
//	503  the server holds its maximum of sessions or of sessions
//	     connecting, or the stream its readers
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
	rtc.WriteAnswer(w, rtc.Location(r, id), etag, answer, h.cfg.Engine.ICEServers(id))
}

// newSession answers the viewer's offer and returns the session's id. The
// session is in the sessions table, then running, when it returns.
func (h *Handler) newSession(w http.ResponseWriter, r *http.Request, path string, log *slog.Logger) (answer, sessionID, etag string, err error) {
	if err := h.cfg.Authorize(path, rtc.BearerToken(r)); err != nil {
		return "", "", "", err
	}
	raw, err := rtc.ReadSDP(w, r)
	if err != nil {
		return "", "", "", err
	}
	stream, err := h.waitStream(r.Context(), path)
	if err != nil {
		return "", "", "", err
	}
	off, err := parseOffer(raw)
	if err != nil {
		return "", "", "", err
	}
	claim := rtc.Claim{Peer: r.RemoteAddr, Joins: stream}
	if h.cfg.MaxReaders != nil {
		claim.MaxReaders = h.cfg.MaxReaders(path)
	}
	id, err := h.cfg.Sessions.Reserve(claim)
	if err != nil {
		return "", "", "", err
	}
	s, answer, err := startSession(h, stream, off, raw, id, log.With("session", id[:8]))
	if err != nil {
		h.cfg.Sessions.Remove(id)
		return "", "", "", err
	}
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

// waitStream returns the stream at path once its tracks are known.
func (h *Handler) waitStream(ctx context.Context, path string) (*media.Stream, error) {
	t := time.NewTimer(h.cfg.ReadyTimeout)
	defer t.Stop()
	s, ok := h.cfg.Registry.Get(path)
	if !ok && h.cfg.Demand != nil && h.cfg.Demand(path) {
		// An on-demand source is starting: give it until the deadline.
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for !ok {
			select {
			case <-tick.C:
				s, ok = h.cfg.Registry.Get(path)
			case <-t.C:
				return nil, rtc.Errorf(http.StatusNotFound, "the on-demand source of %q did not start within %v", path, h.cfg.ReadyTimeout)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	if !ok {
		return nil, rtc.Errorf(http.StatusNotFound, "no stream is being published at %q", path)
	}
	select {
	case <-s.Ready():
		return s, nil
	case <-s.Done():
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, rtc.Errorf(http.StatusNotFound, "stream %q has a publisher but no media yet", path)
}
