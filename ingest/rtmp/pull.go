package rtmp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/backoff"
	"github.com/wishbridge/bridge/internal/panics"
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
// After a failure the Puller waits and connects again: 1 s, doubling up
// to 30 s, back to 1 s once a connection has carried media for a minute.
// Each failure is logged with its reason and the wait, the URL redacted
// (config.RedactURL). Between two connections the stream waits for its
// publisher for the registry's grace period (media.Registry.SetGrace), so
// its readers carry on when the source comes back within it.

// errPullStopped is why a pull ends when its Run's context ends.
var errPullStopped = errors.New("pull stopped")

// PullConfig configures a Puller. Registry, Path and URL are required.
type PullConfig struct {
	Registry *media.Registry
	// Path is where the stream is published in the hub ("live/cam").
	Path string
	// URL is the source: rtmp://host[:port]/app/name (port 1935) or
	// rtmps://... (port 443). It is logged redacted (config.RedactURL).
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
	src  source
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
		log:        log.With("component", "rtmp pull", "stream", cfg.Path, "source", config.RedactURL(cfg.URL)),
		minBackoff: pullMinBackoff, maxBackoff: pullMaxBackoff, backoffReset: pullBackoffReset,
		setupTimeout: pullSetupTimeout, idleTimeout: pullIdleTimeout, configWait: defaultConfigWait,
	}
	switch {
	case cfg.Registry == nil || cfg.Path == "":
		p.err = errors.New("rtmp pull: no registry or path")
	default:
		p.src, p.err = parseSource(cfg.URL)
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
	if p.err != nil {
		p.log.Error("rtmp pull cannot start", "err", p.err)
		<-ctx.Done()
		return
	}
	p.log.Info("rtmp pull started")
	bo := backoff.New(p.minBackoff, p.maxBackoff, p.backoffReset)
	for {
		var streamed time.Duration
		var err error
		if panics.Do("rtmp pull", p.log, func() { streamed, err = p.pull(ctx) }) {
			err = errPanicked // the deferred closes ran; the next attempt starts afresh
		}
		if ctx.Err() != nil {
			p.log.Info("rtmp pull stopped")
			return
		}
		delay := bo.Next(streamed, 0)
		p.log.Warn("rtmp pull failed", "reason", err.Error(), "streamed", streamed.Round(time.Millisecond).String(), "retry_in", delay.String())
		if p.onRetry != nil {
			p.onRetry(delay, err)
		}
		if !backoff.Sleep(ctx, delay) {
			p.log.Info("rtmp pull stopped")
			return
		}
	}
}

// pull makes one connection and publishes what it plays until it fails or
// ctx ends. It returns for how long the stream was published.
func (p *Puller) pull(ctx context.Context) (streamed time.Duration, err error) {
	c, err := dialPull(ctx, p.src, p.setupTimeout, p.idleTimeout)
	if err != nil {
		return 0, err
	}
	defer c.close()
	if err := c.startPlay(p.src); err != nil {
		return 0, err
	}
	s := &pullSession{p: p, c: c}
	// A panic while publishing ends the publication too, as an error would.
	defer panics.Recover("rtmp pull", p.log, func() { streamed, err = s.end(errPanicked), errPanicked })
	err = s.receive()
	if ctx.Err() != nil {
		err = errPullStopped
	}
	return s.end(err), err
}

// startPlay sends connect, createStream and play, waiting for the first
// two's results.
func (c *pullConn) startPlay(s source) error {
	txn, err := c.command(pullCSCommand, 0, "connect", amfObject{
		{"app", s.app},
		{"type", "nonprivate"},
		{"flashVer", "LNX 9,0,124,2"},
		{"tcUrl", s.tcURL},
		{"fpad", false},
		{"capabilities", 15},
		{"audioCodecs", 4071},
		{"videoCodecs", 252},
		{"videoFunction", 1},
	})
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if _, err := c.waitResult(txn); err != nil {
		return fmt.Errorf("connect to app %q: %w", s.app, err)
	}
	txn, err = c.command(pullCSCommand, 0, "createStream", nil)
	if err != nil {
		return fmt.Errorf("createStream: %w", err)
	}
	res, err := c.waitResult(txn)
	if err != nil {
		return fmt.Errorf("createStream: %w", err)
	}
	id, ok := lastNumber(res.args)
	if !ok || id < 0 || id > 1<<31 {
		return fmt.Errorf("createStream: the result has no stream id (%v)", res.args)
	}
	c.streamID = uint32(id)
	// Start -2: live, or recorded if there is no live stream of the name.
	if _, err := c.command(pullCSStream, c.streamID, "play", nil, s.name, -2); err != nil {
		return fmt.Errorf("play: %w", err)
	}
	c.playSent = true
	if err := c.userControl(userSetBufferLength, c.streamID, pullBufferLength); err != nil {
		return fmt.Errorf("play: %w", err)
	}
	return nil
}

