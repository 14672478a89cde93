// Package rtmp is the RTMP publish ingest: encoders (OBS, ffmpeg, hardware)
// publish H.264 + AAC over RTMP and each published stream becomes a
// media.Stream in the hub. It is built on github.com/yutopp/go-rtmp, with
// one handler per connection. A Puller (pull.go) plays a stream from a
// remote RTMP server instead and publishes it the same way.
//
// # Stream path and key
//
// A publish to rtmp://host[:port]/APP/NAME?key=SECRET becomes the stream
// path "APP/NAME" (leading and trailing slashes trimmed; APP may itself
// contain slashes, "rtmp://host/a/b/c" is path "a/b/c" when the client
// splits it as app "a/b", name "c"). The publish key is the "key" query
// parameter of the stream name; clients split the URL into app and stream
// name themselves:
//
//   - ffmpeg: ffmpeg ... -f flv 'rtmp://host/live/test?key=SECRET'
//   - OBS: Server "rtmp://host/live", Stream Key "test?key=SECRET".
//
// The path must pass streampath.Check, the path rule every protocol
// shares (1 to 256 bytes, no space or control character, none of
// `:?#,%\`, no empty, "." or ".." segment); a path that does not is
// refused with NetStream.Publish.BadName or NetStream.Play.Failed, saying
// why.
//
// A "key" in the query of the app name (rtmp://host/live?key=SECRET/test) is
// used when the stream name has none. The path, key and peer address go to
// Config.Authorize before anything is registered or played; the key is
// never logged nor echoed back.
//
// # What is accepted
//
// Publishing, and playing when Config.Play is set (see PlayWriter);
// without it a play request is refused with NetStream.Play.Failed "play is
// not supported yet". One publish or play per connection. Video must be
// H.264 in legacy FLV framing (codec id 7); any other video codec, and
// Enhanced RTMP (the ex-header bit), close the connection with a log line
// saying why. Audio must be AAC; other audio formats are logged once and
// ignored (the stream goes on as video only).
//
// # Refusals
//
// A refused publish gets an onStatus error before the connection closes, so
// the client can show why (ffmpeg prints "Server error: <description>"):
//
//   - NetStream.Publish.BadName: invalid name, no route or protocol not
//     allowed on the route (access.ErrNoRoute, access.ErrProtocolNotAllowed),
//     or the path already has a publisher (media.ErrPublisherExists; the
//     first publisher keeps going);
//   - NetStream.Publish.Unauthorized: missing or wrong key (access.ErrBadKey);
//   - NetStream.Publish.Failed: the stream is served by another node
//     (*access.Elsewhere; RTMP cannot redirect), or any other Authorize
//     error.
//
// go-rtmp follows every refusal with its own NetStream.Publish.Failed
// "Publish failed."; ours is sent first.
//
// # Tracks and units
//
// The stream's tracks are declared (media.Stream.SetTracks) once the AVC
// sequence header has arrived, and the AAC sequence header too when the
// stream has audio. Whether it has audio or video is taken from onMetaData
// (audiocodecid, videocodecid) when the encoder sends it, otherwise from the
// tags that arrive; when what is expected has not arrived 1 s after the
// first sequence header, the tracks that are known are declared. Until then
// the units are kept in a small bounded buffer (video from the first IDR on,
// audio after its sequence header) and written, in order, right after
// SetTracks; nothing is lost at the start of a normal stream. Units for a
// track that arrives after the declaration are dropped (logged once).
//
// Video goes through transcode.H264Normalizer (parameter sets from each
// sequence header; SPS and PPS in front of every IDR). PTS and DTS are the
// RTMP message timestamps (DTS) plus the FLV composition time, in
// milliseconds since the publisher's origin, unwrapped past 32 bits; they
// are passed on as the encoder sent them. AAC units are raw frames with
// PTS = DTS.
//
// # Limits
//
// Handshake, connect and publish must complete within 10 s of the accept,
// and a publisher that sends nothing for 10 s is dropped; a peer that does
// not read what the server writes for 10 s is dropped. A connection whose
// first byte is not the RTMP version (3) is closed at once. Messages are
// bounded by type before go-rtmp buffers them (see guard.go): 16 KiB for
// commands and metadata, 8 MiB + 64 KiB for video, 64 KiB for audio; access
// units by mediacommon's h264.MaxAccessUnitSize and MaxNALUsPerAccessUnit;
// 16 chunk streams and 8 message streams per connection; a sustained
// inbound rate above Config.MaxBitrate (200 Mbit/s by default, averaged
// over 5 s) closes the connection.
//
// Config.MaxConns and MaxConnsPerAddr bound the connections: one over
// either is closed right after the TCP accept, before the handshake and
// without a goroutine, so a flood of half-open connections costs a file
// descriptor for a moment, not a connection's goroutines and buffers; a
// connection admitted holds its slot at most 10 s unless it publishes or
// plays. Config.MaxReaders bounds the readers of one stream: a play over it
// gets NetStream.Play.Failed saying so. Each refusal is counted
// (Server.Refusals) and logged at most once per client address every 10 s.
package rtmp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	gortmp "github.com/yutopp/go-rtmp"
	"github.com/yutopp/go-rtmp/message"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/internal/connlimit"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/media"
)

