// Package srt is the SRT listener: encoders and contribution links send
// MPEG-TS over SRT (caller mode) to the bridge, and each published stream
// becomes a media.Stream in the hub; with Config.Read set, the same
// listener also admits readers ("read:PATH") and hands each accepted
// connection to Read.Serve (the node writes the stream as MPEG-TS to it).
// It is built on github.com/datarhei/gosrt (transport, handshake,
// encryption) and mediacommon's MPEG-TS reader (demux). A Puller (pull.go)
// calls a remote SRT listener instead and demuxes what it sends the same
// way.
//
// # Admission
//
// Every connection request is decided before it is accepted, from its
// streamid (see ParseStreamID for the grammar), its encryption and the
// peer's address. The order is: parse the streamid, refuse any mode but
// publish (and read, when Config.Read is set), ask Config.Authorize
// (Read.Admit for a reader) with access.SRT, the path, the key and the
// peer, check the passphrase the path requires (Config.Passphrase), then
// claim the path in the registry (a reader: check the stream's reader
// limit, Config.MaxReaders). A refusal sends an SRT rejection reason to
// the caller and logs one line naming the peer, the path and the reason,
// at most once per caller address and rejection code every
// Config.RefusalLogEvery (10 s by default); the key is never logged. (libsrt 1.5 callers such as ffmpeg log the
// reason's name for the 10xx codes, "Unknown or erroneous" for 14xx, and
// fail with "Input/output error".)
//
//	1400 REJX_BAD_REQUEST   streamid cannot be parsed (or is empty: HSv4 callers)
//	1401 REJX_UNAUTHORIZED  missing or wrong key (access.ErrBadKey)
//	1402 REJX_OVERLOAD      a limit: the listener has Config.MaxConns connections, the
//	                        caller's address Config.MaxConnsPerAddr, or the stream a
//	                        reader asks for has Config.MaxReaders readers
//	1403 REJX_FORBIDDEN     protocol not allowed on the route, or any other Authorize error
//	1404 REJX_NOTFOUND      no route for the path (access.ErrNoRoute), no stream to
//	                        read (access.ErrNoStream), or the stream is served by
//	                        another node (*access.Elsewhere: SRT cannot redirect)
//	1405 REJX_BAD_MODE      read (m=request, "read:") without Config.Read, or an unknown mode
//	1409 REJX_CONFLICT      the path already has a publisher, here or on another node of
//	                        a cluster (media.ErrPublisherExists)
//	1500 REJX_ISE           registry failure
//	1010 REJ_BADSECRET      wrong passphrase
//	1011 REJ_UNSECURE       passphrase required but the caller does not encrypt,
//	                        or the caller encrypts and the path has no passphrase
//	1007 REJ_CLOSE          the server is shutting down (Drain, Close)
//
// 1409 is the value of SRT_REJX_CONFLICT in libsrt's access_control.h;
// gosrt v0.11.0 names 1407 REJX_CONFLICT, which libsrt does not use.
//
// The connection limits are applied first, before the streamid is even
// parsed and before a goroutine is started for the request; a connection
// holds its slot until it ends, publishers and readers alike. Refusals by
// a limit are counted (Server.Refusals) and logged at most once per caller
// address every 10 s.
//
// # Transport
//
// Live mode only (gosrt's only mode), payload size 1316 bytes (7 TS packets;
// what ffmpeg's pkt_size=1316 sends), receiver latency Config.Latency
// (120 ms by default; the larger of ours and the caller's wins). A publisher
// whose MPEG-TS program (PAT and PMT, and the first ADTS header of an AAC
// track) has not arrived 10 s after the accept is closed, and so is one
// that sends no MPEG-TS packet for 10 s (bytes that are not TS packets do
// not count); gosrt itself drops a peer it hears nothing from (not even
// keepalives) for 5 s. A publisher that sends more than Config.MaxBitrate
// (200 Mbit/s by default, averaged over 5 s) is disconnected, as RTMP's.
//
// # Demux
//
// The MPEG-TS program (PMT) names the tracks; the first H.264 or H.265
// track and the first AAC (ADTS) or Opus track are used, others are logged
// once and ignored. The tracks are declared (media.Publication.SetTracks)
// once each is ready: audio at its first PES (its parameters come from the
// first ADTS header or the Opus descriptor of the PMT), video at its first
// keyframe (H.264 IDR, H.265 IRAP) with its parameter sets. A track that
// sends nothing within 2 s of the PMT, or video without a usable keyframe
// within 10 s, is left out (logged; its units are dropped from then on).
// Until the declaration the units are kept (bounded) and written right
// after it. The stream starts at the first video frame: audio from before
// it is dropped, including audio the muxer interleaves after it.
//
// Timestamps come from the PES headers through one media.SourceClock for
// all tracks (33-bit wrap; a step larger than media.MaxTimestampJump off
// the time that passed is a discontinuity: re-anchored, counted and logged
// once per interval), are converted from 90 kHz to time.Duration and put
// on one origin: stream time 0 is the earliest DTS among the units
// written at the declaration (the first video frame's, when there is
// video). AAC units are one raw frame each, 1024 samples apart within a
// PES; Opus units one packet each, advanced by each packet's duration (20
// ms when its TOC is unusable). H.264 goes through transcode.H264Normalizer,
// H.265 through transcode.H265Normalizer (the same rules: no AUD or filler,
// VPS/SPS/PPS taken out and put back, current, in front of every IRAP).
//
// Transport errors are counted, not fatal: continuity-counter gaps (which
// is how SRT's too-late packet drop shows), packets flagged with a transport
// error, garbage between packets and PES that do not parse. They are
// logged at most once a second per stream with the count since the last
// line, and the total is in the summary when the publish ends. After an
// error on the video PID, or one that cannot be attributed to a PID, video
// is dropped until the next keyframe; audio carries on. The demuxer is fed
// one TS packet at a time, so an error is seen just before the demuxer
// handles the packet that carries it and the resync starts at the right
// frame. One PES (or table) above 9 MiB closes the connection: the demuxer
// would buffer it whole.
//
// Once the program is known, only the packets of the tracks used reach the
// demuxer: other PIDs (data, tables, tracks left out, PIDs the PMT does not
// name) are dropped unread and do not count as activity for the idle
// timeout. The demuxer thus holds at most one PES per used track (9 MiB
// each) and the at most 1 MiB mediacommon reads to find the program.
package srt

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/internal/connlimit"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/sessionlog"
	"github.com/wishbridge/bridge/media"
)

