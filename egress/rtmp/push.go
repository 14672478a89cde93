// Package rtmp is the RTMP egress: it pushes a stream to a remote RTMP or
// RTMPS server (YouTube/Twitch-style ingest; Pusher) and serves RTMP
// players on the bridge's own RTMP port (Play, behind the ingest server's
// play hook). Both send the same FLV stream:
//
//   - onMetaData (as "@setDataFrame" when pushing): width, height and
//     frame rate from the SPS, audio sample rate and channels, codec ids 7
//     (H.264) and 10 (AAC);
//   - the AVC sequence header (an AVCDecoderConfigurationRecord built from
//     the SPS and PPS in front of the first IDR) and the AAC sequence header
//     (the track's AudioSpecificConfig), at timestamp 0;
//   - then FLV tags from a keyframe on: the cached GOP first (the stream's
//     last keyframe and what followed, so a push or a player starts at
//     once), then live. Video tags carry the NAL units with 4-byte lengths,
//     the keyframe flag on IDRs and the composition time PTS - DTS (so
//     B-frames keep their order); audio tags carry raw AAC frames.
//     Timestamps are milliseconds from the first tag's DTS, never
//     decreasing per track. Audio from before the first keyframe is not
//     sent. New parameter sets (in front of an IDR) or a new
//     AudioSpecificConfig (a new publisher took the stream over) are sent
//     as new sequence headers before the unit that uses them.
//
// RTMP carries H.264 and AAC only. Opus audio (WHIP and some SRT sources)
// is transcoded to AAC-LC 48 kHz stereo through a transcode.AACViews: once
// per stream however many targets and players need it (see
// transcode/opus_aac.go). H.265 video and other tracks are left out, with
// a log line.
//
// A pusher or player is an ordinary media.Reader of the stream: when it
// is slow its queue drops (and skips to the next keyframe); the publisher,
// the other readers and the other targets never wait for it.
package rtmp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/wishbridge/bridge/internal/backoff"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/reconnect"
	"github.com/wishbridge/bridge/internal/rtmpwire"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
)

// PushConfig configures a Pusher.
type PushConfig struct {
	// Registry holds the stream to push.
	Registry *media.Registry
	// Path is the stream's path ("live/test").
	Path string
	// URL is the target: rtmp://host[:port]/app/key or rtmps://...
	// (default ports 1935 and 443). The last path segment, with the
	// URL's query, is the stream name published; the rest of the path is
	// the application. It is never logged unredacted.
	URL string
	// AACBitrate is the bitrate (bit/s) of AAC made from Opus audio; 0
	// means transcode.DefaultAACBitrate.
	AACBitrate int
	// AAC shares the Opus -> AAC transcode of a stream with the other
	// egresses that need it. nil gives the pusher a transcoder of its own.
	AAC *transcode.AACViews
	// TLSConfig is used for rtmps:// targets; nil verifies the server's
	// certificate against the system's roots for the URL's host.
	TLSConfig *tls.Config
	// Log receives the pusher's events; nil means slog.Default().
	Log *slog.Logger
}

// Reconnect policy.
const (
	minBackoff = backoff.DefaultMin
	maxBackoff = backoff.DefaultMax
	// backoffReset is how long a push must have run for the next failure
	// to be retried after minBackoff again.
	backoffReset = backoff.DefaultReset
	// pollInterval is how often a pusher looks for its stream while it
	// is not published.
	pollInterval = 250 * time.Millisecond
)

// Pusher pushes one stream to one RTMP target for as long as it runs:
// whenever the stream is published it connects, publishes and sends the
// stream. When the target refuses or fails (connect, handshake, publish
// refused, a write or the server ending it) it logs why and tries again
// after a wait that starts at 1 s and doubles up to 30 s, back to 1 s
// after a minute of streaming. When the stream ends it unpublishes and
// waits 1 s before looking for the stream again. While the stream is in
// its grace period (its publisher reconnecting) the push stays connected
// and goes on with the new publisher. Create it with NewPusher and call
// Run.
type Pusher struct {
	reg     *media.Registry
	path    string
	cfg     rtmpwire.Config // the target and its TLS configuration
	bitrate int
	views   *transcode.AACViews
	log     *slog.Logger

	// Tunables, fixed before Run (tests shorten them).
	minBackoff, maxBackoff, backoffReset, poll time.Duration
	// onStreaming, if set, is called each time media starts flowing to
	// the target (the reader is attached).
	onStreaming func()
	// tsOffset is added to every timestamp sent, in ms.
	tsOffset int64
}

// outChunkSize is the chunk size a pusher announces and sends with
// (ffmpeg's and OBS's): a command fits one chunk, a frame takes few.
const outChunkSize = 4096