// Config configures a Server.
type Config struct {
	// Registry receives the published streams.
	Registry *media.Registry
	// Authorize decides every publish and play; it is called with Action
	// Publish or Read, Protocol RTMP, the stream path, the key and the
	// peer address, on the connection's goroutine (a slow Authorize holds
	// up that connection only, and Close waits for it). The session logs
	// the route of its Grant. Required: a nil Authorize refuses every
	// publish and play.
	Authorize access.Authorizer
	// Play, when set, serves the play requests Authorize admitted (see
	// PlayWriter); nil refuses every play with NetStream.Play.Failed.
	Play func(ctx context.Context, req PlayRequest, w PlayWriter) error
	// Log receives connection and stream events; nil means slog.Default().
	Log *slog.Logger

	// MaxConns and MaxConnsPerAddr bound the open connections, in total
	// and per client address (IPv6 per /64; see internal/addrlimit). A
	// connection over either is closed right after the TCP accept, before
	// the handshake and without a goroutine of its own. 0 means no limit.
	// cmd/bridge sets them from limits.rtmp_connections and
	// limits.rtmp_connections_per_address.
	MaxConns, MaxConnsPerAddr int
	// MaxReaders returns how many readers the stream at path may have,
	// counted by the hub across every read protocol (media.Stream.Readers:
	// WHEP viewers, RTMP players, SRT readers); a play of a stream that
	// has that many already is refused with NetStream.Play.Failed. nil, or
	// a result <= 0, means no limit. cmd/bridge returns the route's
	// max_readers or limits.readers_per_stream.
	MaxReaders func(path string) int
	// MaxBitrate bounds what one connection sends, in bit/s averaged over
	// 5 s; over it the connection is closed. 0 means
	// connlimit.DefaultMaxBitrate. cmd/bridge sets it from limits.ingest_bitrate.
	MaxBitrate int
	// RefusalLogEvery is how often one client address may log a refusal
	// of one kind (its status or reject code); 0 means
	// ratelog.DefaultInterval. Tests that expect every refusal's line set
	// it short.
	RefusalLogEvery time.Duration
}

// Defaults for the timeouts and limits the Config does not expose.
const (
	defaultSetupTimeout = 10 * time.Second
	defaultIdleTimeout  = 10 * time.Second
	defaultWriteTimeout = 10 * time.Second
	defaultConfigWait   = time.Second
	bitrateWindow       = 5 * time.Second
	// ackWindowSize is the window acknowledgement size announced to the
	// peer and used for our acknowledgements (the usual 2.5 MB).
	ackWindowSize = 2_500_000
	// maxMessageStreams bounds createStream per connection (stream 0 is
	// the control stream).
	maxMessageStreams = 8
	// outChunkSize is the chunk size the server sends with, so a status
	// message goes out in one chunk.
	outChunkSize = 4096
)