// Config configures a Server.
type Config struct {
	// Registry receives the published streams.
	Registry *media.Registry
	// Authorize decides every publish; it is called with Action Publish,
	// Protocol SRT, the stream path, the key (s= or key= of the streamid)
	// and the peer address, before the connection is accepted, on a
	// goroutine of its own. The session logs the route of its Grant (so
	// does a reader, of Read.Admit's). Required: a nil Authorize refuses
	// every publish.
	Authorize access.Authorizer
	// Passphrase returns the passphrase a path requires ("" = none). It is
	// called after Authorize allowed the publish, before the accept. nil
	// means no path has one. libsrt accepts passphrases of 10 to 79
	// bytes.
	Passphrase func(path string) string
	// Latency is the SRT receiver latency; 0 means 120 ms.
	Latency time.Duration
	// Read, when set, serves readers (streamid "read:PATH" or
	// "#!::r=PATH,m=request"). Read.Admit decides before the accept, like
	// Authorize (access.ErrBadKey: 1401, access.ErrNoRoute or
	// access.ErrNoStream: 1404), with Action Read; the route's passphrase applies as for publishers.
	// Read.Serve then owns the accepted connection until the context ends
	// (at Close) or it returns. nil refuses readers with 1405.
	Read *ReadHandler
	// Log receives connection and stream events; nil means slog.Default().
	Log *slog.Logger

	// MaxConns and MaxConnsPerAddr bound the connections, publishers and
	// readers together, in total and per caller address (IPv6 per /64; see
	// internal/addrlimit): a request over either is rejected with 1402
	// REJX_OVERLOAD. 0 means no limit. cmd/bridge sets them from
	// limits.srt_connections and limits.srt_connections_per_address.
	MaxConns, MaxConnsPerAddr int
	// MaxReaders returns how many readers the stream at path may have,
	// counted by the hub across every read protocol (media.Stream.Readers:
	// WHEP viewers, RTMP players, SRT readers); a reader of a stream that
	// has that many is rejected with 1402 REJX_OVERLOAD. nil, or a result
	// <= 0, means no limit. The node's MaxReaders returns the route's
	// max_readers or limits.readers_per_stream.
	MaxReaders func(path string) int
	// MaxBitrate bounds what one publisher sends, in bit/s averaged over
	// 5 s; over it the publisher is disconnected. 0 means
	// connlimit.DefaultMaxBitrate. cmd/bridge sets it from limits.ingest_bitrate.
	MaxBitrate int
	// RefusalLogEvery is how often one client address may log a refusal
	// of one kind (its status or reject code); 0 means
	// ratelog.DefaultInterval. Tests that expect every refusal's line set
	// it short.
	RefusalLogEvery time.Duration
}