// NewPusher checks cfg and returns its pusher. It fails if the URL is not
// an RTMP URL with an application and a stream name (the error shows the
// URL redacted).
func NewPusher(cfg PushConfig) (*Pusher, error) {
	u, err := rtmpwire.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("rtmp push: %w", err)
	}
	if cfg.Registry == nil || cfg.Path == "" {
		return nil, errors.New("rtmp push: no registry or path")
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("stream", cfg.Path, "target", u.Redacted)
	views := cfg.AAC
	if views == nil {
		views = transcode.NewAACViews(log)
	}
	return &Pusher{
		reg: cfg.Registry, path: cfg.Path, bitrate: cfg.AACBitrate, views: views, log: log,
		minBackoff: minBackoff, maxBackoff: maxBackoff, backoffReset: backoffReset, poll: pollInterval,
		cfg: rtmpwire.Config{URL: u, TLS: cfg.TLSConfig, ChunkSize: outChunkSize},
	}, nil
}

// Run pushes until ctx ends, then closes the connection to the target
// (after FCUnpublish and deleteStream) and returns. What follows each
// attempt is internal/reconnect's policy for pushes.
func (p *Pusher) Run(ctx context.Context) {
	reconnect.Loop{
		Name: "rtmp push",
		Log:  p.log,
		Backoff: func() *backoff.Backoff {
			return backoff.New(p.minBackoff, p.maxBackoff, p.backoffReset)
		},
		Stream: func(ctx context.Context) (*media.Stream, error) {
			return reconnect.WaitStream(ctx, p.reg, p.path, p.poll, p.log, "rtmp push")
		},
		Attempt: p.pushOnce,
	}.Run(ctx)
}

// pushOnce connects, publishes and sends st until something fails; its
// session starts once the reader is attached. Packets are the frames sent
// (RTMP has no packets of its own), bytes their tag bodies.
func (p *Pusher) pushOnce(ctx context.Context, st *media.Stream, a *reconnect.Attempt) error {
	log := a.Log
	c, err := rtmpwire.DialPublish(ctx, p.cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	// When Run is stopped, a write blocked on a stalled target gives up
	// within a second, and so does the unpublish after it.
	defer context.AfterFunc(ctx, func() {
		defer panics.Recover("rtmp push", log, func() { _ = c.Close() })
		c.Hurry(time.Second)
	})()
	src, release := source(st, p.views, p.bitrate, a.Notes())
	defer release()
	out, skipped, err := newFLVOut(src, c.WriteMedia, true)
	if err != nil {
		c.Unpublish()
		return err
	}
	out.tsOffset = p.tsOffset
	out.aacBitrate = p.bitrate
	if out.aacBitrate == 0 {
		out.aacBitrate = transcode.DefaultAACBitrate
	}
	if src == st {
		out.aacBitrate = 0 // not ours to announce
	}
	r, err := src.NewReader(media.ReaderOptions{Name: "rtmp push " + p.cfg.URL.Redacted, StartAtKeyframe: true})
	if err != nil {
		c.Unpublish()
		return err
	}
	defer r.Close()

	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer panics.Recover("rtmp push", log, func() { cancel(errors.New("internal error reading from the server")) })
		cancel(readLoop(c))
	}()
	if len(skipped) > 0 {
		a.Started("tracks_not_pushed", skipped) // RTMP carries H.264 and AAC only
	} else {
		a.Started()
	}
	if p.onStreaming != nil {
		p.onStreaming()
	}
	err = out.run(sctx, r)
	a.Moved(out.bytes, out.frames[0]+out.frames[1], "video_frames", out.frames[0], "audio_frames", out.frames[1])
	if cause := context.Cause(sctx); cause != nil && ctx.Err() == nil && errors.Is(err, context.Canceled) {
		err = cause // the server's side ended it
	}
	if ctx.Err() != nil || media.IsStreamEnd(err) {
		c.Unpublish()
	}
	c.Close() // ends readLoop
	<-readDone
	if err == nil {
		err = errors.New("push ended")
	}
	return err
}

// readLoop reads the server's messages while media flows (the client
// answers pings and acknowledges); it returns why the connection can no
// longer be used: the server closed it, or sent an error status (e.g. it
// stopped the publish).
func readLoop(c *rtmpwire.Client) error {
	for {
		m, err := c.Next()
		if err != nil {
			return err
		}
		if m.TypeID != rtmpwire.TypeCommandAMF0 && m.TypeID != rtmpwire.TypeCommandAMF3 {
			continue
		}
		cmd, err := rtmpwire.ParseCommand(m.TypeID, m.Payload)
		if err != nil {
			continue // a command we cannot read cannot be one that ends the publish
		}
		switch st := cmd.Status(); {
		case cmd.Name == "onStatus" && (st.Level == "error" || st.Code == "NetStream.Publish.Stop" || st.Code == "NetStream.Unpublish.Success"):
			return fmt.Errorf("the server ended the publish: %s", c.Describe(cmd))
		case cmd.Name == "close" || cmd.Name == "disconnect":
			return errors.New("the server closed the connection (close command)")
		}
	}
}
