// Package srt is the SRT egress: it pushes a stream to a remote SRT
// listener as the caller (Pusher), and serves the readers the bridge's SRT
// listener accepts (ServeReader). Both send MPEG-TS (see tsOut): H.264 or
// H.265 video with an AUD in front of every access unit and SPS/PPS in
// front of every IDR, PCR on the video PID, AAC in ADTS or Opus, one PES per
// unit, in SRT payloads of 1316 bytes (7 TS packets; the rest of an access
// unit's packets leave at its end rather than wait for the next unit).
//
// Output starts at a keyframe: the stream's cached GOP first, so a reader
// or target starts at once, then live. Timestamps are the source's, moved
// so that the first unit sent is at 1 s.
//
// Opus audio (WHIP and some SRT sources) is transcoded to AAC-LC 48 kHz
// stereo by default (AudioAAC), through a transcode.AACViews shared with
// the other egresses (once per stream however many need it); AudioOpus
// sends it as Opus. AAC sources are always sent as AAC.
//
// A pusher or reader is an ordinary media.Reader of the stream: when it is
// slow its queue drops (and skips to the next keyframe); nobody else
// waits for it.
package srt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/wishbridge/bridge/internal/backoff"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/reconnect"
	"github.com/wishbridge/bridge/internal/srtcall"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
)

// ReaderOptions configures ServeReader.
type ReaderOptions struct {
	// Name identifies the reader in logs, e.g. "srt read 10.0.0.5:4000".
	Name string
	// Audio is AudioAAC (or "") or AudioOpus: what Opus audio is sent as.
	Audio string
	// AACBitrate is the bitrate (bit/s) of AAC made from Opus; 0 means
	// transcode.DefaultAACBitrate.
	AACBitrate int
	// AAC shares the Opus -> AAC transcode of a stream with the other
	// egresses that need it. nil transcodes for this reader alone.
	AAC *transcode.AACViews
	// Log receives the reader's events; nil means slog.Default().
	Log *slog.Logger
}

// ServeReader sends st to conn, an accepted SRT connection whose peer
// asked to read (streamid "read:..." or "#!::...,m=request"), until the
// stream ends, the peer goes away or ctx ends, and returns why: an error
// wrapping media.ErrStreamEnded (or media.ErrIncompatibleRepublish) when
// the stream ended, the connection's error, or ctx's error. It waits for
// st's tracks if they are not known yet. ServeReader owns conn: it closes
// it before returning.
func ServeReader(ctx context.Context, conn gosrt.Conn, st *media.Stream, opts ReaderOptions) error {
	defer conn.Close()
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	// The peer sends no data; a Read returns when the connection ends
	// (its shutdown, or 5 s without a keepalive).
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer panics.Recover("srt reader", log, func() { cancel(errPeerGone) })
		buf := make([]byte, gosrt.MAX_PAYLOAD_SIZE)
		for {
			if _, err := conn.Read(buf); err != nil {
				cancel(errPeerGone)
				return
			}
		}
	}()
	defer func() {
		conn.Close()
		<-readDone
	}()
	if err := st.WaitReady(ctx); err != nil {
		return cause(ctx, err)
	}
	views := opts.AAC
	if views == nil {
		views = transcode.NewAACViews(log)
	}
	src, release := source(st, opts.Audio, views, opts.AACBitrate, log)
	defer release()
	out, skipped, err := newTSOut(src, func(b []byte) error {
		_, err := conn.Write(b)
		return err
	})
	if err != nil {
		return err
	}
	for _, s := range skipped {
		log.Info("track not sent over SRT", "track", s, "reader", opts.Name)
	}
	name := opts.Name
	if name == "" {
		name = "srt read"
	}
	r, err := src.NewReader(media.ReaderOptions{Name: name, StartAtKeyframe: true})
	if err != nil {
		return err
	}
	defer r.Close()
	return cause(ctx, out.run(ctx, r))
}

var errPeerGone = errors.New("the peer closed the connection (or sent nothing for 5 s)")

// cause returns the reason ctx was cancelled with instead of err when err
// is just the cancellation.
func cause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil && errors.Is(err, context.Canceled) {
		return c
	}
	return err
}

// PushConfig configures a Pusher.
type PushConfig struct {
	// Registry holds the stream to push.
	Registry *media.Registry
	// Path is the stream's path ("live/test").
	Path string
	// URL is the target: srt://host:port[?options]. Options: streamid
	// (sent as written after percent-decoding; "#" needs no escaping),
	// passphrase (10-79 characters), pbkeylen (16, 24 or 32), latency (in
	// ms, as gosrt and srt-live-transmit read it, not ffmpeg's µs; default
	// 120). Others are ignored. It is never logged unredacted.
	URL string
	// Audio is AudioAAC (or "") or AudioOpus: what Opus audio is sent as.
	Audio string
	// AACBitrate is the bitrate (bit/s) of AAC made from Opus; 0 means
	// transcode.DefaultAACBitrate.
	AACBitrate int
	// AAC shares the Opus -> AAC transcode of a stream with the other
	// egresses that need it. nil gives the pusher a transcoder of its own.
	AAC *transcode.AACViews
	// Log receives the pusher's events; nil means slog.Default().
	Log *slog.Logger
}

// target is a parsed srt:// push URL.
type target struct {
	addr     string
	cfg      gosrt.Config
	redacted string
}

// Defaults of a target.
const (
	defaultLatency = srtcall.DefaultLatency
	dialTimeout    = 3 * time.Second
)

// parseTarget reads srt://host:port?streamid=...&passphrase=...&latency=...
// (see srtcall.Parse).
func parseTarget(raw string) (target, error) {
	u, err := srtcall.Parse(raw, dialTimeout)
	return target{addr: u.Addr, cfg: u.Config, redacted: u.Redacted}, err
}