// Server accepts RTMP publishers and turns each publish into a stream in
// the registry. Create it with NewServer; Serve and Close may be called from
// different goroutines.
type Server struct {
	reg  *media.Registry
	auth access.Authorizer
	log  *slog.Logger

	// Tunables, fixed before Serve (tests shorten them).
	setupTimeout time.Duration // handshake + connect + publish
	idleTimeout  time.Duration // no data from a publisher
	writeTimeout time.Duration
	configWait   time.Duration // waiting for the other track's sequence header
	maxBitrate   int64
	// onPublish, if set, is called with each accepted stream before any of
	// its units is written (tests attach readers there).
	onPublish func(*media.Stream)
	play      func(context.Context, PlayRequest, PlayWriter) error

	gate *connlimit.Gate // connection slots (taken at accept), reader limit, refusals

	connSeq atomic.Uint64 // numbers the connections' ids

	mu        sync.Mutex
	closed    bool               // guarded by mu
	serving   bool               // guarded by mu
	rs        *gortmp.Server     // guarded by mu
	open      map[*conn]struct{} // guarded by mu
	acceptErr error              // guarded by mu: why the listener failed
	wg        sync.WaitGroup     // one per accepted connection until it is torn down
	done      chan struct{}      // closed by Close
}

// NewServer returns a server for cfg. It does not listen; call Serve.
func NewServer(cfg Config) *Server {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	auth := cfg.Authorize
	if auth == nil {
		auth = access.DenyAll
	}
	return &Server{
		play:         cfg.Play,
		reg:          cfg.Registry,
		auth:         auth,
		log:          log,
		setupTimeout: defaultSetupTimeout,
		idleTimeout:  defaultIdleTimeout,
		writeTimeout: defaultWriteTimeout,
		configWait:   defaultConfigWait,
		maxBitrate:   int64(cmp.Or(cfg.MaxBitrate, connlimit.DefaultMaxBitrate)),
		gate:         newGate(cfg, log),
		open:         make(map[*conn]struct{}),
		done:         make(chan struct{}),
	}
}

// Refusals returns what the server's limits refused since it was made,
// for metrics.
func (s *Server) Refusals() connlimit.Refusals { return s.gate.Refusals() }

// Serve accepts connections on l until Close, then returns nil; it returns
// an error if l fails for another reason (after closing it). Serve takes
// ownership of l.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	if s.serving {
		s.mu.Unlock()
		return errors.New("rtmp: Serve called twice")
	}
	s.serving = true
	s.rs = gortmp.NewServer(&gortmp.ServerConfig{OnConnect: s.onConnect})
	rs := s.rs
	s.mu.Unlock()

	err := rs.Serve(&listener{Listener: l, srv: s})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.acceptErr != nil {
		return s.acceptErr
	}
	if errors.Is(err, gortmp.ErrClosed) {
		return nil
	}
	return err
}

// Close stops accepting, closes every connection (publishers' streams end)
// and waits until go-rtmp has torn each one down (handler finished, socket
// closed; go-rtmp's two goroutines per connection return right after). It
// returns nil; calling it again only waits.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	close(s.done)
	rs := s.rs
	conns := make([]*conn, 0, len(s.open))
	for c := range s.open {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	if rs != nil {
		_ = rs.Close() // closes the listener; Serve returns
	}
	for _, c := range conns {
		_ = c.Conn.Close() // the handler sees the error and tears down
	}
	s.wg.Wait()
	return nil
}

func (s *Server) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// listener tracks accepted connections and retries temporary accept
// errors (go-rtmp's accept loop spins on them).
type listener struct {
	net.Listener
	srv *Server
}

