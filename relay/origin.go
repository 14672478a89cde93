package relay

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/internal/ratelog"
	"github.com/wishbridge/bridge/internal/sessionlog"
	"github.com/wishbridge/bridge/internal/streampath"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// PathPrefix is where an origin serves its relays: GET PathPrefix+path.
// The "v1" is the HTTP API's version; the stream's own format carries
// its wire Version.
const PathPrefix = "/cluster/v1/relay/"

// ContentType is the media type of a relay stream.
const ContentType = "application/x-bridge-relay"

// Timing and bounds of the origin side.
const (
	// DefaultMaxRelays bounds the relays an origin serves at once: one
	// per stream per edge, so 16 edges each reading 16 of its streams.
	// Each costs one hub reader, a goroutine and a connection.
	DefaultMaxRelays = 256
	// KeepaliveInterval is the longest an origin stays silent: a stream
	// waiting for its publisher (its grace period) sends keepalives, so
	// that the edge's ReadTimeout only ends dead connections.
	KeepaliveInterval = 2 * time.Second
	// WriteTimeout bounds each frame's write to an edge. The hub never
	// waits for the relay's reader (its queue drops, then skips to the
	// next keyframe, as for any slow reader); this ends a relay whose edge
	// takes nothing for that long.
	WriteTimeout = 10 * time.Second
	// readyWait bounds how long a relay request waits for a stream whose
	// publisher is still in its handshake (published, tracks unknown).
	readyWait = 5 * time.Second
)

// OriginConfig configures an Origin. Registry and Token are required.
type OriginConfig struct {
	Registry *media.Registry
	// Token returns the cluster token (cluster.token) an edge must present
	// as "Authorization: Bearer"; "" refuses every request (no cluster).
	// It is read per request, so a reload applies to the next one.
	Token func() string
	// MaxRelays bounds the relays served at once; 0 means
	// DefaultMaxRelays.
	MaxRelays int
	// Counters, if set, counts the relays served (direction "out").
	Counters *Counters
	Log      *slog.Logger
}

// Origin serves the streams of this node's hub to edges. Relays are not
// subject to the per-address limits of viewers: they are authenticated
// by the cluster token instead, and bounded by MaxRelays. Create it with
// NewOrigin; Close ends every relay (at shutdown).
type Origin struct {
	cfg      OriginConfig
	log      *slog.Logger
	active   atomic.Int64
	refusals ratelog.Limiter // one line per peer address per interval
	tooLarge ratelog.Limiter // one line per stream per interval

	closeOnce sync.Once
	closing   chan struct{}
}

// NewOrigin returns an Origin for cfg.
func NewOrigin(cfg OriginConfig) *Origin {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxRelays <= 0 {
		cfg.MaxRelays = DefaultMaxRelays
	}
	return &Origin{cfg: cfg, log: cfg.Log.With("component", "relay origin"), closing: make(chan struct{})}
}

// Register adds GET PathPrefix{path...} to mux.
func (o *Origin) Register(mux *http.ServeMux) {
	mux.Handle("GET "+PathPrefix+"{path...}", o)
}

// Close ends every relay being served, each with an end frame saying the
// node is shutting down, and refuses new ones. Give it to
// http.Server.RegisterOnShutdown: Shutdown does not end running handlers.
func (o *Origin) Close() { o.closeOnce.Do(func() { close(o.closing) }) }

// refusal is an answer other than 200, with its reason (text/plain).
type refusal struct {
	status int
	msg    string
}

func (r *refusal) Error() string { return r.msg }

