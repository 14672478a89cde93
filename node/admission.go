package node

import (
	"context"
	"crypto/subtle"
	"fmt"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/config"
	egressrtmp "github.com/wishbridge/bridge/egress/rtmp"
	egresssrt "github.com/wishbridge/bridge/egress/srt"
	"github.com/wishbridge/bridge/ingest/rtmp"
	"github.com/wishbridge/bridge/ingest/srt"
	"github.com/wishbridge/bridge/media"
)

// Authorize is the one admission policy (an access.Authorizer), for every
// adapter, publishers and readers alike. The path must match a route, and:
//   - a publisher's protocol must be one of the route's ingest ones, and
//     the route must not pull (its stream comes from its source only); the
//     route's publish_key, if any, must be the credential;
//   - a reader's protocol must be one the route lets read, and its
//     read_key (whep.token), if any, must be the credential.
//
// A publisher whose address an operator banned from the path (Evict) is
// refused with *ErrBanned until the ban ends. A reader asking for a
// Preview must present the admin API token (api.token) instead of the read
// key.
//
// A WHIP or WHEP request another node of the cluster redirected here
// carries a signed redirect (access.Request.Redirect) that stands for the
// key; one that is forged, for another node or path, or expired is a 403.
// An admitted WHIP or WHEP client may still be sent to another node
// (*access.Elsewhere) or refused with a 503 (*rtc.Error) when this node
// takes no new session: see steer (cluster.go).
//
// An admitted request's Grant names the route's path (its pattern), which
// the adapter logs with the session. The error wraps access.ErrNoRoute,
// access.ErrProtocolNotAllowed or access.ErrBadKey, or is an *ErrBanned,
// an *access.Elsewhere or an *rtc.Error. Keys are compared in constant
// time and never logged.
func (n *Node) Authorize(req access.Request) (access.Grant, error) {
	route, err := n.admit(req)
	if err != nil {
		return access.Grant{}, err
	}
	if err := n.steer(req); err != nil { // cluster.go
		return access.Grant{}, err
	}
	if err := n.claim(req); err != nil { // ownership.go
		return access.Grant{}, err
	}
	return access.Grant{Route: route.Path}, nil
}

// admit is Authorize, returning the route that admitted req.
func (n *Node) admit(req access.Request) (*config.Route, error) {
	route, ok := n.Config().Match(req.Path)
	if !ok {
		return nil, access.ErrNoRoute
	}
	if err := n.checkRedirect(req); err != nil {
		return nil, err
	}
	// A valid signed redirect stands for the key: the node that signed it
	// checked the client's (cluster.go).
	redirected := req.Redirect != ""
	switch req.Action {
	case access.Publish:
		if !route.AllowsIngest(string(req.Protocol)) || route.Pull != "" {
			return nil, access.ErrProtocolNotAllowed
		}
		if !redirected && route.PublishKey != "" && !secretEqual(req.Credential, route.PublishKey) {
			return nil, access.BadKey(access.Publish)
		}
		if err := n.bans.banned(req.Path, req.Remote, time.Now()); err != nil {
			return nil, err
		}
	case access.Read:
		if !route.AllowsRead(string(req.Protocol)) {
			return nil, fmt.Errorf("%s may not read on this route: %w", req.Protocol, access.ErrProtocolNotAllowed)
		}
		if req.Preview {
			// The dashboard's preview: the admin token stands for the
			// read key, on any route that may be read this way.
			if want := n.Config().API.Token; want == "" || !secretEqual(req.Credential, want) {
				return nil, access.BadKey(access.Read)
			}
			break
		}
		if want := route.ReadCredential(); !redirected && want != "" && !secretEqual(req.Credential, want) {
			return nil, access.BadKey(access.Read)
		}
	default:
		return nil, fmt.Errorf("%v: unknown action", req)
	}
	return route, nil
}

// secretEqual compares in constant time, so response timing does not
// reveal how much of a secret was right.
func secretEqual(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// Locate finds the stream an admitted reader of path reads (an
// access.Locator): the one published there, or, if there is none but the
// route pulls on demand, the pull it starts, or else, when another node
// owns the path (Options.Relay), the relay it starts (relay.go). Either
// way it waits up to
// Options.StreamWait for the stream's tracks. Nothing published and
// nothing to pull is access.ErrNoStream at once.
func (n *Node) Locate(ctx context.Context, path string) (*media.Stream, error) {
	if !n.locate(ctx, path) {
		return nil, fmt.Errorf("stream %q: %w", path, access.ErrNoStream)
	}
	return access.WaitReady(ctx, n.reg, path, n.streamWait)
}

// PlayRTMP serves RTMP play on the bridge's RTMP port (ingest/rtmp's
// Config.Play), for any stream whatever its ingest, once Authorize has
// admitted the player (the RTMP server asks it) and Locate finds the
// stream.
func (n *Node) PlayRTMP(ctx context.Context, req rtmp.PlayRequest, w rtmp.PlayWriter) error {
	st, err := n.Locate(ctx, req.Path)
	if err != nil {
		return fmt.Errorf("play %q: %w", req.Path, err)
	}
	return egressrtmp.Play(ctx, w, st, egressrtmp.PlayOptions{Name: "rtmp play " + req.Remote,
		AACBitrate: n.Policy(req.Path).AACBitrate, AAC: n.aac, Log: n.log})
}

// SRTReads admits and serves the SRT listener's readers (ingest/srt's
// Config.Read).
func (n *Node) SRTReads() *srt.ReadHandler {
	return &srt.ReadHandler{Admit: n.admitSRTRead, Serve: n.serveSRTReader}
}

// admitSRTRead is Authorize, and the stream must be live or about to be
// pulled on demand or relayed: SRT refuses before the accept or not at
// all.
func (n *Node) admitSRTRead(req access.Request) (access.Grant, error) {
	g, err := n.Authorize(req)
	if err != nil {
		return access.Grant{}, err
	}
	if !n.locate(context.Background(), req.Path) {
		return access.Grant{}, fmt.Errorf("stream %q: %w", req.Path, access.ErrNoStream)
	}
	return g, nil
}

// serveSRTReader sends a stream as MPEG-TS to an admitted SRT reader.
func (n *Node) serveSRTReader(ctx context.Context, conn gosrt.Conn, req access.Request) error {
	st, err := n.Locate(ctx, req.Path)
	if err != nil {
		conn.Close()
		return err
	}
	return egresssrt.ServeReader(ctx, conn, st, egresssrt.ReaderOptions{Name: "srt read " + req.Remote,
		Audio: egresssrt.AudioAAC, AACBitrate: n.Policy(req.Path).AACBitrate, AAC: n.aac, Log: n.log})
}