func (l *listener) Accept() (net.Conn, error) {
	s := l.srv
	var delay time.Duration
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			if s.isClosed() {
				return nil, err
			}
			if errors.Is(err, net.ErrClosed) {
				// The listener went away under us: stop serving.
				s.mu.Lock()
				s.acceptErr = fmt.Errorf("rtmp: accept: %w", err)
				rs := s.rs
				s.mu.Unlock()
				_ = rs.Close()
				return nil, err
			}
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else {
				delay = min(2*delay, time.Second)
			}
			s.log.Warn("rtmp accept failed; retrying", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-s.done:
				return nil, err
			}
			continue
		}
		release, err := s.gate.Acquire(addrlimit.AddrOf(nc.RemoteAddr()), "rtmp connection refused", "peer", nc.RemoteAddr().String())
		if err != nil {
			// Refused before go-rtmp sees it: no handshake, no goroutine.
			nc.Close()
			continue
		}
		c := newConn(nc, s)
		c.release = release
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			release()
			return nil, net.ErrClosed
		}
		s.open[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		return c, nil
	}
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.open, c)
	s.mu.Unlock()
	if c.release != nil {
		c.release()
	}
	s.wg.Done()
}

// onConnect builds the per-connection handler and go-rtmp configuration.
// go-rtmp calls it on the connection's goroutine with no recover around it:
// after a panic the connection is closed (its slot given back) and go-rtmp
// gets it with its default configuration, so its handshake fails at once.
func (s *Server) onConnect(nc net.Conn) (rwc io.ReadWriteCloser, cfg *gortmp.ConnConfig) {
	c := nc.(*conn)
	defer panics.Recover(panicComponent, s.log.With("session", c.id, "peer", c.peer), func() {
		_ = c.Close()
		rwc, cfg = c, nil
	})
	h := newHandler(s, c)
	lg := logrus.New()
	lg.Out = io.Discard
	lg.Level = logrus.ErrorLevel
	lg.AddHook(h)
	return c, &gortmp.ConnConfig{
		Handler: h,
		ControlState: gortmp.StreamControlStateConfig{
			DefaultChunkSize:           128,
			MaxChunkSize:               maxChunkSize,
			MaxChunkStreams:            maxChunkStreams,
			DefaultAckWindowSize:       ackWindowSize,
			DefaultBandwidthWindowSize: ackWindowSize,
			DefaultBandwidthLimitType:  message.LimitTypeDynamic,
			MaxMessageSize:             maxVideoMessageSize, // not enforced by go-rtmp v0.0.7; see guard.go
			MaxMessageStreams:          maxMessageStreams,
		},
		Logger: lg,
	}
}

// conn wraps an accepted connection: deadlines, the handshake version
// check, the chunk guard, the inbound bitrate limit, and the first error
// seen, for the log line that ends the connection.
type conn struct {
	net.Conn
	srv      *Server
	peer     string
	accepted time.Time
	release  func() // gives the connection's slot back (Server.conns)

	// Set by the handler from the read goroutine.
	publishing atomic.Bool
	// id names the connection in the admin API (sessions.go); role is
	// what it does once it publishes or plays, nil before.
	id   string
	role atomic.Pointer[connRole]
	// bytesIn and bytesOut count what crossed the socket.
	bytesIn, bytesOut atomic.Uint64

	// Read side state, owned by go-rtmp's read goroutine.
	checkedVersion bool
	guard          *chunkGuard
	in             []byte // network reads
	out            []byte // filtered bytes not yet returned by Read
	outOff         int
	readErr        error // returned once out is drained
	winStart       time.Time
	winBytes       int64

	mu     sync.Mutex
	ioErr  error // first read or write error, guarded by mu
	closed sync.Once
}

func newConn(nc net.Conn, s *Server) *conn {
	c := &conn{
		Conn:     nc,
		srv:      s,
		peer:     nc.RemoteAddr().String(),
		accepted: time.Now(),
		id:       fmt.Sprintf("rtmp-%d", s.connSeq.Add(1)),
	}
	c.guard = newChunkGuard(c.publishing.Load)
	return c
}