// ServeHTTP serves one relay: 200 with a relay stream (ContentType,
// chunked, flushed whenever the reader's queue is empty, so each live
// unit leaves as it arrives) of the stream at the request's path: its
// tracks, the units of the GOP cache (so the edge can start at once),
// then the live units, until the stream ends (an end frame with the
// reason), a relay from another node takes its publisher's place here
// (an end frame: the edge asks the new owner), the edge goes away, a
// write takes WriteTimeout, or Close.
// Refusals, each with a text/plain reason and one log line per peer
// address per interval:
//
//	400  the path breaks the stream path rule (internal/streampath)
//	401  no or the wrong bearer token (RFC 6750 section 3), with
//	     WWW-Authenticate: Bearer; also every request while the node has
//	     no cluster token
//	404  no live stream at the path (none, or no tracks within a few
//	     seconds), or the stream is itself relayed here (only its owner
//	     serves relays, so two edges never relay to each other)
//	503  MaxRelays relays are being served, with Retry-After
func (o *Origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.PathValue("path")
	st, err := o.admit(r, path)
	if err != nil {
		var rf *refusal
		if !errors.As(err, &rf) {
			rf = &refusal{http.StatusInternalServerError, err.Error()}
		}
		if ok, n := o.refusals.Allow(addrlimit.AddrOf(r.RemoteAddr).String()); ok {
			o.log.Info("relay refused", "stream", path, "peer", r.RemoteAddr, "status", rf.status, "reason", rf.msg, "suppressed", n)
		}
		switch rf.status {
		case http.StatusUnauthorized:
			w.Header().Set("WWW-Authenticate", `Bearer realm="bridge cluster"`)
		case http.StatusServiceUnavailable:
			w.Header().Set("Retry-After", "1")
		}
		http.Error(w, rf.msg, rf.status)
		return
	}
	defer o.active.Add(-1)
	o.serve(w, r, st, path)
}

// admit checks the request and takes a relay slot (released by the
// caller) for the stream it returns.
func (o *Origin) admit(r *http.Request, path string) (*media.Stream, error) {
	if err := streampath.Check(path); err != nil {
		return nil, &refusal{http.StatusBadRequest, err.Error()}
	}
	want := ""
	if o.cfg.Token != nil {
		want = o.cfg.Token()
	}
	if got := rtc.BearerToken(r); want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return nil, &refusal{http.StatusUnauthorized, "missing or wrong cluster token"}
	}
	st, err := access.Local(o.cfg.Registry, readyWait)(r.Context(), path)
	if err != nil {
		return nil, &refusal{http.StatusNotFound, err.Error()}
	}
	if st.PublisherKind() == access.KindRelay {
		return nil, &refusal{http.StatusNotFound, fmt.Sprintf("stream %q is relayed to this node from another: ask its owner", path)}
	}
	if n := o.active.Add(1); n > int64(o.cfg.MaxRelays) {
		o.active.Add(-1)
		return nil, &refusal{http.StatusServiceUnavailable, fmt.Sprintf("this node serves %d relays, its limit", o.cfg.MaxRelays)}
	}
	return st, nil
}

// rtpSourced reports whether a stream's units carry their source's RTP
// packets (a WebRTC publisher or pull), which the relay passes on. Other
// streams' units may carry packets the origin's own processors made for
// its viewers (H.264 packetized, AAC transcoded to Opus): the edge makes
// its own, so they are not sent.
func rtpSourced(k media.PublisherKind) bool {
	return k == access.KindWHIP || k == access.KindWHEPPull
}

// serve streams st to the edge until something ends it (see ServeHTTP).
func (o *Origin) serve(w http.ResponseWriter, r *http.Request, st *media.Stream, path string) {
	log := o.log.With("stream", path, "peer", r.RemoteAddr)
	notify := make(chan struct{}, 1)
	rd, err := st.NewReader(media.ReaderOptions{Name: "relay to " + r.RemoteAddr, StartAtKeyframe: true, Notify: notify})
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	defer rd.Close()
	o.cfg.Counters.relay(false, 1)
	defer o.cfg.Counters.relay(false, -1)

	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	cw := &countingWriter{w: w, c: o.cfg.Counters}
	enc := NewEncoder(cw)
	s := &originSend{o: o, rc: rc, cw: cw, enc: enc, st: st, log: log}
	log.Info("relay started", "tracks", len(st.Tracks()))
	start := time.Now()
	err = s.run(r, rd, notify)
	sessionlog.End(log, "relay ended", start, cw.n, s.units, err.Error(), "dropped_units", rd.Dropped())
}

// originSend is one relay's sending side.
type originSend struct {
	o   *Origin
	rc  *http.ResponseController
	cw  *countingWriter
	enc *Encoder
	st  *media.Stream
	log *slog.Logger

	announced []*media.Track // the tracks the edge was last told
	live      bool           // the live frame was sent: what follows is live
	withRTP   bool           // the announced tracks' units carry their source's packets
	written   time.Time      // the last write
	units     uint64         // sent
}

// write writes one frame within WriteTimeout.
func (s *originSend) write(frame func() error) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(WriteTimeout))
	s.written = time.Now()
	return frame()
}

