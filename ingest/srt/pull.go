package srt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gosrt "github.com/datarhei/gosrt"
	"github.com/datarhei/gosrt/circular"
	"github.com/datarhei/gosrt/packet"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/backoff"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/rawurl"
	"github.com/wishbridge/bridge/internal/reconnect"
	"github.com/wishbridge/bridge/internal/srtcall"
	"github.com/wishbridge/bridge/media"
)

// Pull ingest: a Puller calls a remote SRT listener (caller mode), for a
// route with "pull: srt://host:port?streamid=...&passphrase=..."
// (config.Route.Pull), and demuxes the MPEG-TS it receives into the hub as
// an accepted publisher's is (see the package doc, "Demux"; the same
// timeouts apply: 10 s for the program, 10 s without a TS packet).
//
// URL options: streamid (sent as written after percent-decoding; the
// access-control syntax "#!::r=live/cam,m=request" needs no escaping),
// passphrase (10-79 characters), pbkeylen (16, 24 or 32) and latency (the
// receiver latency in milliseconds, as srt-live-transmit reads it, not
// ffmpeg's microseconds; 120 by default). Others are ignored.
//
// Each attempt first sends an SRT induction request from a socket of its
// own and waits for the answer (10 s at most, resent every 250 ms; a cancel
// ends the wait at once), then connects with gosrt (3 s for the handshake).
// The probe is there because gosrt v0.11.0's Dial cannot be interrupted
// and, when it fails, can leave its socket goroutine blocked for ever (see
// caller): a source that is down (nothing listens, or the host does not
// answer) never gets that far. What remains is a listener that answers the
// induction but refuses the connection (wrong streamid or passphrase):
// each such attempt may leave one goroutine and its buffers (some 40 KB)
// behind, at most one per backoff period (30 s once the backoff is at its
// cap).
//
// After a failure, the source ending its stream included, the Puller
// waits and connects again (internal/reconnect's policy for pulls): 1 s,
// doubling up to 30 s, back to 1 s once a connection has carried media
// for a minute; a panic in an attempt is recovered and is a failure too.
// Each failure is logged with its reason and the wait, the URL redacted
// (rawurl.Redact). Between two connections the stream waits for its
// publisher for the registry's grace period (media.Registry.SetGrace), so
// its readers carry on when the source comes back within it.

// PullConfig configures a Puller. Registry, Path and URL are required.
type PullConfig struct {
	Registry *media.Registry
	// Path is where the stream is published in the hub ("live/cam").
	Path string
	// URL is the source: srt://host:port[?streamid=...&passphrase=...&
	// latency=...]. It is logged redacted (rawurl.Redact).
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
	// pullProbeTimeout bounds the wait for the listener's answer to the
	// induction request.
	pullProbeTimeout = 10 * time.Second
	// pullProbeResend is how often the induction request is resent.
	pullProbeResend = 250 * time.Millisecond
	// pullHandshakeTimeout is gosrt's ConnectionTimeout: the handshake
	// with a listener that has just answered the probe.
	pullHandshakeTimeout = 3 * time.Second
	// drainTimeout bounds the wait for gosrt's dialer goroutine after a
	// close (see caller).
	drainTimeout = 200 * time.Millisecond
)

// errPullStopped is why a pull ends when its Run's context ends.
var errPullStopped = errors.New("pull stopped")

// Puller pulls one SRT stream into the hub. Create it with NewPuller and
// call Run; Run may be called again after it returned (e.g. to pull on
// demand: run it while the stream has readers), but not concurrently.
type Puller struct {
	reg  *media.Registry
	path string
	src  pullSource
	log  *slog.Logger
	err  error // a configuration error, reported by Run

	// Tunables, fixed before Run (tests shorten them).
	minBackoff, maxBackoff, backoffReset time.Duration
	probeTimeout                         time.Duration
	pubCfg                               publisherConfig
	// onRetry, if set, is called before each wait between two attempts.
	onRetry func(wait time.Duration, err error)

	mu  sync.Mutex
	cur *publisher // guarded by mu: the connection publishing, if any
}

// pullSource is a parsed srt:// pull URL.
type pullSource struct {
	addr     string
	cfg      gosrt.Config
	redacted string
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
		log:        log.With("component", "srt pull", "stream", cfg.Path, "source", rawurl.Redact(cfg.URL)),
		minBackoff: pullMinBackoff, maxBackoff: pullMaxBackoff, backoffReset: pullBackoffReset,
		probeTimeout: pullProbeTimeout,
		pubCfg: publisherConfig{
			what:         "pull",
			setupTimeout: defaultSetupTimeout,
			idleTimeout:  defaultIdleTimeout,
			trackWait:    defaultTrackWait,
			keyframeWait: defaultKeyframeWait,
		},
	}
	switch {
	case cfg.Registry == nil || cfg.Path == "":
		p.err = errors.New("srt pull: no registry or path")
	default:
		p.src, p.err = parsePullURL(cfg.URL)
		if p.err != nil {
			p.err = fmt.Errorf("srt pull: %w", p.err)
		}
		p.pubCfg.latency = p.src.cfg.Latency
	}
	return p
}

