// Package rtc is the WebRTC plumbing WHIP and WHEP share: one pion API per
// process (codecs, interceptors, the single ICE UDP port, NAT address
// rewrite) and the HTTP mechanics of WHIP/WHEP session resources.
package rtc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/logging"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/ratelog"
	"github.com/wishbridge/bridge/internal/udpbatch"
)

// Settings configures an Engine. UDP is required; the rest have working zero
// values.
type Settings struct {
	// UDP is the socket every server session's ICE traffic goes through
	// (outbound sessions have their own: see outboundSettings; opened by the
	// caller, so a bind error surfaces before anything starts). The Engine
	// owns it from New on and closes it in Close. A *net.UDPConn bound to
	// a wildcard address is closed in New and replaced by one socket per
	// local address on its port (see splitWildcard).
	UDP net.PacketConn
	// TCP, if set, is the ICE-TCP listener (listen.webrtc_tcp): every
	// server session also advertises a passive TCP candidate on it, for
	// clients whose firewall blocks UDP (see icetcp.go). Opened by the
	// caller like UDP; the Engine owns it from New on and closes it in
	// Close.
	TCP net.Listener
	// TCPConns and TCPConnsPerAddr bound the connections the ICE-TCP
	// listener holds, in total and per client address (IPv6 per /64);
	// over either, a connection is closed at accept. 0 means
	// DefaultTCPConns, DefaultTCPConnsPerAddr.
	TCPConns, TCPConnsPerAddr int
	// ICEServers are used by the bridge's own agents and, TURN servers
	// only with derived credentials, advertised to admitted clients (Link
	// headers): see ICEServers.Bridge and ICEServers.Client.
	ICEServers ICEServers
	// NAT1To1 lists public IP addresses to advertise as host candidates, in
	// addition to the local ones, for a host behind a 1:1 NAT.
	NAT1To1 []string
	// Interfaces restricts candidate gathering to these interface names;
	// empty means all.
	Interfaces []string
	// IncludeLoopback gathers loopback candidates too (tests, single-host
	// setups).
	IncludeLoopback bool
	// ICELite answers server sessions as an ICE-lite agent (RFC 8445
	// section 2.5: no checks of its own, the client nominates); off, full
	// ICE, by default. Outbound sessions are full ICE either way. For
	// measuring one against the other (TestConnectTimes).
	ICELite bool
	// Log receives pion's warnings and errors; nil means slog.Default().
	Log *slog.Logger
	// OnFlush, if set, is told after each batch of packets leaves the UDP
	// socket how many it held and how long the oldest waited (see
	// udpbatch.Options.OnFlush).
	OnFlush func(packets int, wait time.Duration)
	// ICECandidates bounds the remote candidates of one session, counted
	// across its offer, trickle PATCHes and ICE restarts; 0 means
	// DefaultICECandidates.
	ICECandidates int
	// PatchRate bounds the PATCH requests per second of one session (and
	// their burst); 0 means DefaultPatchRate.
	PatchRate int
	// ICECheckRate bounds the connectivity checks per second of one ICE
	// agent (and their burst); 0 means DefaultICECheckRate.
	ICECheckRate int
}

// Engine builds PeerConnections from two APIs shared by every session: one
// for peers we receive media from, one for peers we only send to.
type Engine struct {
	api        *webrtc.API // receiving peers: NACK generator, reports, TWCC
	sendAPI    *webrtc.API // sending peers: no interceptors (see NewSenderPeerConnection)
	outAPI     *webrtc.API // api's outbound twin: sockets of its own (outboundSettings)
	outSendAPI *webrtc.API // sendAPI's outbound twin
	mux        interface{ Close() error }
	tcpMux     interface{ Close() error } // nil without Settings.TCP
	udp        *addrMux                   // nil when Settings.UDP is not a *net.UDPConn
	iceServers ICEServers
	nat1to1    []netip.Addr // listed first in answers (OrderCandidates)

	loopback      bool // loopback remote candidates are probed (Settings.IncludeLoopback)
	iceCandidates int
	patchRate     int
	checks        *checkBudget
	// Counters since start (ICEStats).
	candidatesDropped atomic.Uint64
	patchesRefused    atomic.Uint64
}

