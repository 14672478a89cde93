// Package whip is the WHIP egress: a Forwarder pushes one hub stream to a
// remote WHIP endpoint (RFC 9725) as a WHIP client, for as long as it runs.
//
// # Signalling
//
// The client POSTs an SDP offer (Content-Type: application/sdp, with
// "Authorization: Bearer <token>" when a token is configured) holding
// every ICE candidate (it waits for gathering, so no trickle is needed),
// and:
//   - follows 307 and 308 redirects, up to 5, with the same method and
//     body; 301, 302 and 303 are errors (net/http would re-send them as a
//     GET). The token goes only to the endpoint's host and its subdomains,
//     never from https down to http (net/http's rule for redirects);
//   - takes the 201's Location, resolved against the URL that answered
//     (the last redirect's), as the session resource, and DELETEs it when
//     the forward stops and after every failure that follows the POST;
//   - remembers the ICE servers of the 201's Link rel="ice-server"
//     headers (URL, username, credential) and adds them to the
//     configured ones for the next connection: the offer's candidates are
//     gathered before the 201 arrives, so they cannot serve the
//     connection they came with, and a new connection is how this client
//     restarts ICE;
//   - sends no PATCH: all candidates are in the offer, and a connection
//     that fails is replaced by a new session rather than restarted over
//     PATCH, so a server without trickle or ICE restart support (405, 501)
//     works as well as one with it.
//
// The token is never logged; URLs are logged through rawurl.Redact.
//
// # Media
//
// H.264 video and Opus audio, one track of each at most, as the codec table
// (webrtccodec) says, the same as for WHEP viewers. H.264 goes as the hub's
// PacketizeRTP processor packetizes it (an RTP source's packets pass
// through unchanged); H.264 with B-frames gets the route's B-frame policy
// (Config.BFrames: re-encoded by the ReencodeH264 processor, shared with the
// stream's WHEP viewers, passed through, or refused); AAC is transcoded to
// Opus by the AACToOpus processor, shared likewise; Opus passes through. Like a
// WHEP viewer, the target gets consecutive sequence numbers and timestamps
// from a random origin per track, starts at the stream's last keyframe (the
// cached GOP is sent at once, squeezed, see rtc.OutTrack), gets sender reports
// stamped from the stream clock, and its PLI and FIR become keyframe
// requests to the publisher (or a replay of the cached GOP for RTMP and
// SRT sources, which cannot be asked).
//
// # Reconnects
//
// Run waits for the stream, forwards it, and whenever the forward fails
// (refusal, connection lost, stream ended) starts again after a backoff:
// 1 s doubling up to 30 s, back to 1 s after a minute of streaming; a 503 or
// 429 with Retry-After waits what the server asked instead. A stream that
// ended is waited for without backoff growth. The policy is
// internal/reconnect's, the same for every push.
package whip

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/wishbridge/bridge/internal/backoff"
	"github.com/wishbridge/bridge/internal/ratelog"
	"github.com/wishbridge/bridge/internal/rawurl"
	"github.com/wishbridge/bridge/internal/reconnect"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/transcode"
	"github.com/wishbridge/bridge/webrtccodec"
)

// Config configures a Forwarder. Registry, Engine, Path and URL are
// required.
type Config struct {
	Registry *media.Registry
	Engine   *rtc.Engine
	// Path is the hub stream forwarded ("live/cam").
	Path string
	// URL is the WHIP endpoint (http:// or https://). It is logged
	// redacted (rawurl.Redact).
	URL string
	// Token, if set, is sent as "Authorization: Bearer <token>". Never
	// logged.
	Token string
	// OpusBitrate is the bitrate (bit/s) of Opus made from AAC audio; 0
	// means transcode.DefaultOpusBitrate. The transcode is shared with the
	// stream's WHEP viewers: the first to need it sets the bitrate.
	OpusBitrate int
	// BFrames is the route's B-frame policy for H.264 with B-frames, as
	// for the stream's WHEP viewers (re-encoded, shared with them, passed
	// through, or refused: the forward then fails and retries); the zero
	// value means webrtccodec.BFramesReencode.
	BFrames webrtccodec.BFramePolicy
	// Reencoders caps the re-encoders of the process: give the one the
	// WHEP handler has. nil means a cap of this forwarder's own with the
	// default size (transcode.DefaultReencoders).
	Reencoders *transcode.ReencodeSlots
	// Log receives the forwarder's events; nil means slog.Default().
	Log *slog.Logger
	// HTTPClient sends the requests; nil means a client of the
	// forwarder's own. Its CheckRedirect is not used: redirects are
	// followed by the forwarder (307 and 308 only).
	HTTPClient *http.Client
}