// ReadHandler admits and serves SRT readers; see Config.Read.
type ReadHandler struct {
	Admit access.Authorizer
	Serve func(ctx context.Context, conn gosrt.Conn, req access.Request) error
}

// Defaults for what the Config does not expose.
const (
	defaultLatency      = 120 * time.Millisecond
	defaultSetupTimeout = 10 * time.Second
	defaultIdleTimeout  = 10 * time.Second
	defaultTrackWait    = 2 * time.Second
	defaultKeyframeWait = 10 * time.Second
	payloadSize         = 1316 // 7 TS packets
	// bitrateWindow is what the bitrate bound averages over: long enough
	// for an encoder's burst at a keyframe, short enough to stop a flood
	// within seconds.
	bitrateWindow = 5 * time.Second
)

// Reject reasons beyond gosrt's constants.
const (
	// rejConflict is SRT_REJX_CONFLICT of libsrt's access_control.h.
	rejConflict gosrt.RejectionReason = 1409
)

// panicComponent names the connections' panic boundary in logs and in
// bridge_panics_total.
const panicComponent = "srt connection"

// Reasons a connection ends.
var (
	errShutdown   = errors.New("server shutting down")
	errPeerClosed = errors.New("connection closed by the peer (or no packet from it for 5 s)")
	errPanicked   = errors.New("internal error: a panic was recovered (logged with its stack)")
)

// Server accepts SRT publishers and turns each publish into a stream in the
// registry. Create it with NewServer, then Listen and Serve; Close may be
// called from any goroutine.
type Server struct {
	reg        *media.Registry
	auth       access.Authorizer
	passphrase func(string) string
	read       *ReadHandler
	latency    time.Duration
	log        *slog.Logger
	// readCtx ends readers at Close.
	readCtx    context.Context
	readCancel context.CancelFunc

	// Tunables, fixed before Listen (tests shorten them).
	setupTimeout time.Duration // from the accept to the MPEG-TS program (PAT, PMT)
	idleTimeout  time.Duration // no MPEG-TS packet from a publisher
	trackWait    time.Duration // a PMT track that sends nothing
	keyframeWait time.Duration // video without a usable keyframe
	// onPublish, if set, is called with each accepted stream before any of
	// its units is written (tests attach readers there).
	onPublish  func(*media.Stream)
	maxBitrate int64 // bit/s

	gate *connlimit.Gate // connection slots (taken before a request's goroutine starts), reader limit, refusals

	mu        sync.Mutex
	ln        gosrt.Listener        // guarded by mu
	closed    bool                  // guarded by mu
	serving   bool                  // guarded by mu
	pubs      map[string]*publisher // guarded by mu: by path
	sessions  map[string]*session   // guarded by mu: accepted publishers and readers, by id (sessions.go)
	seq       uint64                // guarded by mu: numbers the sessions' ids
	serveDone chan struct{}         // closed when Serve returns
	wg        sync.WaitGroup        // one per connection request being handled

	// draining is set by Drain: new connection requests are rejected.
	draining atomic.Bool
}