// ICEStats counts what the ICE limits held back since start.
type ICEStats struct {
	// CandidatesDropped are remote candidates refused for being over a
	// session's ICECandidates or at an address the bridge never probes.
	CandidatesDropped uint64
	// ChecksDropped are connectivity checks not sent, over an agent's
	// ICECheckRate.
	ChecksDropped uint64
	// PatchesRefused are PATCH requests answered 429, over a session's
	// PatchRate.
	PatchesRefused uint64
}

// New builds the API: default codecs (H.264 in every common profile, Opus,
// ...), NACK, RTCP reports and TWCC interceptors, and every peer on the one
// UDP socket in s.UDP.
func New(s Settings) (*Engine, error) {
	if s.UDP == nil {
		return nil, fmt.Errorf("rtc: no ICE UDP socket")
	}
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, fmt.Errorf("rtc: register codecs: %w", err)
	}
	reg, err := interceptors(m)
	if err != nil {
		return nil, fmt.Errorf("rtc: register interceptors: %w", err)
	}

	lf := &slogLoggerFactory{log: log.With("component", "pion")}
	se := webrtc.SettingEngine{LoggerFactory: lf}
	checks := newCheckBudget(orDefault(s.ICECheckRate, DefaultICECheckRate))
	var udp *addrMux
	var mux ice.UDPMux
	if uc, ok := s.UDP.(*net.UDPConn); ok {
		// A wildcard socket becomes one per local address, so that
		// replies leave from the address the request arrived on, and
		// follows the host's addresses (see splitWildcard, addrMux).
		wild := uc.LocalAddr().(*net.UDPAddr)
		conns, err := splitWildcard(uc, s.Interfaces, s.IncludeLoopback)
		if err != nil {
			_ = uc.Close()
			return nil, err
		}
		wrap := func(c *net.UDPConn) (ice.UDPMux, *udpbatch.Conn) {
			// Every packet to every peer leaves through these sockets:
			// batched into sendmmsg calls as they queue up (no timer),
			// they cost about 40 % less than one sendto each.
			b := udpbatch.New(c, udpbatch.Options{Logger: log.With("component", "udpbatch"), OnFlush: s.OnFlush})
			return webrtc.NewICEUDPMux(lf.NewLogger("udpmux"), newCheckConn(b, checks)), b
		}
		udp = newAddrMux(conns, wrap, conns[0] != uc, uint16(wild.Port), wild.IP.To4() != nil, s.Interfaces, s.IncludeLoopback, log)
		mux = udp
		if conns[0] != uc {
			addrs := make([]string, len(conns))
			for i, c := range conns {
				addrs[i] = c.LocalAddr().String()
			}
			log.Info("WebRTC UDP on every local address, one socket each", "wildcard", uc.LocalAddr().String(), "addrs", addrs)
		}
	} else {
		mux = webrtc.NewICEUDPMux(lf.NewLogger("udpmux"), newCheckConn(s.UDP, checks))
	}
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	se.SetIncludeLoopbackCandidate(s.IncludeLoopback)
	// Every remote candidate, signalled or peer-reflexive, passes this
	// before the agent probes it (see unprobeable).
	se.SetRemoteIPFilter(func(ip net.IP) (keep bool) {
		panics.Do("rtc", log, func() {
			addr, ok := netip.AddrFromSlice(ip)
			keep = ok && unprobeable(addr, s.IncludeLoopback) == ""
		})
		return keep
	})
	// Fail dead sessions quickly so their resources return to the pool.
	se.SetICETimeouts(5*time.Second, 15*time.Second, 2*time.Second)
	se.SetDTLSRetransmissionInterval(dtlsRetransmitInterval)
	// No mDNS: pion would open multicast sockets and goroutines per peer
	// to resolve .local candidates. A browser hiding its address behind
	// one still reaches our host candidates, and we learn its address from
	// its connectivity checks (a peer-reflexive candidate).
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if len(s.Interfaces) > 0 {
		ifaces := slices.Clone(s.Interfaces)
		se.SetInterfaceFilter(func(name string) bool { return slices.Contains(ifaces, name) })
	}
	if len(s.NAT1To1) > 0 {
		if err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External:        slices.Clone(s.NAT1To1),
			AsCandidateType: webrtc.ICECandidateTypeHost,
			Mode:            webrtc.ICEAddressRewriteAppend,
		}); err != nil {
			_ = mux.Close()
			return nil, fmt.Errorf("rtc: nat_1to1: %w", err)
		}
	}
	var nat []netip.Addr
	for _, a := range s.NAT1To1 {
		if ip, err := netip.ParseAddr(a); err == nil {
			nat = append(nat, ip.Unmap())
		}
	}
	out := outboundSettings(se, checks)
	se.SetLite(s.ICELite)
	se.SetICEUDPMux(mux)
	var tcpMux ice.TCPMux
	if s.TCP != nil {
		// Server sessions only: outbound ones (out, copied above) dial
		// remote servers over UDP or TURN and have no use for it.
		conns := addrlimit.New(orDefault(s.TCPConns, DefaultTCPConns), orDefault(s.TCPConnsPerAddr, DefaultTCPConnsPerAddr))
		tcpMux = newTCPMux(s.TCP, conns, lf, log)
		se.SetICETCPMux(tcpMux)
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6, webrtc.NetworkTypeTCP4, webrtc.NetworkTypeTCP6})
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	sendAPI := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(&interceptor.Registry{}), webrtc.WithSettingEngine(se))
	return &Engine{
		api: api, sendAPI: sendAPI, mux: mux, tcpMux: tcpMux, udp: udp, iceServers: slices.Clone(s.ICEServers), nat1to1: nat,
		outAPI:        webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(out)),
		outSendAPI:    webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(&interceptor.Registry{}), webrtc.WithSettingEngine(out)),
		loopback:      s.IncludeLoopback,
		iceCandidates: orDefault(s.ICECandidates, DefaultICECandidates),
		patchRate:     orDefault(s.PatchRate, DefaultPatchRate),
		checks:        checks,
	}, nil
}