// waitResult reads until the _result or _error of transaction txn; other
// messages are dropped (nothing that matters comes before it).
func (c *pullConn) waitResult(txn float64) (amfCommand, error) {
	for {
		m, err := c.next()
		if err != nil {
			return amfCommand{}, err
		}
		if m.typeID != msgTypeCommandAMF0 {
			continue
		}
		cmd, err := parseCommand(m.payload)
		if err != nil {
			return amfCommand{}, fmt.Errorf("bad answer: %w", err)
		}
		switch {
		case cmd.name == "_result" && cmd.txn == txn:
			return cmd, nil
		case cmd.name == "_error" && cmd.txn == txn:
			return cmd, fmt.Errorf("refused: %s", cmd.describe())
		}
	}
}

func lastNumber(vals []any) (float64, bool) {
	for i := len(vals) - 1; i >= 0; i-- {
		if f, ok := vals[i].(float64); ok {
			return f, true
		}
	}
	return 0, false
}

// pullSession is one connection's play: it publishes the stream once media
// comes and hands the tags to its tagSink.
type pullSession struct {
	p       *Puller
	c       *pullConn
	sink    tagSink
	started time.Time // when the stream was published; zero before
}

// receive takes the server's messages until the connection ends.
func (s *pullSession) receive() error {
	c := s.c
	for {
		m, err := c.next()
		if err != nil {
			return err
		}
		switch m.typeID {
		case msgTypeCommandAMF0:
			cmd, err := parseCommand(m.payload)
			if err != nil {
				s.p.log.Debug("rtmp pull: command ignored", "err", err)
				continue
			}
			if err := s.command(cmd); err != nil {
				return err
			}
		case msgTypeAudio, msgTypeVideo, msgTypeDataAMF0:
			if err := s.media(m.typeID, m.ts, m.payload); err != nil {
				return err
			}
		case msgTypeAggregate:
			if err := s.aggregate(m); err != nil {
				return err
			}
		}
	}
}

// command handles a command message once play was sent.
func (s *pullSession) command(cmd amfCommand) error {
	switch cmd.name {
	case "onStatus":
		level, code, _ := cmd.info()
		switch {
		case level == "error":
			return fmt.Errorf("play %q refused: %s", s.p.src.name, cmd.describe())
		case code == "NetStream.Play.Start":
			return s.start()
		case code == "NetStream.Play.Stop" || code == "NetStream.Play.UnpublishNotify" || code == "NetStream.Play.Complete":
			return fmt.Errorf("the server stopped the stream: %s", cmd.describe())
		}
	case "_error":
		return fmt.Errorf("refused: %s", cmd.describe())
	case "close":
		return errors.New("the server closed the stream (close command)")
	}
	return nil
}

// start publishes the stream, once.
func (s *pullSession) start() error {
	if !s.started.IsZero() {
		return nil
	}
	pub, err := s.p.reg.Publish(s.p.path, "rtmp pull "+s.p.src.redacted)
	if err != nil {
		return err
	}
	pub.SetKind(access.KindRTMPPull)
	s.c.playing = true
	s.started = time.Now()
	s.sink = tagSink{stream: pub, log: s.p.log, configWait: s.p.configWait}
	s.p.log.Info("rtmp pull playing", "app", s.p.src.app, "stream_id", s.c.streamID)
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
	case msgTypeAudio:
		return s.sink.audio(ts, payload)
	case msgTypeVideo:
		return s.sink.video(ts, payload)
	default:
		return s.sink.metadata(stripSetDataFrame(payload))
	}
}

// aggregate splits an aggregate message into its FLV tags (RTMP
// specification 7.1.6): each has an 11-byte tag header, the body and the
// 4-byte previous tag size. The tags' timestamps are moved so that the
// first is the message's.
func (s *pullSession) aggregate(m rtmpMsg) error {
	b := m.payload
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
		case msgTypeAudio, msgTypeVideo, msgTypeDataAMF0:
			if err := s.media(typeID, m.ts+(ts-base), body); err != nil {
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
	if len(b) >= 3+len(name) && b[0] == amf0String && int(binary.BigEndian.Uint16(b[1:])) == len(name) && string(b[3:3+len(name)]) == name {
		return b[3+len(name):]
	}
	return b
}

// end leaves the stream, logs the summary and returns for how long the
// stream was published.
func (s *pullSession) end(reason error) time.Duration {
	if s.started.IsZero() {
		return 0
	}
	s.sink.stream.Close()
	d := time.Since(s.started)
	args := []any{
		"duration", d.Round(time.Millisecond),
		"video_frames", s.sink.videoUnits,
		"audio_frames", s.sink.audioUnits,
		"reason", reason.Error(),
	}
	if s.sink.dropped > 0 {
		args = append(args, "dropped_before_tracks", s.sink.dropped)
	}
	s.p.log.Info("rtmp pull ended", args...)
	return d
}
