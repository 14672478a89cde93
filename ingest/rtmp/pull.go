package rtmp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/backoff"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/rawurl"
	"github.com/wishbridge/bridge/internal/reconnect"
	"github.com/wishbridge/bridge/internal/rtmpwire"
	"github.com/wishbridge/bridge/media"
)

// Pull ingest: a Puller plays a stream from a remote RTMP server as a
// client and publishes it in the hub, for a route with
// "pull: rtmp://host[:port]/app/name" (config.Route.Pull).
//
// It connects (TCP, or TLS for rtmps://), does the handshake, sends
// connect with the app, createStream, and play with the stream name (the
// last path segment, with the URL's query), then takes the FLV tags the
// server sends (also inside aggregate messages) as a publisher's are taken
// (see the package doc, "Tracks and units"). The stream is published at
// the first media message or NetStream.Play.Start, whichever comes first.
// An onStatus error (NetStream.Play.StreamNotFound, Play.Failed, ...) or an
// _error ends the attempt with the server's code and description; so do
// NetStream.Play.Stop, Play.UnpublishNotify and Play.Complete (the source
// stopped), a closed connection, and a bad tag.
//
// Every wait is bounded: the TCP connection, handshake, connect,
// createStream and play must be done within 10 s of the dial, and once
// playing, a server that sends nothing for 10 s is dropped (writes too:
// 10 s each). Pings are answered and what is received is acknowledged at
// the window the server sets.
//
// After a failure, the source ending its stream included, the Puller
// waits and connects again (internal/reconnect's policy for pulls): 1 s,
// doubling up to 30 s, back to 1 s once a connection has carried media
// for a minute; a panic in an attempt is recovered and is a failure too.
// Each failure is logged with its reason and the wait, the URL redacted
// (rawurl.Redact). The client is internal/rtmpwire's, which holds the
// server to the limits a publisher is held to (guard.go). Between two connections the stream waits for its
// publisher for the registry's grace period (media.Registry.SetGrace), so
// its readers carry on when the source comes back within it.

// PullConfig configures a Puller. Registry, Path and URL are required.
type PullConfig struct {
	Registry *media.Registry
	// Path is where the stream is published in the hub ("live/cam").
	Path string
	// URL is the source: rtmp://host[:port]/app/name (port 1935) or
	// rtmps://... (port 443). It is logged redacted (rawurl.Redact).
	URL string
	// Log receives the puller's events; nil means slog.Default().
	Log *slog.Logger
}

// Reconnect policy and timeouts of a Puller.
const (
	pullMinBackoff = backoff.DefaultMin
	pullMaxBackoff = backoff.DefaultMax
	// pullBackoffReset is how long media must have flowed for the next
	// failure to be retried after pullMinBackoff again.
	pullBackoffReset = backoff.DefaultReset
	// pullSetupTimeout bounds dial, handshake, connect, createStream and
	// play.
	pullSetupTimeout = 10 * time.Second
	// pullIdleTimeout ends a connection the server sent nothing on for
	// that long, and bounds every write.
	pullIdleTimeout = 10 * time.Second
)

// Puller pulls one RTMP stream into the hub. Create it with NewPuller and
// call Run; Run may be called again after it returned (e.g. to pull on
// demand: run it while the stream has readers), but not concurrently.
type Puller struct {
	reg  *media.Registry
	path string
	src  rtmpwire.URL
	log  *slog.Logger
	err  error // a configuration error, reported by Run

	// Tunables, fixed before Run (tests shorten them).
	minBackoff, maxBackoff, backoffReset  time.Duration
	setupTimeout, idleTimeout, configWait time.Duration
	// onPublish, if set, is called with the stream each time the puller
	// publishes it, before any of its units is written.
	onPublish func(*media.Stream)
	// onRetry, if set, is called before each wait between two attempts.
	onRetry func(wait time.Duration, err error)
}