// parsePullURL reads srt://host:port?streamid=...&passphrase=...&latency=...
// (see srtcall.Parse).
func parsePullURL(raw string) (pullSource, error) {
	u, err := srtcall.Parse(raw, pullHandshakeTimeout)
	return pullSource{addr: u.Addr, cfg: u.Config, redacted: u.Redacted}, err
}

// Run pulls until ctx ends, then closes the connection, leaves the stream
// (which waits for a publisher for its grace period) and returns. A gosrt
// handshake in progress is not interrupted: Run may take up to 3 s more
// to return. With a bad configuration it logs why and waits for ctx.
func (p *Puller) Run(ctx context.Context) {
	reconnect.Loop{
		Name:    "srt pull",
		Log:     p.log,
		Invalid: p.err,
		Backoff: func() *backoff.Backoff {
			return backoff.New(p.minBackoff, p.maxBackoff, p.backoffReset)
		},
		Attempt:  p.pull,
		Retrying: p.onRetry,
	}.Run(ctx)
}

// Stats returns the statistics of the puller's connection while it
// publishes.
func (p *Puller) Stats() (Stats, bool) {
	p.mu.Lock()
	cur := p.cur
	p.mu.Unlock()
	if cur == nil {
		return Stats{}, false
	}
	return cur.stats(), true
}

func (p *Puller) setCurrent(pub *publisher) {
	p.mu.Lock()
	p.cur = pub
	p.mu.Unlock()
}

// pull makes one connection and publishes what it receives until it fails
// or ctx ends; its session starts once connected (the publisher's run).
func (p *Puller) pull(ctx context.Context, _ *media.Stream, a *reconnect.Attempt) error {
	if err := probe(ctx, p.src.addr, p.probeTimeout); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	dc, err := gosrt.Dial("srt", p.src.addr, p.src.cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", dialError(err))
	}
	conn := &caller{Conn: dc}
	defer conn.drain() // closes it
	if ctx.Err() != nil {
		return errPullStopped
	}
	st, err := p.reg.Publish(p.path, "srt pull "+p.src.redacted)
	if err != nil {
		return err
	}
	st.SetKind(access.KindSRTPull)
	log := a.Log
	pub := newPublisher(p.pubCfg, conn, st, p.src.redacted, a.Notes())
	pub.attempt = a
	p.setCurrent(pub)
	defer p.setCurrent(nil)
	stop := context.AfterFunc(ctx, func() {
		defer panics.Recover("srt pull", log, func() { _ = pub.conn.Close() })
		pub.stop(errPullStopped)
	})
	defer stop()
	pub.run() // closes the connection and the publication
	return pub.stopReason()
}

// rejectNames names the SRT rejection reasons (libsrt's SRT_REJ_* and
// access_control.h's SRT_REJX_*), with what they mean for a caller.
var rejectNames = map[uint64]string{
	1000: "REJ_UNKNOWN", 1001: "REJ_SYSTEM", 1002: "REJ_PEER", 1003: "REJ_RESOURCE",
	1004: "REJ_ROGUE", 1005: "REJ_BACKLOG", 1006: "REJ_IPE", 1007: "REJ_CLOSE (the listener is closing)",
	1008: "REJ_VERSION", 1009: "REJ_RDVCOOKIE", 1010: "REJ_BADSECRET (wrong passphrase)",
	1011: "REJ_UNSECURE (the listener wants a passphrase, or has none and ours is set)",
	1012: "REJ_MESSAGEAPI", 1013: "REJ_CONGESTION", 1014: "REJ_FILTER", 1015: "REJ_GROUP",
	1400: "REJX_BAD_REQUEST (bad streamid)", 1401: "REJX_UNAUTHORIZED (missing or wrong key)",
	1402: "REJX_OVERLOAD", 1403: "REJX_FORBIDDEN", 1404: "REJX_NOTFOUND (no such stream)",
	1405: "REJX_BAD_MODE (the listener does not serve this mode: read with m=request or read:)",
	1406: "REJX_UNACCEPTABLE", 1407: "REJX_CONFLICT (as gosrt numbers it)", 1409: "REJX_CONFLICT",
	1415: "REJX_NOTSUP_MEDIA", 1423: "REJX_LOCKED", 1424: "REJX_FAILED_DEPEND", 1500: "REJX_ISE",
	1501: "REJX_UNIMPLEMENTED", 1502: "REJX_GW", 1503: "REJX_DOWN", 1505: "REJX_VERSION", 1507: "REJX_NOROOM",
}