// NewServer returns a server for cfg. It does not listen; call Listen.
func NewServer(cfg Config) *Server {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	auth := cfg.Authorize
	if auth == nil {
		auth = access.DenyAll
	}
	latency := cfg.Latency
	if latency <= 0 {
		latency = defaultLatency
	}
	readCtx, readCancel := context.WithCancel(context.Background())
	return &Server{
		reg:          cfg.Registry,
		auth:         auth,
		passphrase:   cfg.Passphrase,
		read:         cfg.Read,
		readCtx:      readCtx,
		readCancel:   readCancel,
		latency:      latency,
		log:          log,
		setupTimeout: defaultSetupTimeout,
		idleTimeout:  defaultIdleTimeout,
		trackWait:    defaultTrackWait,
		keyframeWait: defaultKeyframeWait,
		maxBitrate:   int64(cmp.Or(cfg.MaxBitrate, connlimit.DefaultMaxBitrate)),
		gate:         newGate(cfg, log),
		pubs:         make(map[string]*publisher),
		sessions:     make(map[string]*session),
		serveDone:    make(chan struct{}),
	}
}

// Refusals returns what the server's limits refused since it was made,
// for metrics.
func (s *Server) Refusals() connlimit.Refusals { return s.gate.Refusals() }

// publisherConfig is the configuration of an accepted publisher.
func (s *Server) publisherConfig() publisherConfig {
	return publisherConfig{
		what:         "publish",
		latency:      s.latency,
		setupTimeout: s.setupTimeout,
		idleTimeout:  s.idleTimeout,
		trackWait:    s.trackWait,
		keyframeWait: s.keyframeWait,
		onPublish:    s.onPublish,
		maxBitrate:   s.maxBitrate,
		onBitrate:    s.gate.CountBitrate,
	}
}

// listenConfig is the gosrt configuration of the listener.
func (s *Server) listenConfig() gosrt.Config {
	c := gosrt.DefaultConfig()
	c.Latency = s.latency // Validate copies it to the receiver and peer latency
	c.PayloadSize = payloadSize
	return c
}

// Listen binds the UDP socket, so that an address in use is reported
// before serving starts.
func (s *Server) Listen(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errors.New("srt: listen: server closed")
	case s.ln != nil:
		return errors.New("srt: listen: already listening")
	}
	// gosrt binds with SO_REUSEADDR, which on Linux lets a second UDP
	// socket share the port silently (and steal its packets). Binding it
	// once without the option first makes "address in use" an error.
	if _, port, err := net.SplitHostPort(addr); err == nil && port != "0" && port != "" {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("srt: listen on %s: %w", addr, err)
		}
		pc.Close()
	}
	ln, err := gosrt.Listen("srt", addr, s.listenConfig())
	if err != nil {
		return fmt.Errorf("srt: listen on %s: %w", addr, err)
	}
	s.ln = ln
	return nil
}

// Addr returns the listener's address, or nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Serve handles connection requests until Close, then returns nil. It
// returns an error if Listen was not called, if called twice, or if the
// socket fails (the listener is closed then).
func (s *Server) Serve() error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil
	case s.ln == nil:
		s.mu.Unlock()
		return errors.New("srt: Serve called before Listen")
	case s.serving:
		s.mu.Unlock()
		return errors.New("srt: Serve called twice")
	}
	s.serving = true
	ln := s.ln
	s.mu.Unlock()
	defer close(s.serveDone)

	for {
		req, err := ln.Accept2()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			ln.Close()
			return fmt.Errorf("srt: accept: %w", err)
		}
		if s.draining.Load() {
			peer := req.RemoteAddr().String()
			req.Reject(gosrt.REJ_CLOSE)
			s.gate.LogKind(s.log.With("peer", peer), addrlimit.AddrOf(peer), fmt.Sprint(int(gosrt.REJ_CLOSE)), "srt connection refused",
				"code", int(gosrt.REJ_CLOSE), "reason", errShutdown.Error())
			continue
		}
		release, err := s.gate.Acquire(addrlimit.AddrOf(req.RemoteAddr()), "srt connection refused",
			"peer", req.RemoteAddr().String(), "code", int(gosrt.REJX_OVERLOAD))
		if err != nil {
			// Refused before anything else: no goroutine, no parsing.
			req.Reject(gosrt.REJX_OVERLOAD)
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			release()
			req.Reject(gosrt.REJ_CLOSE)
			continue // Accept2 returns the listener's error next
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(req, release)
	}
}

