// Package access is the contract between the protocol adapters and the
// node (the route runtime): what an adapter asks before it lets a client
// publish or read, and the refusals it may get back. Adapters fill a
// Request from their wire format, call the Authorizer (and, for readers,
// the Locator) the node gave them, and turn a refusal into their own wire
// answer; they never read the routes themselves. The package imports only
// the hub, so every adapter can depend on it and none on the node.
//
// Each adapter maps the refusals as follows (its package doc lists the
// exact statuses):
//
//	              ErrNoRoute    ErrProtocolNotAllowed  ErrBadKey  ErrNoStream      *Elsewhere
//	WHIP          404           403                    401        -                307 + Location
//	WHEP          404           404                    401        404              307 + Location
//	RTMP publish  BadName       BadName                Unauthorized -              Publish.Failed
//	RTMP play     Play.Failed   Play.Failed            Play.Failed  StreamNotFound Play.StreamNotFound
//	SRT           1404          1403                   1401       1404             1404
//
// Any other error is a refusal without a reason the client may learn
// (WHIP 403, WHEP 404, RTMP NetStream.*.Failed, SRT 1403).
package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/wishbridge/bridge/media"
)

// Action is what a client asks to do with a path.
type Action int

// The actions.
const (
	Publish Action = iota + 1
	Read
)

