package rtc

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// DefaultICECheckRate is the connectivity checks (STUN Binding requests)
// one ICE agent may send per second when Settings.ICECheckRate is 0, with a
// burst of as many. A browser offers 2-10 candidates and the bridge has 1-4
// host candidates: pion checks every pair every 200 ms, up to 8 times, so a
// real session asks for up to ~200/s during its first 1.6 s; dropped checks
// are retried at the next tick, and the client's own checks (answered
// without limit) usually complete ICE first. A connected session sends one
// consent check per keepalive interval (2 s): the budget only bites on
// sessions still checking, which is where a client that lies about its
// addresses aims them at someone else.
const DefaultICECheckRate = 50

// checkBudgetSweep is how often idle budgets are forgotten.
const checkBudgetSweep = 10 * time.Second

// checkBudget bounds the connectivity checks each ICE agent sends: a token
// bucket per agent, keyed by the agent's local ufrag, which every check it
// sends carries in its USERNAME ("remote:local", RFC 8445 section 7.2.2).
// A remote candidate, trickled or peer-reflexive (learned from a possibly
// spoofed source address), is an address the client chose; the candidate
// limit bounds how many there are, this how fast the bridge probes them.
// Safe for concurrent use.
type checkBudget struct {
	rate    rate.Limit
	burst   int
	dropped atomic.Uint64 // checks not sent since start

	mu        sync.Mutex
	byUfrag   map[string]*rate.Limiter // guarded by mu
	lastSweep time.Time                // guarded by mu
}

func newCheckBudget(perSecond int) *checkBudget {
	return &checkBudget{rate: rate.Limit(perSecond), burst: perSecond, byUfrag: map[string]*rate.Limiter{}}
}

// allow takes one check from the budget of the agent whose local ufrag is
// ufrag.
func (b *checkBudget) allow(ufrag string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Sub(b.lastSweep) >= checkBudgetSweep {
		// A full bucket is what a new one would be: forgetting it loses
		// nothing. This keeps the table to the agents checking now.
		for k, l := range b.byUfrag {
			if l.TokensAt(now) >= float64(b.burst) {
				delete(b.byUfrag, k)
			}
		}
		b.lastSweep = now
	}
	l := b.byUfrag[ufrag]
	if l == nil {
		l = rate.NewLimiter(b.rate, b.burst)
		b.byUfrag[ufrag] = l
	}
	if !l.AllowN(now, 1) {
		b.dropped.Add(1)
		return false
	}
	return true
}

// carryOver makes the agent's new local ufrag (after an ICE restart) draw
// from the budget of its previous one: a restart does not refill it.
func (b *checkBudget) carryOver(prev, next string) {
	if prev == "" || next == "" || prev == next {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if l := b.byUfrag[prev]; l != nil {
		b.byUfrag[next] = l
	}
}

// stunBindingRequest is the STUN message type of a Binding request (RFC
// 8489 section 5: method 0x001, class request), stunMagicCookie its fixed
// cookie, stunUsername the USERNAME attribute type.
const (
	stunBindingRequest = 0x0001
	stunMagicCookie    = 0x2112A442
	stunUsername       = 0x0006
	stunHeaderSize     = 20
)

// checkUfrag returns the local ufrag of a connectivity check p sent by one
// of the bridge's agents, and false if p is not a STUN Binding request with
// a USERNAME. Media (RTP, RTCP, DTLS) never starts with two zero bytes, so
// for them this is two byte compares.
func checkUfrag(p []byte) (string, bool) {
	if len(p) < stunHeaderSize || p[0] != 0 || p[1] != stunBindingRequest ||
		binary.BigEndian.Uint32(p[4:8]) != stunMagicCookie {
		return "", false
	}
	attrs := p[stunHeaderSize:]
	if n := int(binary.BigEndian.Uint16(p[2:4])); n < len(attrs) {
		attrs = attrs[:n]
	}
	for len(attrs) >= 4 {
		typ, n := binary.BigEndian.Uint16(attrs[0:2]), int(binary.BigEndian.Uint16(attrs[2:4]))
		if 4+n > len(attrs) {
			return "", false
		}
		if typ == stunUsername {
			user := string(attrs[4 : 4+n])
			return user[strings.LastIndexByte(user, ':')+1:], true
		}
		next := 4 + (n+3)&^3 // values are padded to 4 bytes
		if next > len(attrs) {
			break
		}
		attrs = attrs[next:]
	}
	return "", false
}

// checkConn is the ICE UDP socket as the UDP mux sees it: connectivity
// checks beyond their agent's budget are dropped (reported as sent: to the
// agent they are lost packets, which ICE retries or gives up on); every
// other packet passes untouched. It keeps the mux's allocation-free
// netip.AddrPort path when the socket has one.
type checkConn struct {
	net.PacketConn
	ap     addrPortConn // PacketConn's netip methods; nil if it has none
	budget *checkBudget
}

// addrPortConn is ice.AddrPortReaderWriter: what the UDP mux uses, when
// the socket has it, instead of the net.Addr methods.
type addrPortConn interface {
	ReadFromAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToAddrPort(b []byte, addr netip.AddrPort) (int, error)
}

func newCheckConn(c net.PacketConn, budget *checkBudget) *checkConn {
	ap, _ := c.(addrPortConn)
	if uc, ok := c.(*net.UDPConn); ok {
		ap = udpAddrPortConn{uc}
	}
	return &checkConn{PacketConn: c, ap: ap, budget: budget}
}

// udpAddrPortConn gives a *net.UDPConn the addrPortConn method names.
type udpAddrPortConn struct{ *net.UDPConn }

func (c udpAddrPortConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	return c.ReadFromUDPAddrPort(b)
}

func (c udpAddrPortConn) WriteToAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	return c.WriteToUDPAddrPort(b, addr)
}

// over reports whether p is a connectivity check over its agent's budget
// (and takes it from the budget if not).
func (b *checkBudget) over(p []byte) bool {
	ufrag, ok := checkUfrag(p)
	return ok && !b.allow(ufrag, time.Now())
}

func (c *checkConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.budget.over(p) {
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

func (c *checkConn) WriteToAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	if c.budget.over(p) {
		return len(p), nil
	}
	if c.ap == nil {
		return c.PacketConn.WriteTo(p, net.UDPAddrFromAddrPort(addr))
	}
	return c.ap.WriteToAddrPort(p, addr)
}

func (c *checkConn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	if c.ap != nil {
		return c.ap.ReadFromAddrPort(p)
	}
	n, addr, err := c.PacketConn.ReadFrom(p)
	if ua, ok := addr.(*net.UDPAddr); ok {
		return n, ua.AddrPort(), err
	}
	return n, netip.AddrPort{}, err
}