// Drain rejects every new connection request (REJ_CLOSE) while the
// connections open go on until Close: a shutdown's drain, while load
// balancers send new callers elsewhere. The socket stays open: gosrt's
// connections share it with the listener.
func (s *Server) Drain() { s.draining.Store(true) }

// Close stops listening, ends every publisher (their streams end) and waits
// until every connection has been torn down and Serve has returned. It
// returns nil; calling it again only waits.
func (s *Server) Close() error {
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	ln := s.ln
	serving := s.serving
	pubs := make([]*publisher, 0, len(s.pubs))
	for _, p := range s.pubs {
		pubs = append(pubs, p)
	}
	s.mu.Unlock()

	if first {
		s.readCancel()
		for _, p := range pubs {
			p.stop(errShutdown)
		}
		if ln != nil {
			ln.Close()
		}
	}
	s.wg.Wait()
	if serving {
		<-s.serveDone
	}
	return nil
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Stats are the statistics of one SRT connection that publishes (from
// gosrt's Conn.Stats), for metrics: a publisher's (Server.Stats) or a
// pull's (Puller.Stats).
type Stats struct {
	// Peer is the publisher's address (for a pull, the source URL,
	// redacted).
	Peer string
	// Since is when the connection was accepted (or made).
	Since time.Time
	// RTT is the smoothed round-trip time.
	RTT time.Duration
	// PacketsReceived counts data packets received, retransmissions
	// included.
	PacketsReceived uint64
	// PacketsLost counts data packets found missing by the receiver (most
	// are recovered by retransmission).
	PacketsLost uint64
	// PacketsRetransmitted counts retransmitted data packets received.
	PacketsRetransmitted uint64
	// PacketsDropped counts data packets given up on: too late to be
	// delivered within the latency.
	PacketsDropped uint64
	// BytesReceived counts bytes received, headers included (as gosrt
	// counts them).
	BytesReceived uint64
	// ReceiveRate is the payload receive rate over the last second, in
	// bits per second.
	ReceiveRate float64
	// DemuxErrors counts MPEG-TS errors (continuity gaps, corrupt
	// packets, unparsable PES).
	DemuxErrors uint64
}

// Stats returns the statistics of the connection publishing path, if any.
func (s *Server) Stats(path string) (Stats, bool) {
	s.mu.Lock()
	p := s.pubs[path]
	s.mu.Unlock()
	if p == nil {
		return Stats{}, false
	}
	return p.stats(), true
}

// stats returns the statistics of the publisher's connection.
func (p *publisher) stats() Stats {
	var st gosrt.Statistics
	p.conn.Stats(&st)
	return Stats{
		Peer:                 p.peer,
		Since:                p.started,
		RTT:                  time.Duration(st.Instantaneous.MsRTT * float64(time.Millisecond)),
		PacketsReceived:      st.Accumulated.PktRecv,
		PacketsLost:          st.Accumulated.PktRecvLoss,
		PacketsRetransmitted: st.Accumulated.PktRecvRetrans,
		PacketsDropped:       st.Accumulated.PktRecvDrop,
		BytesReceived:        st.Accumulated.ByteRecv,
		ReceiveRate:          st.Instantaneous.MbpsRecvRate * 1024 * 1024, // gosrt's "Mbps" are 2^20 bit/s
		DemuxErrors:          p.demuxErrors.Load(),
	}
}

// refusal is an admission decision against a request.
type refusal struct {
	code   gosrt.RejectionReason
	reason string
}

// handle admits or refuses one connection request and, once accepted, runs
// the publisher until it ends, then gives the connection's slot back
// (release). A panic ends this connection only: a request not accepted yet
// is rejected with 1500 REJX_ISE; an accepted one was closed on the way
// out (ServeReader and publisher.run own theirs).
func (s *Server) handle(req gosrt.ConnRequest, release func()) {
	defer s.wg.Done()
	defer release()
	peer := req.RemoteAddr().String()
	log := s.log.With("peer", peer)
	defer panics.Recover(panicComponent, log, func() { req.Reject(gosrt.REJX_ISE) })

	adm, ref := s.admit(req, peer, log)
	if ref != nil {
		req.Reject(ref.code)
		return
	}
	log = adm.grant.Logger(log)
	st := adm.pub
	if st == nil {
		s.serveReader(req, adm.req, log)
		return
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		req.Reject(gosrt.REJ_CLOSE)
		st.Close()
		log.Info("srt connection refused", "stream", st.Path(), "code", int(gosrt.REJ_CLOSE), "reason", errShutdown.Error())
		return
	}
	conn, err := req.Accept()
	if err != nil {
		s.mu.Unlock()
		st.Close()
		log.Warn("srt accept failed", "stream", st.Path(), "reason", err.Error())
		return
	}
	id := s.newSessionIDLocked()
	p := newPublisher(s.publisherConfig(), conn, st, peer, log.With("session", id, "stream", st.Path()))
	s.pubs[st.Path()] = p
	sess := s.addSessionLocked(&session{id: id, kind: access.SessionSRTPublish, path: st.Path(), peer: peer, since: p.started, conn: conn,
		end: func(reason string) { p.stop(errors.New(reason)) }})
	s.mu.Unlock()

	p.run()

	s.mu.Lock()
	if s.pubs[st.Path()] == p {
		delete(s.pubs, st.Path())
	}
	delete(s.sessions, sess.id)
	s.mu.Unlock()
}

// serveReader accepts an admitted reader and hands it to Read.Serve.
func (s *Server) serveReader(req gosrt.ConnRequest, rreq access.Request, log *slog.Logger) {
	log = log.With("stream", rreq.Path)
	if s.isClosed() {
		req.Reject(gosrt.REJ_CLOSE)
		return
	}
	conn, err := req.Accept()
	if err != nil {
		log.Warn("srt accept failed", "reason", err.Error())
		return
	}
	start := time.Now()
	s.mu.Lock()
	id := s.newSessionIDLocked()
	log = log.With("session", id)
	sess := s.addSessionLocked(&session{id: id, kind: access.SessionSRTRead, path: rreq.Path, peer: rreq.Remote, since: start, conn: conn,
		end: func(string) { conn.Close() }})
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, sess.id)
		s.mu.Unlock()
	}()
	log.Info("srt read")
	err = s.read.Serve(s.readCtx, conn, rreq)
	var cs gosrt.Statistics
	conn.Stats(&cs)
	// Bytes and SRT data packets sent (with headers and retransmissions:
	// what the reader cost).
	sessionlog.End(log, "srt read ended", start, cs.Accumulated.ByteSent, cs.Accumulated.PktSent, fmt.Sprint(err))
}