// dtlsRetransmitInterval is the wait before a DTLS handshake flight is
// sent again, doubled by pion's DTLS at each retry (200, 400, 800 ms...).
// pion's default, 1 s, makes one lost handshake packet cost a viewer a
// second of black screen; a handshake round trip is a few ms on a LAN and
// well under 200 ms across the internet, so a flight still in flight is
// rarely sent twice.
const dtlsRetransmitInterval = 200 * time.Millisecond

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// interceptors registers what every peer needs: the NACK generator,
// receiver reports and TWCC
// feedback for what we receive. Sender reports are not pion's: pion stamps
// them with the time a packet was sent, which puts a transcoded track's
// buffering delay into the receiver's lip sync; SenderReporter stamps them
// from the stream clock instead.
func interceptors(m *webrtc.MediaEngine) (*interceptor.Registry, error) {
	reg := &interceptor.Registry{}
	// NACK: pion's generator asks for what we receive (pion NACKs a lost
	// packet every 100 ms until it leaves the window unless told
	// otherwise; three tries cover a lost retransmission). What we send is
	// retransmitted by OutTrack itself, not by pion's responder: that one
	// copies every packet sent into a per-peer history (about 400 KiB per
	// viewer), where OutTrack keeps references to the hub's packets, which
	// every viewer shares.
	gen, err := nack.NewGeneratorInterceptor(nack.GeneratorMaxNacksPerPacket(3))
	if err != nil {
		return nil, err
	}
	reg.Add(gen)
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack"}, webrtc.RTPCodecTypeVideo)
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack", Parameter: "pli"}, webrtc.RTPCodecTypeVideo)
	// The mid header extension lets offers without a=ssrc lines be matched
	// to their transceivers (RFC 8843).
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.SDESMidURI}, kind); err != nil {
			return nil, err
		}
	}
	rr, err := report.NewReceiverInterceptor()
	if err != nil {
		return nil, err
	}
	reg.Add(rr)
	if err := webrtc.ConfigureTWCCSender(m, reg); err != nil {
		return nil, err
	}
	return reg, nil
}