// Reconnect policy and timeouts.
const (
	minBackoff = backoff.DefaultMin
	maxBackoff = backoff.DefaultMax
	// backoffReset is how long a forward must have streamed for the next
	// failure to be retried after minBackoff again.
	backoffReset = backoff.DefaultReset
	// pollInterval is how often the forwarder looks for its stream while
	// it is not published.
	pollInterval = 250 * time.Millisecond
	// connectTimeout bounds ICE and DTLS after the answer.
	connectTimeout = 20 * time.Second
	// disconnectGrace is how long the connection may stay disconnected
	// (ICE consent lost for the engine's disconnect timeout, 5 s) before
	// the session is given up and a new one made.
	disconnectGrace = 5 * time.Second
	// gatherTimeout bounds the wait for ICE gathering (milliseconds with
	// the UDP mux; STUN and TURN servers make it longer); after it the
	// offer goes with the candidates gathered so far.
	gatherTimeout = 5 * time.Second
)

// Forwarder forwards one stream to one WHIP endpoint. Create it with
// NewForwarder and call Run once.
type Forwarder struct {
	cfg    Config
	log    *slog.Logger
	client *rtc.Client
	err    error // a configuration error, reported by Run

	// Tunables, fixed before Run (tests shorten them).
	minBackoff, maxBackoff, backoffReset, poll time.Duration
	connectTimeout, disconnectGrace, gather    time.Duration
	// onStreaming, if set, is called each time media starts flowing to
	// the target.
	onStreaming func()
	// reencodeRefusals logs forwards refused for want of a re-encoder,
	// one line per interval.
	reencodeRefusals ratelog.Limiter
}

// NewForwarder returns a forwarder for cfg. A bad configuration (no URL,
// not an http(s) URL) is reported by Run.
func NewForwarder(cfg Config) *Forwarder {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Reencoders == nil {
		cfg.Reencoders = &transcode.ReencodeSlots{}
	}
	f := &Forwarder{
		cfg:        cfg,
		log:        cfg.Log.With("component", "whip forward", "stream", cfg.Path, "target", rawurl.Redact(cfg.URL)),
		minBackoff: minBackoff, maxBackoff: maxBackoff, backoffReset: backoffReset, poll: pollInterval,
		connectTimeout: connectTimeout, disconnectGrace: disconnectGrace, gather: gatherTimeout,
	}
	switch {
	case cfg.Registry == nil || cfg.Engine == nil || cfg.Path == "":
		f.err = errors.New("whip forward: no registry, engine or path")
	case cfg.URL == "":
		f.err = errors.New("whip forward: no target URL")
	default:
		f.client, f.err = rtc.NewClient(cfg.HTTPClient, cfg.URL, cfg.Token)
	}
	return f
}

// Run forwards until ctx ends, then ends the remote session (DELETE) and
// returns. What follows each attempt is internal/reconnect's policy for
// pushes (a 503 or 429's Retry-After is waited).
func (f *Forwarder) Run(ctx context.Context) {
	if f.client != nil {
		defer f.client.Close()
	}
	reconnect.Loop{
		Name:    "whip forward",
		Log:     f.log,
		Invalid: f.err,
		Backoff: func() *backoff.Backoff {
			return backoff.New(f.minBackoff, f.maxBackoff, f.backoffReset)
		},
		Stream: func(ctx context.Context) (*media.Stream, error) {
			return reconnect.WaitStream(ctx, f.cfg.Registry, f.cfg.Path, f.poll, f.log, "whip forward")
		},
		Attempt:    f.forward,
		RetryAfter: rtc.RetryAfter,
	}.Run(ctx)
}