// Read reads from the peer through the version check, the chunk guard and
// the bitrate limit. go-rtmp reads through a bufio.Reader, so this sees
// large reads.
func (c *conn) Read(p []byte) (int, error) {
	for c.outOff == len(c.out) {
		if c.readErr != nil {
			return 0, c.readErr
		}
		c.out, c.outOff = c.out[:0], 0
		if err := c.fill(); err != nil {
			c.readErr = err
		}
	}
	n := copy(p, c.out[c.outOff:])
	c.outOff += n
	return n, nil
}

// fill reads once from the network into c.out.
func (c *conn) fill() error {
	now := time.Now()
	deadline := now.Add(c.srv.idleTimeout)
	if !c.publishing.Load() {
		deadline = c.accepted.Add(c.srv.setupTimeout)
	}
	if err := c.Conn.SetReadDeadline(deadline); err != nil {
		return c.fail(err)
	}
	if c.in == nil {
		c.in = make([]byte, 16<<10)
	}
	n, err := c.Conn.Read(c.in)
	if n > 0 {
		c.bytesIn.Add(uint64(n))
		p := c.in[:n]
		if !c.checkedVersion {
			c.checkedVersion = true
			if v := p[0]; v != 3 {
				if v == 6 || v == 8 {
					return c.fail(fmt.Errorf("encrypted RTMP (RTMPE, version byte %d) is not supported", v))
				}
				return c.fail(fmt.Errorf("not an RTMP handshake: version byte is 0x%02x, expected 0x03", v))
			}
		}
		var gerr error
		if c.out, gerr = c.guard.filter(c.out, p); gerr != nil {
			c.out = c.out[:0]
			return c.fail(gerr)
		}
		if c.winStart.IsZero() || now.Sub(c.winStart) >= bitrateWindow {
			c.winStart, c.winBytes = now, 0
		}
		c.winBytes += int64(n)
		if limit := c.srv.maxBitrate / 8 * int64(bitrateWindow/time.Second); c.winBytes > limit {
			c.out = c.out[:0]
			c.srv.gate.CountBitrate()
			return c.fail(fmt.Errorf("peer sends more than %g Mbit/s (limits.ingest_bitrate)", float64(c.srv.maxBitrate)/1e6))
		}
	}
	if err == nil {
		return nil
	}
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
		// A clean close by the peer; go-rtmp treats io.EOF specially, so
		// it stays unwrapped.
		c.fail(errPeerClosed)
		return err
	case errors.As(err, &ne) && ne.Timeout():
		if c.publishing.Load() {
			err = fmt.Errorf("no data for %v: %w", c.srv.idleTimeout, err)
		} else {
			err = fmt.Errorf("handshake, connect and publish not done within %v: %w", c.srv.setupTimeout, err)
		}
	}
	return c.fail(err)
}

func (c *conn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.srv.writeTimeout)); err != nil {
		return 0, c.fail(err)
	}
	n, err := c.Conn.Write(p)
	c.bytesOut.Add(uint64(n))
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			err = fmt.Errorf("peer did not read for %v: %w", c.srv.writeTimeout, err)
		}
		return n, c.fail(err)
	}
	return n, nil
}

// fail records the first I/O error and returns err.
func (c *conn) fail(err error) error {
	c.mu.Lock()
	if c.ioErr == nil {
		c.ioErr = err
	}
	c.mu.Unlock()
	return err
}

func (c *conn) firstErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ioErr
}

// Close is called once by go-rtmp when it has finished with the
// connection (after the handler's OnClose).
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.closed.Do(func() { c.srv.forget(c) })
	return err
}

// newGate makes the server's admission gate from cfg.
func newGate(cfg Config, log *slog.Logger) *connlimit.Gate {
	g := connlimit.New(cfg.MaxConns, cfg.MaxConnsPerAddr, cfg.MaxReaders, log)
	g.KindLog.Every = cfg.RefusalLogEvery
	return g
}
