// Package addrlimit counts what clients hold (connections, sessions) in
// total and per client address, so one host cannot take every slot.
//
// Addresses are aggregated the way providers hand them out: an IPv4
// address is one client, an IPv6 client owns at least a /64 (RFC 6177,
// and privacy addresses rotate inside it), so IPv6 is counted per /64.
package addrlimit

import (
	"errors"
	"net"
	"net/netip"
	"sync"
)

// Refusals of Acquire. Callers branch on them: ErrPerAddr is the client's
// own doing (HTTP 429), ErrTotal the server's state (HTTP 503).
var (
	ErrTotal   = errors.New("server is at its limit")
	ErrPerAddr = errors.New("too many from this address")
)

// Key is the unit addresses are counted in: the address itself for IPv4
// (IPv4-mapped IPv6 included), its /64 for IPv6.
func Key(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// AddrOf returns the IP of a net.Addr or of a "host:port" string (as
// http.Request.RemoteAddr holds it); the zero Addr if there is none, which
// is counted as one client of its own.
func AddrOf(a any) netip.Addr {
	switch v := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	case net.Addr:
		return AddrOf(v.String())
	case string:
		if ap, err := netip.ParseAddrPort(v); err == nil {
			return ap.Addr().Unmap()
		}
		if ip, err := netip.ParseAddr(v); err == nil {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// Limiter holds at most Total slots, and at most PerAddr for one Key.
// A limit <= 0 means no limit of that kind. Set the limits before first
// use, or change them at any time with SetLimits (a lower limit refuses new
// acquisitions; slots already held stay until released). Safe for
// concurrent use; the zero value has no limits.
type Limiter struct {
	mu      sync.Mutex
	total   int                  // guarded by mu
	perAddr int                  // guarded by mu
	n       int                  // slots held; guarded by mu
	byKey   map[netip.Prefix]int // slots held per Key, no zero entries; guarded by mu
}

// New returns a Limiter with the given limits.
func New(total, perAddr int) *Limiter {
	l := &Limiter{}
	l.SetLimits(total, perAddr)
	return l
}

// SetLimits changes the limits (config reload).
func (l *Limiter) SetLimits(total, perAddr int) {
	l.mu.Lock()
	l.total, l.perAddr = total, perAddr
	l.mu.Unlock()
}

// Acquire takes one slot for addr, or says which limit refuses it. release
// gives the slot back; calling it more than once is harmless.
func (l *Limiter) Acquire(addr netip.Addr) (release func(), err error) {
	k := Key(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total > 0 && l.n >= l.total {
		return nil, ErrTotal
	}
	if l.perAddr > 0 && l.byKey[k] >= l.perAddr {
		return nil, ErrPerAddr
	}
	if l.byKey == nil {
		l.byKey = make(map[netip.Prefix]int)
	}
	l.n++
	l.byKey[k]++
	var once sync.Once
	return func() { once.Do(func() { l.release(k) }) }, nil
}

func (l *Limiter) release(k netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n--
	if l.byKey[k] <= 1 {
		delete(l.byKey, k)
	} else {
		l.byKey[k]--
	}
}

// Len returns the slots held in total and by addr's Key.
func (l *Limiter) Len(addr netip.Addr) (total, perAddr int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n, l.byKey[Key(addr)]
}