// dialError rewords gosrt's rejection error, whose reason code it prints
// in base 32 ("connection rejected: REJECT (1bt)" is 1405).
func dialError(err error) error {
	msg := err.Error()
	rest, ok := strings.CutPrefix(msg, "connection rejected: REJECT (")
	if !ok {
		return err
	}
	code, err2 := strconv.ParseUint(strings.TrimSuffix(rest, ")"), 32, 32)
	if err2 != nil {
		return err
	}
	name := rejectNames[code]
	if name == "" {
		name = "unknown reason"
	}
	return fmt.Errorf("the listener refused the connection: %d %s", code, name)
}

// caller is a connection made by gosrt.Dial.
//
// gosrt v0.11.0's dialer has a goroutine that, once the socket is closed,
// sends its error on an unbuffered channel that only Close (once, right
// after closing the socket, without waiting) and later Reads and Writes
// receive from; when it is not there yet for Close, it blocks for ever.
// drain reads after Close to take that error, so that the goroutine ends.
// (A Dial that fails closes its dialer itself, with no way to drain it: see
// the doc of Puller about probe.)
type caller struct {
	gosrt.Conn

	mu      sync.Mutex
	drained bool // guarded by mu: a Read returned the dialer goroutine's error
}

func (c *caller) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && !errors.Is(err, io.EOF) {
		// io.EOF is the connection's own "closed"; any other error came
		// from the dialer goroutine.
		c.mu.Lock()
		c.drained = true
		c.mu.Unlock()
	}
	return n, err
}

func (c *caller) isDrained() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.drained
}

// drain closes the connection and takes the dialer goroutine's last error
// (drainTimeout at most: by then it has long been sent, or taken by Close).
func (c *caller) drain() {
	c.Close()
	b := make([]byte, gosrt.MAX_PAYLOAD_SIZE)
	for deadline := time.Now().Add(drainTimeout); !c.isDrained() && time.Now().Before(deadline); {
		if _, err := c.Read(b); err == nil {
			continue // data the connection had buffered
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// probe sends SRT induction requests to addr from a socket of its own until
// the listener answers, timeout passes or ctx ends.
func probe(ctx context.Context, addr string, timeout time.Duration) error {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { _ = nc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	req, err := inductionRequest(nc.LocalAddr(), nc.RemoteAddr())
	if err != nil {
		return err
	}
	buf := make([]byte, gosrt.MAX_MSS_SIZE)
	end := time.Now().Add(timeout)
	for {
		if _, err := nc.Write(req); err != nil {
			return probeErr(err, addr)
		}
		wait := time.Now().Add(pullProbeResend)
		if end.Before(wait) {
			wait = end
		}
		if err := nc.SetReadDeadline(wait); err != nil {
			return err
		}
		for {
			// After the deadline is set: a cancel before it is seen here,
			// one after it sets a deadline in the past.
			if ctx.Err() != nil {
				return ctx.Err()
			}
			n, err := nc.Read(buf)
			if err == nil {
				if isHandshake(nc.RemoteAddr(), buf[:n]) {
					return nil
				}
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				return probeErr(err, addr)
			}
			break
		}
		if !time.Now().Before(end) {
			return fmt.Errorf("no answer to the SRT handshake from %s within %v", addr, timeout)
		}
	}
}

func probeErr(err error, addr string) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("nothing listens on %s (connection refused)", addr)
	}
	return err
}

// inductionRequest is the caller's first handshake packet (HSv4
// induction, SRT RFC draft 4.3.1.1), as gosrt and libsrt send it.
func inductionRequest(local, remote net.Addr) ([]byte, error) {
	p := packet.NewPacket(remote)
	defer p.Decommission()
	h := p.Header()
	h.IsControlPacket = true
	h.ControlType = packet.CTRLTYPE_HANDSHAKE
	h.DestinationSocketId = 0
	cif := &packet.CIFHandshake{
		IsRequest:                   true,
		Version:                     4,
		ExtensionField:              2,
		InitialPacketSequenceNumber: circular.New(0, packet.MAX_SEQUENCENUMBER),
		MaxTransmissionUnitSize:     gosrt.MAX_MSS_SIZE,
		MaxFlowWindowSize:           25600,
		HandshakeType:               packet.HSTYPE_INDUCTION,
		SRTSocketId:                 uint32(time.Now().UnixNano()) | 1,
	}
	cif.PeerIP.FromNetAddr(local)
	if err := p.MarshalCIF(cif); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := p.Marshal(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// isHandshake reports whether b is an SRT handshake packet.
func isHandshake(from net.Addr, b []byte) bool {
	p, err := packet.NewPacketFromData(from, b)
	if err != nil {
		return false
	}
	defer p.Decommission()
	h := p.Header()
	return h.IsControlPacket && h.ControlType == packet.CTRLTYPE_HANDSHAKE
}