// NewPeerConnection returns a PeerConnection for a peer that sends us
// media (a WHIP publisher; a WHEP source we pull is outbound: see
// NewOutboundPeerConnection): its RTP goes through
// the NACK generator, receiver reports and TWCC feedback.
func (e *Engine) NewPeerConnection() (*webrtc.PeerConnection, error) {
	return e.api.NewPeerConnection(e.agentConfig())
}

// NewSenderPeerConnection returns a PeerConnection for a peer we only send
// to (a WHEP viewer; a WHIP target is outbound: see
// NewOutboundSenderPeerConnection), without interceptors: they all serve
// what we receive, and on the send side each would sit in the path of every
// packet to every viewer (and pion's run a goroutine each per peer).
// OutTrack answers NACKs and keyframe requests and makes the sender reports.
func (e *Engine) NewSenderPeerConnection() (*webrtc.PeerConnection, error) {
	return e.sendAPI.NewPeerConnection(e.agentConfig())
}

// UDPStats returns the UDP sockets' send counters, summed: packets sent,
// send syscalls, packets the kernel refused (zero when sends are not
// batched).
func (e *Engine) UDPStats() udpbatch.Stats {
	if e.udp == nil {
		return udpbatch.Stats{}
	}
	return e.udp.Stats()
}

// ICEStats returns what the ICE limits held back since start.
func (e *Engine) ICEStats() ICEStats {
	return ICEStats{
		CandidatesDropped: e.candidatesDropped.Load(),
		ChecksDropped:     e.checks.dropped.Load(),
		PatchesRefused:    e.patchesRefused.Load(),
	}
}

// Close closes the UDP mux and its socket, and the ICE-TCP mux and its
// listener if there is one. Sessions must be closed first.
func (e *Engine) Close() error {
	var tcpErr error
	if e.tcpMux != nil {
		tcpErr = e.tcpMux.Close()
	}
	return errors.Join(e.mux.Close(), tcpErr)
}

// slogLoggerFactory routes pion's logs into slog. Debug and trace are
// dropped: pion is chatty there and the bridge logs what matters itself.
// Warnings and errors pass once per kind per interval: pion logs one per
// bad packet ("Failed to handle decode ICE from ..."), which a client
// sending garbage would turn into a flood.
type slogLoggerFactory struct {
	log   *slog.Logger
	limit ratelog.Limiter // shared by every scope's logger
}

func (f *slogLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return &slogLogger{log: f.log.With("scope", scope), scope: scope, limit: &f.limit}
}

type slogLogger struct {
	log   *slog.Logger
	scope string
	limit *ratelog.Limiter
}

// pass reports whether a warning or error may be logged, keyed by its
// scope and its first words (the rest names peers and values, which vary
// per packet), with the count held back since the last one.
func (l *slogLogger) pass(msg string) (bool, int) {
	kind := msg
	if i := strings.IndexAny(kind, "0123456789:("); i >= 0 {
		kind = kind[:i]
	}
	return l.limit.Allow(l.scope + " " + kind)
}