// NewPuller returns a puller for cfg. A bad configuration is reported by
// Run.
func NewPuller(cfg PullConfig) *Puller {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	p := &Puller{
		reg:        cfg.Registry,
		path:       cfg.Path,
		log:        log.With("component", "rtmp pull", "stream", cfg.Path, "source", rawurl.Redact(cfg.URL)),
		minBackoff: pullMinBackoff, maxBackoff: pullMaxBackoff, backoffReset: pullBackoffReset,
		setupTimeout: pullSetupTimeout, idleTimeout: pullIdleTimeout, configWait: defaultConfigWait,
	}
	switch {
	case cfg.Registry == nil || cfg.Path == "":
		p.err = errors.New("rtmp pull: no registry or path")
	default:
		p.src, p.err = rtmpwire.ParseURL(cfg.URL)
		if p.err != nil {
			p.err = fmt.Errorf("rtmp pull: %w", p.err)
		}
	}
	return p
}

// Run pulls until ctx ends, then closes the connection, leaves the stream
// (which waits for a publisher for its grace period) and returns. With a
// bad configuration it logs why and waits for ctx.
func (p *Puller) Run(ctx context.Context) {
	reconnect.Loop{
		Name:    "rtmp pull",
		Log:     p.log,
		Invalid: p.err,
		Backoff: func() *backoff.Backoff {
			return backoff.New(p.minBackoff, p.maxBackoff, p.backoffReset)
		},
		Attempt:  p.pull,
		Retrying: p.onRetry,
	}.Run(ctx)
}

// pull makes one connection and publishes what it plays until it fails or
// ctx ends. Its session starts when the stream is published; packets are
// the frames (RTMP has no packets of its own).
func (p *Puller) pull(ctx context.Context, _ *media.Stream, a *reconnect.Attempt) (err error) {
	c, err := rtmpwire.DialPlay(ctx, rtmpwire.Config{
		URL:          p.src,
		SetupTimeout: p.setupTimeout,
		IdleTimeout:  p.idleTimeout,
		WriteTimeout: p.idleTimeout,
	})
	if err != nil {
		return err
	}
	defer c.Close()
	// When ctx ends, a read waiting for the server returns at once.
	defer context.AfterFunc(ctx, func() {
		defer panics.Recover("rtmp pull", p.log, nil)
		_ = c.Close()
	})()
	s := &pullSession{p: p, c: c, a: a}
	// A panic while publishing ends the publication too, as an error would.
	defer panics.Recover("rtmp pull", a.Log, func() { s.end(); err = errPanicked })
	err = s.receive()
	s.end()
	return err
}

// pullSession is one connection's play: it publishes the stream once media
// comes and hands the tags to its tagSink.
type pullSession struct {
	p       *Puller
	c       *rtmpwire.Client
	a       *reconnect.Attempt
	sink    tagSink
	started bool // the stream was published
}

// receive takes the server's messages until the connection ends.
func (s *pullSession) receive() error {
	for {
		m, err := s.c.Next()
		if err != nil {
			return err
		}
		switch m.TypeID {
		case rtmpwire.TypeCommandAMF0, rtmpwire.TypeCommandAMF3:
			cmd, err := rtmpwire.ParseCommand(m.TypeID, m.Payload)
			if err != nil {
				s.a.Log.Debug("rtmp pull: command ignored", "err", err)
				continue
			}
			if err := s.command(cmd); err != nil {
				return err
			}
		case rtmpwire.TypeAudio, rtmpwire.TypeVideo, rtmpwire.TypeDataAMF0:
			if err := s.media(m.TypeID, m.TS, m.Payload); err != nil {
				return err
			}
		case rtmpwire.TypeAggregate:
			if err := s.aggregate(m); err != nil {
				return err
			}
		}
	}
}

