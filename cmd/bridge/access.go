package main

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net"
	"strings"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/wishbridge/bridge/config"
	egressrtmp "github.com/wishbridge/bridge/egress/rtmp"
	egresssrt "github.com/wishbridge/bridge/egress/srt"
	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/ingest/rtmp"
	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/media"
)

// authorizeRead is the one admission policy for readers, whatever their
// protocol (req.Protocol is config.ReadWHEP, ReadRTMP or ReadSRT): the
// path must match a route that lets that protocol read, and the route's
// read_key, if it has one, must be req.Credential (WHEP: the bearer token, RTMP:
// the stream name's ?key=, SRT: the streamid's key). The error wraps
// access.ErrNoRoute, access.ErrProtocolNotAllowed or access.ErrBadKey.
func (b *Bridge) authorizeRead(req access.Request) (*config.Route, error) {
	route, ok := b.cfg.Load().Match(req.Path)
	if !ok {
		return nil, access.ErrNoRoute
	}
	if !route.AllowsRead(string(req.Protocol)) {
		return nil, fmt.Errorf("%s may not read on this route: %w", req.Protocol, access.ErrProtocolNotAllowed)
	}
	if want := route.ReadCredential(); want != "" && !secretEqual(req.Credential, want) {
		return nil, access.ErrBadKey
	}
	return route, nil
}

// authorizeSRTRead admits an SRT reader of req.Path: authorizeRead, and
// the stream must be live or about to be pulled on demand.
func (b *Bridge) authorizeSRTRead(req access.Request) error {
	if _, err := b.authorizeRead(req); err != nil {
		return err
	}
	if _, ok := b.registry.Get(req.Path); !ok && !b.pull.demand(req.Path) {
		return fmt.Errorf("stream %q: %w", req.Path, access.ErrNoStream)
	}
	return nil
}

// admitRead is authorizeRead as an access.Authorizer (WHEP).
func (b *Bridge) admitRead(req access.Request) error {
	_, err := b.authorizeRead(req)
	return err
}

// playRTMP serves RTMP play on the bridge's RTMP port, for any stream
// whatever its ingest, once authorizeRead admits it.
func (b *Bridge) playRTMP(ctx context.Context, req rtmp.PlayRequest, w rtmp.PlayWriter) error {
	route, err := b.authorizeRead(access.Request{Action: access.Read, Protocol: access.RTMP, Path: req.Path, Credential: req.Key, Remote: req.Remote})
	if err != nil {
		return err
	}
	st, err := b.locate(ctx, req.Path)
	if err != nil {
		return fmt.Errorf("play %q: %w", req.Path, rtmp.ErrStreamNotFound)
	}
	return egressrtmp.Play(ctx, w, st, egressrtmp.PlayOptions{Name: "rtmp play " + req.Remote,
		AACBitrate: route.AACBitrate(), AAC: b.aac, Log: b.log})
}

// serveSRTReader sends a stream as MPEG-TS to an SRT reader that
// authorizeSRTRead admitted.
func (b *Bridge) serveSRTReader(ctx context.Context, conn gosrt.Conn, req access.Request) error {
	st, err := b.locate(ctx, req.Path)
	if err != nil {
		conn.Close()
		return fmt.Errorf("stream %q is gone", req.Path)
	}
	bitrate := 0
	if r, ok := b.cfg.Load().Match(req.Path); ok {
		bitrate = r.AACBitrate()
	}
	return egresssrt.ServeReader(ctx, conn, st, egresssrt.ReaderOptions{Name: "srt read " + req.Remote,
		Audio: egresssrt.AudioAAC, AACBitrate: bitrate, AAC: b.aac, Log: b.log})
}

// streamWait bounds how long an RTMP or SRT reader waits for a stream
// that is starting (an on-demand pull, a publisher in its handshake).
const streamWait = 5 * time.Second

// locate returns the stream at path once its tracks are known or, if it
// has none but an on-demand pull, starts the pull; either way it waits up
// to streamWait.
func (b *Bridge) locate(ctx context.Context, path string) (*media.Stream, error) {
	if _, ok := b.registry.Get(path); !ok && !b.pull.demand(path) {
		return nil, fmt.Errorf("stream %q: %w", path, access.ErrNoStream)
	}
	return access.WaitReady(ctx, b.registry, path, streamWait)
}

// authorizePublish is the admission policy for every ingest adapter.
func (b *Bridge) authorizePublish(req access.Request) error {
	route, ok := b.cfg.Load().Match(req.Path)
	if !ok {
		return access.ErrNoRoute
	}
	if !route.AllowsIngest(string(req.Protocol)) || route.Pull != "" {
		// A pull route's stream comes from its source only.
		return access.ErrProtocolNotAllowed
	}
	if route.PublishKey != "" && !secretEqual(req.Credential, route.PublishKey) {
		return access.ErrBadKey
	}
	return nil
}

// secretEqual compares in constant time, so response timing does not
// reveal how much of a secret was right.
func secretEqual(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// publicPaths lists the live streams anyone may be shown: those whose
// route needs no read_key. Private streams are never listed (index page,
// metrics without the token); their readers know their names.
func (b *Bridge) publicPaths() []string {
	cfg := b.cfg.Load()
	var out []string
	for _, p := range b.registry.Paths() {
		if !b.isPrivate(cfg, p) {
			out = append(out, p)
		}
	}
	return out
}

// isPrivate reports whether path's streams may only be listed to those
// who hold a credential: its route has a read_key, or no route matches
// (a stream left from a route removed by a reload).
func (b *Bridge) isPrivate(cfg *config.Config, path string) bool {
	r, ok := cfg.Match(path)
	return !ok || r.Private()
}

// openPublishing describes the routes anyone may publish to (no
// publish_key, no pull) over a listener bound to a non-loopback address,
// with the config key that closes each; "" when there are none. Start
// logs it once as a warning: the embedded default is open for a first run
// on a laptop, which is a mistake on a server.
func openPublishing(cfg *config.Config, listeners map[string]net.Addr) string {
	public := map[string]bool{}
	for proto, a := range listeners {
		if ip := addrlimit.AddrOf(a); !ip.IsValid() || !ip.IsLoopback() {
			public[proto] = true
		}
	}
	var open []string
	for i, r := range cfg.Routes {
		if r.PublishKey != "" || r.Pull != "" {
			continue
		}
		var protos []string
		for _, p := range r.Ingest {
			if public[p] {
				protos = append(protos, p)
			}
		}
		if len(protos) > 0 {
			open = append(open, fmt.Sprintf("routes[%d] %q (%s): set routes[%d].publish_key", i, r.Path, strings.Join(protos, ", "), i))
		}
	}
	return strings.Join(open, "; ")
}

// maxReaders is the limit of readers of the stream at path, across every
// read protocol: the route's max_readers, or limits.readers_per_stream.
// Read per request, so a reload applies to the next reader.
func (b *Bridge) maxReaders(path string) int {
	cfg := b.cfg.Load()
	if r, ok := cfg.Match(path); ok && r.MaxReaders > 0 {
		return r.MaxReaders
	}
	return cfg.Limits.WithDefaults().ReadersPerStream
}
