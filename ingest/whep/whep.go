// Package whep is the WHEP pull ingest: a Puller plays a stream from a
// remote WHEP server (draft-ietf-wish-whep) as a WHEP client and publishes
// it in the hub, reconnecting for as long as it runs.
//
// # URLs
//
// Routes spell the source "whep+http://host/whep/path" or
// "whep+https://..." (config.Route.Pull): the "whep+" prefix says which
// protocol to speak and is stripped; the rest is the WHEP endpoint. A plain
// http:// or https:// URL is taken as it is.
//
// # Signalling
//
// As for WHIP (see egress/whip, whose HTTP client this package shares): a
// recvonly offer for H.264 (packetization-mode 1, Baseline, Main or High,
// with RTX) and Opus, with every candidate in it, POSTed with the bearer
// token if any; 307 and 308 redirects followed with the same method and
// body (up to 5; 301-303 are errors); the Location resolved against the URL
// that answered; the session DELETEd when the pull stops and after every
// failure that follows the POST; the 201's Link rel="ice-server" servers
// used for the next connection; no PATCH (no trickle needed; a lost
// connection is replaced by a new session). The token is never logged.
//
// # Media
//
// While connected the Puller is the publisher of Path. Units are made as
// ingest/whip makes them: each carries the RTP packets as they arrived
// (header extensions and padding stripped, timestamps moved to the stream
// clock), which WHEP viewers get without depacketizing; H.264 units also
// carry the access unit as NAL units (reassembled from FU-A/STAP-A,
// normalised by transcode.H264Normalizer) for readers that need frames.
// After a damaged unit, and until the next decodable IDR, units carry no
// NAL units and the server is sent a PLI (at most one per 500 ms, merged
// with the hub readers' keyframe requests). The stream's tracks are
// declared once every track the answer accepted has a first unit (video:
// a decodable IDR), or 3 s after the first packet with those that have.
//
// # Reconnects
//
// A refusal, a connection that fails or stops carrying media for 10 s
// (the remote stream ended, the server went away) ends the session; Run
// makes a new one after a backoff: 1 s doubling up to 30 s, back to 1 s
// after a minute of media, or the Retry-After of a 503 or 429 (the policy
// of internal/reconnect, the same for every pull). Meanwhile
// the stream waits for its publisher for the registry's grace period
// (media.Registry.SetGrace), so its readers carry on across a reconnect.
package whep

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/wishbridge/bridge/internal/backoff"
	"github.com/wishbridge/bridge/internal/rawurl"
	"github.com/wishbridge/bridge/internal/reconnect"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// Config configures a Puller. Registry, Engine, Path and URL are required.
type Config struct {
	Registry *media.Registry
	Engine   *rtc.Engine
	// Path is where the stream is published in the hub ("live/cam").
	Path string
	// URL is the WHEP endpoint: whep+http://..., whep+https://... (or a
	// plain http(s) URL). Logged redacted (rawurl.Redact).
	URL string
	// Token, if set, is sent as "Authorization: Bearer <token>". Never
	// logged.
	Token string
	// Log receives the puller's events; nil means slog.Default().
	Log *slog.Logger
	// HTTPClient sends the requests; nil means a client of the puller's
	// own. Its CheckRedirect is not used: redirects are followed by the
	// puller (307 and 308 only).
	HTTPClient *http.Client
}

// Reconnect policy and timeouts.
const (
	minBackoff = backoff.DefaultMin
	maxBackoff = backoff.DefaultMax
	// backoffReset is how long media must have flowed for the next
	// failure to be retried after minBackoff again.
	backoffReset = backoff.DefaultReset
	// connectTimeout bounds ICE and DTLS after the answer.
	connectTimeout = 20 * time.Second
	// idleTimeout ends a connected session that received no RTP for that
	// long: the remote stream ended or the server went away.
	idleTimeout = 10 * time.Second
	// trackWait is how long after the first packet the stream waits for
	// the other expected track before it is declared without it.
	trackWait = 3 * time.Second
	// gatherTimeout bounds the wait for ICE gathering; after it the offer
	// goes with the candidates gathered so far.
	gatherTimeout = 5 * time.Second
)

// Puller pulls one WHEP stream into the hub. Create it with NewPuller and
// call Run once.
type Puller struct {
	cfg    Config
	log    *slog.Logger
	client *rtc.Client
	err    error // a configuration error, reported by Run

	// Tunables, fixed before Run (tests shorten them).
	minBackoff, maxBackoff, backoffReset   time.Duration
	connectTimeout, idleTimeout, trackWait time.Duration
	// onConnected, if set, is called each time a session connects.
	onConnected func()
}

// NewPuller returns a puller for cfg. A bad configuration is reported by
// Run.
func NewPuller(cfg Config) *Puller {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	p := &Puller{
		cfg:        cfg,
		log:        cfg.Log.With("component", "whep pull", "stream", cfg.Path, "source", rawurl.Redact(cfg.URL)),
		minBackoff: minBackoff, maxBackoff: maxBackoff, backoffReset: backoffReset,
		connectTimeout: connectTimeout, idleTimeout: idleTimeout, trackWait: trackWait,
	}
	switch {
	case cfg.Registry == nil || cfg.Engine == nil || cfg.Path == "":
		p.err = errors.New("whep pull: no registry, engine or path")
	case cfg.URL == "":
		p.err = errors.New("whep pull: no source URL")
	default:
		p.client, p.err = rtc.NewClient(cfg.HTTPClient, endpointURL(cfg.URL), cfg.Token)
	}
	return p
}

// endpointURL strips the "whep+" of a whep+http(s) URL.
func endpointURL(raw string) string {
	if len(raw) > 5 && strings.EqualFold(raw[:5], "whep+") {
		return raw[5:]
	}
	return raw
}

// Run pulls until ctx ends, then ends the remote session (DELETE), leaves
// the stream and returns. What follows each attempt is
// internal/reconnect's policy for pulls (a 503 or 429's Retry-After is
// waited).
func (p *Puller) Run(ctx context.Context) {
	if p.client != nil {
		defer p.client.Close()
	}
	reconnect.Loop{
		Name:    "whep pull",
		Log:     p.log,
		Invalid: p.err,
		Backoff: func() *backoff.Backoff {
			return backoff.New(p.minBackoff, p.maxBackoff, p.backoffReset)
		},
		Attempt: func(ctx context.Context, _ *media.Stream, a *reconnect.Attempt) error {
			return p.pull(ctx, a)
		},
		RetryAfter: rtc.RetryAfter,
	}.Run(ctx)
}