// command handles a command message once play was sent.
func (s *pullSession) command(cmd rtmpwire.Command) error {
	switch cmd.Name {
	case "onStatus":
		st := cmd.Status()
		switch {
		case st.Level == "error":
			return fmt.Errorf("play %q refused: %s", s.p.src.Redacted, s.c.Describe(cmd))
		case st.Code == "NetStream.Play.Start":
			return s.start()
		case st.Code == "NetStream.Play.Stop" || st.Code == "NetStream.Play.UnpublishNotify" || st.Code == "NetStream.Play.Complete":
			return fmt.Errorf("the server stopped the stream: %s", s.c.Describe(cmd))
		}
	case "_error":
		return fmt.Errorf("refused by the server: %s", s.c.Describe(cmd))
	case "close":
		return errors.New("the server closed the stream (close command)")
	}
	return nil
}

// start publishes the stream, once.
func (s *pullSession) start() error {
	if s.started {
		return nil
	}
	pub, err := s.p.reg.Publish(s.p.path, "rtmp pull "+s.p.src.Redacted)
	if err != nil {
		return err
	}
	pub.SetKind(access.KindRTMPPull)
	s.c.Started()
	s.started = true
	s.sink = tagSink{stream: pub, log: s.a.Notes(), configWait: s.p.configWait}
	s.a.Started("app", s.p.src.App, "stream_id", s.c.StreamID())
	if s.p.onPublish != nil {
		s.p.onPublish(pub.Stream)
	}
	return nil
}

// media hands one FLV tag body (audio, video or an AMF0 data message) to
// the sink; payload is the sink's.
func (s *pullSession) media(typeID uint8, ts uint32, payload []byte) error {
	if err := s.start(); err != nil {
		return err
	}
	switch typeID {
	case rtmpwire.TypeAudio:
		return s.sink.audio(ts, payload)
	case rtmpwire.TypeVideo:
		return s.sink.video(ts, payload)
	default:
		return s.sink.metadata(stripSetDataFrame(payload))
	}
}

// aggregate splits an aggregate message into its FLV tags (RTMP
// specification 7.1.6): each has an 11-byte tag header, the body and the
// 4-byte previous tag size. The tags' timestamps are moved so that the
// first is the message's.
func (s *pullSession) aggregate(m rtmpwire.Message) error {
	b := m.Payload
	var base uint32
	for first := true; len(b) > 0; first = false {
		if len(b) < 11 {
			return fmt.Errorf("aggregate message: %d bytes left, a tag header is 11", len(b))
		}
		typeID := b[0]
		size := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		ts := uint32(b[7])<<24 | uint32(b[4])<<16 | uint32(b[5])<<8 | uint32(b[6])
		if len(b) < 11+size+4 {
			return fmt.Errorf("aggregate message: a tag of %d bytes, %d left", size, len(b)-11)
		}
		if first {
			base = ts
		}
		body := b[11 : 11+size]
		b = b[11+size+4:]
		switch typeID {
		case rtmpwire.TypeAudio, rtmpwire.TypeVideo, rtmpwire.TypeDataAMF0:
			if err := s.media(typeID, m.TS+(ts-base), body); err != nil {
				return err
			}
		}
	}
	return nil
}

// stripSetDataFrame drops a leading "@setDataFrame" string from an AMF0
// data message (some servers relay the publisher's message as sent), so
// that it starts with "onMetaData".
func stripSetDataFrame(b []byte) []byte {
	const name = "@setDataFrame"
	if p := rtmpwire.AppendAMF0(nil, name); bytes.HasPrefix(b, p) {
		return b[len(p):]
	}
	return b
}

// end leaves the stream, once, and tells the attempt what it moved, for
// the session's end line (internal/reconnect logs it).
func (s *pullSession) end() {
	if !s.started || s.sink.stream == nil {
		return
	}
	s.sink.stream.Close()
	s.sink.stream = nil
	args := []any{"video_frames", s.sink.videoUnits, "audio_frames", s.sink.audioUnits}
	if s.sink.dropped > 0 {
		args = append(args, "dropped_before_tracks", s.sink.dropped)
	}
	s.a.Moved(s.sink.tagBytes, s.sink.videoUnits+s.sink.audioUnits, args...)
}