// admission is an admitted connection request: a publisher's path claimed
// in the registry (pub), or, pub nil, a reader's request; grant is what
// admitted it.
type admission struct {
	pub   *media.Publication
	req   access.Request
	grant access.Grant
}

// admit applies the admission policy (see the package doc). A refusal has
// been logged.
func (s *Server) admit(req gosrt.ConnRequest, peer string, log *slog.Logger) (admission, *refusal) {
	refuse := func(path string, code gosrt.RejectionReason, reason string) *refusal {
		args := []any{"code", int(code), "reason", reason}
		if path != "" {
			args = append([]any{"stream", path}, args...)
		}
		s.gate.LogKind(log, addrlimit.AddrOf(peer), fmt.Sprint(int(code)), "srt connection refused", args...)
		return &refusal{code: code, reason: reason}
	}

	id, err := ParseStreamID(req.StreamId())
	if err != nil {
		code := gosrt.REJX_BAD_REQUEST
		if errors.Is(err, ErrUnsupportedMode) {
			code = gosrt.REJX_BAD_MODE
		}
		if req.Version() == 4 {
			err = fmt.Errorf("%w (HSv4 caller: it cannot send a streamid)", err)
		}
		return admission{}, refuse("", code, err.Error())
	}
	log.Debug("srt connect", "stream", id.Path, "mode", id.Mode.String(), "encrypted", req.IsEncrypted())
	reading := id.Mode == ModeRead && s.read != nil
	if id.Mode != ModePublish && !reading {
		return admission{}, refuse(id.Path, gosrt.REJX_BAD_MODE, fmt.Sprintf("mode %s is not supported yet: this listener accepts publishing (m=publish or publish:)", id.Mode))
	}

	areq := access.Request{Action: access.Publish, Protocol: access.SRT, Path: id.Path, Credential: id.Key, Remote: peer}
	admit := s.auth
	if reading {
		areq.Action, admit = access.Read, s.read.Admit
	}
	grant, err := admit(areq)
	if err != nil {
		code := gosrt.REJX_FORBIDDEN
		switch {
		case errors.Is(err, access.ErrBadKey):
			code = gosrt.REJX_UNAUTHORIZED
		case errors.Is(err, access.ErrNoRoute), errors.Is(err, access.ErrNoStream), access.ElsewhereOf(err) != nil:
			code = gosrt.REJX_NOTFOUND
		case errors.Is(err, media.ErrPublisherExists): // on another node of a cluster
			code = rejConflict
		}
		return admission{}, refuse(id.Path, code, err.Error())
	}

	want := ""
	if s.passphrase != nil {
		want = s.passphrase(id.Path)
	}
	switch {
	case want != "" && !req.IsEncrypted():
		return admission{}, refuse(id.Path, gosrt.REJ_UNSECURE, "the stream requires encryption: the caller set no passphrase")
	case want == "" && req.IsEncrypted():
		return admission{}, refuse(id.Path, gosrt.REJ_UNSECURE, "the caller encrypts but the stream has no passphrase")
	case want != "":
		if err := req.SetPassphrase(want); err != nil {
			return admission{}, refuse(id.Path, gosrt.REJ_BADSECRET, "wrong passphrase")
		}
	}

	if reading {
		// After Read.Admit: a caller the route refuses learns nothing
		// about the stream's audience. Readers admitted at the same moment
		// may each see room for one: the overshoot is bounded by the
		// handshakes in flight, which MaxConns bounds.
		if err := s.gate.CheckReaders(s.reg, id.Path, 1); err != nil {
			reason := fmt.Sprintf("stream %q: %v", id.Path, err)
			s.gate.Log(addrlimit.AddrOf(peer), "srt connection refused", "peer", peer, "stream", id.Path, "code", int(gosrt.REJX_OVERLOAD), "reason", reason)
			return admission{}, &refusal{code: gosrt.REJX_OVERLOAD, reason: reason}
		}
		return admission{req: areq, grant: grant}, nil
	}
	st, err := s.reg.Publish(id.Path, "srt "+peer)
	if err != nil {
		if errors.Is(err, media.ErrPublisherExists) {
			return admission{}, refuse(id.Path, rejConflict, fmt.Sprintf("stream %q already has a publisher", id.Path))
		}
		return admission{}, refuse(id.Path, gosrt.REJX_ISE, err.Error())
	}
	st.SetKind(access.KindSRT)
	return admission{pub: st, grant: grant}, nil
}

// newGate makes the server's admission gate from cfg.
func newGate(cfg Config, log *slog.Logger) *connlimit.Gate {
	g := connlimit.New(cfg.MaxConns, cfg.MaxConnsPerAddr, cfg.MaxReaders, log)
	g.KindLog.Every = cfg.RefusalLogEvery
	return g
}