func (l *slogLogger) Trace(string)          {}
func (l *slogLogger) Tracef(string, ...any) {}
func (l *slogLogger) Debug(string)          {}
func (l *slogLogger) Debugf(string, ...any) {}
func (l *slogLogger) Info(msg string)       { l.log.Debug(msg) }
func (l *slogLogger) Infof(f string, a ...any) {
	l.log.Debug(fmt.Sprintf(f, a...))
}
func (l *slogLogger) Warn(msg string) { l.warn(msg) }
func (l *slogLogger) Warnf(f string, a ...any) {
	l.warn(fmt.Sprintf(f, a...))
}

// warn logs a pion warning, except those that describe normal operation
// (logged at debug): a warning per viewer would bury the real ones.
func (l *slogLogger) warn(msg string) {
	for _, b := range benignWarnings {
		if strings.HasPrefix(msg, b.prefix) && strings.Contains(msg[len(b.prefix):], b.cause) {
			l.log.Debug(msg)
			return
		}
	}
	if lateRTP(msg) {
		l.log.Debug(msg)
		return
	}
	if ok, n := l.pass(msg); ok {
		l.log.Warn(msg, "suppressed", n)
	}
}

// benignWarning is a pion warning that is not: one that starts with
// prefix and, after it, contains cause ("" matches any).
type benignWarning struct{ prefix, cause string }

// benignWarnings describe normal operation. The ICE agent checks before
// the remote candidates of a WHEP/WHIP offer are added, every time; the
// UDP mux on a wildcard address is kept only where no local address
// qualifies (see splitWildcard).
var benignWarnings = []benignWarning{
	{"Failed to ping without candidate pairs", ""},
	{"UDPMuxDefault should not listening on unspecified address", ""},
	// A peer-reflexive candidate at an address the bridge never probes
	// (the remote IP filter): one per packet a client sends from there.
	{"Ignoring remote candidate filtered by remote IP policy", ""},
	// An ICE-TCP client closed its connection (it left, or its session
	// ended): one per TCP session.
	{"Failed to read streaming packet: EOF", ""},
	// Every session that ends: the SRTP/SRTCP sessions close while the
	// PeerConnection's accept loops still wait on them, and the ICE
	// agent's reader sees its candidate's connection closed. A read
	// failing for another reason stays a warning.
	{"Failed to accept RTP stream is already closed", ""},
	{"Failed to accept RTCP stream is already closed", ""},
	{"Failed to read from candidate", "closed pipe"},
	{"Failed to read from candidate", "use of closed network connection"},
	// A browser hides its host addresses behind .local names (Chromium,
	// Firefox, Safari by default); mDNS is off on purpose (see New) and
	// its address is learnt from its checks.
	{"Remote mDNS candidate added, but mDNS is disabled", ""},
	// A DTLS alert (content type 21: the peer's close_notify) arriving
	// after its session's DTLS endpoint closed, at every shutdown and
	// often when a session ends. Other packets without an endpoint
	// (handshakes, RTP before DTLS completes) stay warnings.
	{"Warning: mux: no endpoint for packet starting with 21,", ""},
}

// noEndpoint is pion's mux warning for a packet no endpoint takes.
const noEndpoint = "Warning: mux: no endpoint for packet starting with "

// lateRTP reports the no-endpoint warning for an RTP or RTCP packet (first
// byte 128-191, RFC 7983): a client's last receiver reports and media
// still in flight when its session ended. Before DTLS completes pion
// queues such packets instead (they are not dropped).
func lateRTP(msg string) bool {
	rest, ok := strings.CutPrefix(msg, noEndpoint)
	if !ok {
		return false
	}
	first, _, _ := strings.Cut(rest, ",")
	b, err := strconv.Atoi(first)
	return err == nil && b >= 128 && b <= 191
}

func (l *slogLogger) Error(msg string) {
	if ok, n := l.pass(msg); ok {
		l.log.Error(msg, "suppressed", n)
	}
}
func (l *slogLogger) Errorf(f string, a ...any) { l.Error(fmt.Sprintf(f, a...)) }