// Reconnect policy (as for RTMP targets).
const (
	minBackoff   = backoff.DefaultMin
	maxBackoff   = backoff.DefaultMax
	backoffReset = backoff.DefaultReset
	pollInterval = 250 * time.Millisecond
)

// Pusher pushes one stream to one SRT listener for as long as it runs:
// whenever the stream is published it connects as the caller and sends the
// stream. When the listener refuses or the connection fails it logs why
// and tries again after a wait that starts at 1 s and doubles up to 30 s,
// back to 1 s after a minute of streaming. When the stream ends it closes
// the connection and waits 1 s before looking for the stream again. Create
// it with NewPusher and call Run.
type Pusher struct {
	reg     *media.Registry
	path    string
	t       target
	audio   string
	bitrate int
	views   *transcode.AACViews
	log     *slog.Logger

	// Tunables, fixed before Run (tests shorten them).
	minBackoff, maxBackoff, backoffReset, poll time.Duration
	// onStreaming, if set, is called each time media starts flowing.
	onStreaming func()
}

// NewPusher checks cfg and returns its pusher. It fails if the URL is not
// a usable srt:// URL (the error shows the URL redacted) or Audio is not
// AudioAAC, AudioOpus or "".
func NewPusher(cfg PushConfig) (*Pusher, error) {
	t, err := parseTarget(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("srt push: %w", err)
	}
	if cfg.Registry == nil || cfg.Path == "" {
		return nil, errors.New("srt push: no registry or path")
	}
	switch cfg.Audio {
	case "", AudioAAC, AudioOpus:
	default:
		return nil, fmt.Errorf("srt push: audio %q is not %q or %q", cfg.Audio, AudioAAC, AudioOpus)
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("stream", cfg.Path, "target", t.redacted)
	views := cfg.AAC
	if views == nil {
		views = transcode.NewAACViews(log)
	}
	return &Pusher{
		reg: cfg.Registry, path: cfg.Path, t: t, audio: cfg.Audio, bitrate: cfg.AACBitrate, views: views, log: log,
		minBackoff: minBackoff, maxBackoff: maxBackoff, backoffReset: backoffReset, poll: pollInterval,
	}, nil
}

// Run pushes until ctx ends, then closes the connection and returns. A
// connection attempt in progress is not interrupted: Run may take up to
// the SRT connection timeout (3 s) to return. What follows each attempt
// is internal/reconnect's policy for pushes.
func (p *Pusher) Run(ctx context.Context) {
	reconnect.Loop{
		Name: "srt push",
		Log:  p.log,
		Backoff: func() *backoff.Backoff {
			return backoff.New(p.minBackoff, p.maxBackoff, p.backoffReset)
		},
		Stream: func(ctx context.Context) (*media.Stream, error) {
			return reconnect.WaitStream(ctx, p.reg, p.path, p.poll, p.log, "srt push")
		},
		Attempt: p.pushOnce,
	}.Run(ctx)
}

// pushOnce connects and sends st until something fails; its session
// starts once the reader is attached. Bytes and packets are the SRT
// connection's data sent (headers and retransmissions included: what the
// push cost).
func (p *Pusher) pushOnce(ctx context.Context, st *media.Stream, a *reconnect.Attempt) error {
	dc, err := gosrt.Dial("srt", p.t.addr, p.t.cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	conn := &caller{Conn: dc}
	defer conn.close()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	src, release := source(st, p.audio, p.views, p.bitrate, a.Notes())
	defer release()
	out, skipped, err := newTSOut(src, func(b []byte) error {
		if err := conn.write(b); err != nil {
			return fmt.Errorf("write: the connection is closed (by the listener, or after 5 s without a word from it) or its send queue is full: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	r, err := src.NewReader(media.ReaderOptions{Name: "srt push " + p.t.redacted, StartAtKeyframe: true})
	if err != nil {
		return err
	}
	defer r.Close()
	if len(skipped) > 0 {
		a.Started("tracks_not_pushed", skipped) // SRT carries what tsOut can mux
	} else {
		a.Started()
	}
	if p.onStreaming != nil {
		p.onStreaming()
	}
	err = out.run(ctx, r)
	var cs gosrt.Statistics
	conn.Stats(&cs)
	a.Moved(cs.Accumulated.ByteSent, cs.Accumulated.PktSent, "video_frames", out.frames[0], "audio_frames", out.frames[1])
	return err
}

// caller is a connection made by gosrt.Dial.
//
// gosrt v0.11.0's dialer has a goroutine that, once the socket is closed,
// sends its error on an unbuffered channel that only Close (once, right
// after closing the socket, without waiting) and later Reads and Writes
// receive from; when it is not there yet for Close, it blocks for ever.
// close writes nothing a few times after Close to take that error, so the
// goroutine ends. (Whether Close took it cannot be seen: 200 ms is far
// more than the goroutine needs to get there.)
type caller struct {
	gosrt.Conn
	drained bool // a Write returned the dialer goroutine's error
}

func (c *caller) write(b []byte) error {
	_, err := c.Conn.Write(b)
	if err != nil && !errors.Is(err, io.EOF) {
		// io.EOF is the connection's own "closed" or "queue full"; any
		// other error came from the dialer goroutine.
		c.drained = true
	}
	return err
}

func (c *caller) close() {
	c.Conn.Close()
	for deadline := time.Now().Add(200 * time.Millisecond); !c.drained && time.Now().Before(deadline); {
		if c.write(nil) == nil {
			break // cannot happen once closed; do not spin on it
		}
		time.Sleep(2 * time.Millisecond)
	}
}
