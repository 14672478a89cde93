package rtc

import (
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/logging"

	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/internal/ratelog"
)

// ICE-TCP (RFC 6544, passive candidates only) serves clients whose
// firewall blocks UDP: every server session advertises a passive TCP
// candidate on the one listener of Settings.TCP, and pion's TCP mux hands
// each accepted connection to the session whose ufrag its first STUN
// binding request names. The bridge never dials out over TCP (no active
// candidates), so a client cannot make it connect anywhere.

// tcpFirstCheckTimeout bounds the wait for an accepted connection's first
// packet, which must be a STUN binding request (pion's default is 30 s). A
// client sends it at once after connecting; the same wait as ICE's
// disconnected timeout (SetICETimeouts) covers a lossy path.
const tcpFirstCheckTimeout = 5 * time.Second

// tcpUnclaimedTimeout bounds how long a connection whose first request
// names a ufrag no session has gathered (pion keeps it for a session that
// might gather later; default 30 s) is held. A server session gathers its
// passive candidate before its answer leaves, so a real client's ufrag is
// always known by the time it connects: this only holds guesses.
const tcpUnclaimedTimeout = 5 * time.Second

// tcpReadBuffer is the packets pion queues per session's TCP connection
// before its agent reads them (its readBufferSize); as on the UDP mux,
// the agent reads as they come.
const tcpReadBuffer = 64

// tcpWriteBuffer is the bytes pion buffers per session's TCP connection
// when the socket cannot take more (later packets are dropped until it
// drains). pion recommends 4 MiB; a viewer session's video is a few
// Mbit/s, so 1 MiB is over a second of it, and a stalled TCP viewer holds
// no more than that.
const tcpWriteBuffer = 1 << 20

// Defaults of Settings.TCPConns and TCPConnsPerAddr: those of
// limits.webrtc_sessions and webrtc_sessions_per_address (one connection
// per session to each of the bridge's addresses the client reaches).
const (
	DefaultTCPConns        = 2000
	DefaultTCPConnsPerAddr = 500
)

// newTCPMux returns pion's ICE-TCP mux on ln, taking connections only
// within conns (see limitListener).
func newTCPMux(ln net.Listener, conns *addrlimit.Limiter, lf logging.LoggerFactory, log *slog.Logger) ice.TCPMux {
	return ice.NewTCPMuxDefault(ice.TCPMuxParams{
		Listener:                     &limitListener{Listener: ln, conns: conns, log: log},
		Logger:                       lf.NewLogger("tcpmux"),
		ReadBufferSize:               tcpReadBuffer,
		WriteBufferSize:              tcpWriteBuffer,
		FirstStunBindTimeout:         tcpFirstCheckTimeout,
		AliveDurationForConnFromStun: tcpUnclaimedTimeout,
	})
}

// limitListener is the ICE-TCP listener as pion's mux sees it: a
// connection over its client address's or the total limit is closed at
// accept, before pion starts a goroutine and a buffer for it, with one
// rate-limited line per address. The slot is given back when the
// connection closes (pion closes it with its session, or at once if its
// first packet is not a binding request). An Accept error other than a
// closed listener (out of file descriptors) is waited out and retried:
// pion's mux stops accepting for good at the first error it sees.
type limitListener struct {
	net.Listener
	conns  *addrlimit.Limiter
	log    *slog.Logger
	logLim ratelog.Limiter // one line per client address and interval
}

// acceptRetry is the pause after a failed accept: long enough not to
// spin while the process is out of file descriptors, short enough that
// clients hardly notice.
const acceptRetry = 100 * time.Millisecond

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			if ok, n := l.logLim.Allow("accept"); ok {
				l.log.Warn("ICE-TCP accept failed; retrying", "err", err, "suppressed", n)
			}
			time.Sleep(acceptRetry)
			continue
		}
		addr := addrlimit.AddrOf(c.RemoteAddr())
		release, err := l.conns.Acquire(addr)
		if err != nil {
			if ok, n := l.logLim.Allow(addr.String()); ok {
				l.log.Info("ICE-TCP connection refused", "peer", c.RemoteAddr().String(), "reason", err.Error(), "suppressed", n)
			}
			_ = c.Close()
			continue
		}
		return &limitConn{Conn: c, release: release}, nil
	}
}

// limitConn gives its slot back when closed (release is idempotent:
// pion may close a connection twice), before the close itself, so that a
// client that sees its connection end and reconnects finds its slot.
type limitConn struct {
	net.Conn
	release func()
}

func (c *limitConn) Close() error {
	c.release()
	return c.Conn.Close()
}