func (a Action) String() string {
	switch a {
	case Publish:
		return "publish"
	case Read:
		return "read"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Protocol is the protocol a client speaks to the bridge. Its values are
// the names the config uses (routes[].ingest, routes[].read), so the node
// compares them without a table.
type Protocol string

// The protocols a client may publish (RTMP, SRT, WHIP) or read (RTMP, SRT,
// WHEP) with.
const (
	RTMP Protocol = "rtmp"
	SRT  Protocol = "srt"
	WHIP Protocol = "whip"
	WHEP Protocol = "whep"
)

// Request describes a client asking to publish or read, before anything
// is accepted. Adapters fill it from their wire format.
type Request struct {
	Action   Action
	Protocol Protocol
	// Path is the stream path, e.g. "live/test".
	Path string
	// Credential is the key or bearer token the client presented ("" if
	// none): RTMP the stream name's ?key=, SRT the streamid's key, WHIP
	// and WHEP the bearer token. Never log it.
	Credential string
	// Remote is the peer's address, for logs and per-address limits.
	Remote string
	// Preview asks to read as the admin dashboard's muted preview: the
	// Credential is then the admin API token instead of the route's read
	// key (any route whose protocol allows reading, private ones too),
	// and the reader is not counted (media.ReaderOptions.Uncounted). Only
	// WHEP asks it.
	Preview bool
	// Redirect is the signed RedirectParam of a WHIP or WHEP request that
	// another node of the cluster sent here with a 307 ("" if none). The
	// node checks it: a valid one stands for the Credential (that node
	// checked it; browsers drop Authorization on a cross-origin redirect)
	// and forbids a further redirect; an invalid one is refused. Never
	// log it.
	Redirect string
}

// RedirectParam is the query parameter of the URL a node redirects a WHIP
// or WHEP client to: a signature made with the cluster token (package
// internal/redirectsig).
const RedirectParam = "cluster_redirect"

func (r Request) String() string {
	return fmt.Sprintf("%s %s %q from %s", r.Protocol, r.Action, r.Path, r.Remote)
}

// Authorizer decides a Request: a nil error admits it, and the Grant says
// by which route; otherwise the error (wrapping one of the refusals below,
// or an *Elsewhere) says why, and the adapter turns it into its protocol's
// answer. It must not log the credential.
type Authorizer func(Request) (Grant, error)

// Grant is what admitted a Request, for the session's log lines: the
// adapter logs them on Grant.Logger, so that an operator can tell which
// route of the config a session ran under. It costs the Authorizer
// nothing: the node has matched the route to decide.
type Grant struct {
	// Route is the path of the route that admitted the request: its
	// pattern when it has one ("live/{name}"), logged as "route". ""
	// when the Authorizer has no routes (a test's).
	Route string
}

// Logger returns log with the grant's route under the key "route", or log
// itself when the grant names no route.
func (g Grant) Logger(log *slog.Logger) *slog.Logger {
	if g.Route == "" {
		return log
	}
	return log.With("route", g.Route)
}

// Locator finds the stream an admitted reader of path reads: the local one,
// or one started on demand for it. It returns once the stream's tracks are
// known; it waits at most until ctx ends or its own deadline passes (the
// node's: a few seconds). A stream that is not there and will not be in
// time is an error wrapping ErrNoStream; a stream served by another node
// is an *Elsewhere.
type Locator func(ctx context.Context, path string) (*media.Stream, error)

// Local is the Locator of an adapter that serves one registry without a
// node (a test, a remote server in a test): the stream published at path,
// once its tracks are known, waited for at most wait. A path with no
// stream at all is refused at once.
func Local(reg *media.Registry, wait time.Duration) Locator {
	return func(ctx context.Context, path string) (*media.Stream, error) {
		if _, ok := reg.Get(path); !ok {
			return nil, fmt.Errorf("stream %q: %w", path, ErrNoStream)
		}
		return WaitReady(ctx, reg, path, wait)
	}
}

// WaitReady waits at most wait for the stream at path to be published
// with its tracks known (media.Registry.WaitReady, which looks again when a
// stream ends before it is ready). Past the deadline the error wraps
// ErrNoStream; when ctx ends first, ctx.Err().
func WaitReady(ctx context.Context, reg *media.Registry, path string, wait time.Duration) (*media.Stream, error) {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	st, err := reg.WaitReady(wctx, path, readyPoll, nil)
	switch {
	case err == nil:
		return st, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("stream %q has no media after %v: %w", path, wait, ErrNoStream)
}

// readyPoll is how often WaitReady looks for a path that has no stream
// (an on-demand source connecting): a reader joins at most this much
// later than it could have, and a wait of 5 s costs 100 lookups.
const readyPoll = 50 * time.Millisecond

// DenyAll is the Authorizer of an adapter configured with none: it refuses
// every request ("no authorizer configured").
func DenyAll(Request) (Grant, error) {
	return Grant{}, errors.New("no authorizer configured")
}

// Reasons a request is refused. Adapters branch on them with errors.Is.
var (
	ErrNoRoute            = errors.New("no route matches the path")
	ErrProtocolNotAllowed = errors.New("protocol not allowed on this route")
	// ErrBadKey: the credential is missing or wrong. BadKey says which key.
	ErrBadKey = errors.New("missing or wrong key")
	// ErrNoStream refuses a reader: nothing is published at the path, and
	// no on-demand source brought it up before the deadline.
	ErrNoStream = errors.New("no stream is being published at the path")
)

// BadKey is the ErrBadKey refusal of a request for action, naming its key:
// "missing or wrong publish key". errors.Is(BadKey(a), ErrBadKey) holds.
func BadKey(a Action) error { return badKey(a) }

type badKey Action

func (k badKey) Error() string      { return "missing or wrong " + Action(k).String() + " key" }
func (badKey) Is(target error) bool { return target == ErrBadKey }

// Elsewhere refuses a request because the stream lives on another node
// (a cluster's registry knows where). Location is the URL the client should
// ask instead, for the same protocol and path. WHIP and WHEP answer 307
// with it as Location; RTMP and SRT cannot redirect and refuse (see the
// package doc), logging where the stream is.
type Elsewhere struct {
	Location string
}

func (e *Elsewhere) Error() string { return "the stream is served at " + e.Location }

// ElsewhereOf returns the *Elsewhere err wraps, or nil.
func ElsewhereOf(err error) *Elsewhere {
	var e *Elsewhere
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// PublisherKind values: how a stream arrives, set by each ingest with
// media.Publication.SetKind (the hub stores it; the node reports it).
const (
	KindRTMP     media.PublisherKind = "rtmp"
	KindSRT      media.PublisherKind = "srt"
	KindWHIP     media.PublisherKind = "whip"
	KindRTMPPull media.PublisherKind = "rtmp_pull"
	KindSRTPull  media.PublisherKind = "srt_pull"
	KindWHEPPull media.PublisherKind = "whep_pull"
	// KindRelay: relayed from the node that owns the path (package relay).
	KindRelay media.PublisherKind = "relay"
)