func (s *originSend) flush() error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(WriteTimeout))
	return s.rc.Flush()
}

// announce sends tracks (the stream's tracks now).
func (s *originSend) announce(tracks []*media.Track) error {
	s.announced = tracks
	s.withRTP = rtpSourced(s.st.PublisherKind())
	return s.write(func() error { return s.enc.Tracks(tracks) })
}

// run sends the reader's units until the stream or the connection ends,
// and returns why.
func (s *originSend) run(r *http.Request, rd *media.Reader, notify chan struct{}) error {
	if err := s.announce(s.st.Tracks()); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	keepalive := time.NewTicker(KeepaliveInterval)
	defer keepalive.Stop()
	for {
		u, cached, err := rd.TryRead()
		if u == nil && err != nil {
			reason := err.Error()
			_ = s.write(func() error { return s.enc.End(reason) })
			_ = s.flush()
			return err
		}
		if u == nil || (!cached && !s.live) {
			// The queue is empty, or the cached GOP is all sent.
			if !s.live {
				s.live = true
				if err := s.write(s.enc.Live); err != nil {
					return fmt.Errorf("write: %w", err)
				}
			}
			if err := s.flush(); err != nil {
				return fmt.Errorf("flush: %w", err)
			}
		}
		if u != nil {
			if err := s.send(u, cached); err != nil {
				return err
			}
			continue
		}
		select {
		case <-notify:
		case <-keepalive.C:
			if time.Since(s.written) >= KeepaliveInterval {
				if err := s.write(s.enc.Keepalive); err != nil {
					return fmt.Errorf("write: %w", err)
				}
			}
		case <-r.Context().Done():
			return errors.New("the edge went away")
		case <-s.o.closing:
			_ = s.write(func() error { return s.enc.End("the origin node is shutting down") })
			_ = s.flush()
			return errors.New("the node is shutting down")
		}
	}
}

// errRelayedHere ends a relay whose stream this node relays from another
// node now.
var errRelayedHere = errors.New("the stream is relayed to this node from its new owner now: ask the owner")

// send sends one unit, first the stream's tracks if u is of tracks the
// edge has not been told of (a new publisher took the stream over). A
// unit of a publisher that has been replaced since is not sent, nor one
// past the wire format's limits (counted in the log).
func (s *originSend) send(u *media.Unit, cached bool) error {
	id := u.Track.ID
	if id >= len(s.announced) || s.announced[id] != u.Track {
		cur := s.st.Tracks()
		if id >= len(cur) || cur[id] != u.Track {
			return nil // the previous publisher's, still queued
		}
		if s.st.PublisherKind() == access.KindRelay {
			// This node lost the path to another node's publisher and
			// relays it from there now: only owners serve relays, so
			// the edge goes to the owner itself (its Source names it)
			// instead of through this node.
			_ = s.write(func() error { return s.enc.End(errRelayedHere.Error()) })
			_ = s.flush()
			return errRelayedHere
		}
		if err := s.announce(cur); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if s.live {
			// A new publisher mid-relay has no cached GOP to send
			// first: its units are live, and the edge, which holds
			// units back after a tracks frame until a live frame,
			// is told so.
			if err := s.write(s.enc.Live); err != nil {
				return fmt.Errorf("write: %w", err)
			}
		}
	}
	if len(u.NALUs) == 0 && len(u.Data) == 0 && (!s.withRTP || len(u.RTP) == 0) {
		return nil // nothing the edge could use (a damaged unit of a source not relayed as RTP)
	}
	err := s.write(func() error { return s.enc.Unit(u, cached, s.withRTP) })
	if errors.Is(err, ErrTooLarge) {
		if ok, n := s.o.tooLarge.Allow(s.st.Path()); ok {
			s.log.Warn("unit not relayed", "err", err, "suppressed", n)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	s.units++
	return nil
}

// countingWriter counts what it writes, for the relay's bytes.
type countingWriter struct {
	w io.Writer
	c *Counters
	n uint64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n += uint64(n)
	w.c.bytes(false, n)
	return n, err
}

// retryAfter returns the wait a 503's Retry-After asks (seconds), 0 if none.
func retryAfter(h http.Header) time.Duration {
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s > 0 {
		return time.Duration(min(s, 60)) * time.Second
	}
	return 0
}
