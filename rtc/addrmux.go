package rtc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pion/ice/v4"

	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/ratelog"
	"github.com/wishbridge/bridge/internal/udpbatch"
)

// addrScanInterval is how often the local addresses are listed again to
// follow the host's changes (a Docker network created, a DHCP lease, a new
// IPv6 privacy address). A new address is usable by sessions that start
// after the scan that finds it; listing the interfaces costs a few
// syscalls per interface, nothing against a few seconds.
const addrScanInterval = 2 * time.Second

// maxAddrSockets bounds the per-address ICE sockets. Each is a read
// goroutine and its buffers, and every session gathers a candidate on
// each, so its answer grows with them; a host with dozens of Docker
// networks stays under it, a runaway (addresses added in a loop, an IPv6
// privacy address per minute never expiring) does not grow without end.
// Addresses over it are not listened on, and a line says so.
const maxAddrSockets = 64

// addrMux is the ice.UDPMux of a wildcard listen.webrtc_udp: one pion
// UDPMuxDefault per local address (see splitWildcard), over a set that
// follows the host's addresses. pion's MultiUDPMuxDefault (ice v4.4.8)
// takes its muxes once, at construction; this one adds a socket for an
// address that appears and closes the one of an address that goes.
//
// Agents take GetListenAddresses when they gather, so a new address serves
// the sessions that start after it is found; a session that gathered on an
// address that goes loses that candidate (its socket is closed) and keeps
// the others.
//
// Lock order: mu is a leaf; no mux method is called with it held except
// Close on a socket already removed from the set.
type addrMux struct {
	port       uint16
	v4only     bool
	interfaces []string
	loopback   bool
	wrap       func(*net.UDPConn) (ice.UDPMux, *udpbatch.Conn) // batching and check filter around a new socket
	log        *slog.Logger
	limit      ratelog.Limiter // bind failures per address, the cap

	mu      sync.Mutex
	socks   []addrSock     // in the order found; GetListenAddresses keeps it
	retired udpbatch.Stats // sent by sockets closed since start
	closed  bool

	stop chan struct{} // closed by Close; nil when not watching
	done chan struct{} // closed when the watcher returns
}

// addrSock is one local address's socket and the mux over it.
type addrSock struct {
	addr  netip.Addr
	laddr *net.UDPAddr
	mux   ice.UDPMux
	batch *udpbatch.Conn
}

// newAddrMux returns a mux over conns, each wrapped by wrap. With watch it
// also follows the host's addresses every addrScanInterval, opening
// sockets on port (IPv4 only with v4only; interfaces and loopback as in
// localAddrs) until Close.
func newAddrMux(conns []*net.UDPConn, wrap func(*net.UDPConn) (ice.UDPMux, *udpbatch.Conn), watch bool, port uint16, v4only bool, interfaces []string, loopback bool, log *slog.Logger) *addrMux {
	m := &addrMux{port: port, v4only: v4only, interfaces: slices.Clone(interfaces), loopback: loopback, wrap: wrap, log: log}
	for _, c := range conns {
		m.socks = append(m.socks, m.sock(c))
	}
	if watch {
		m.stop, m.done = make(chan struct{}), make(chan struct{})
		go m.watch()
	}
	return m
}

// watch rescans the local addresses until Close.
func (m *addrMux) watch() {
	defer close(m.done)
	// Only the ticker loop is outside panics.Do: a panic there ends the
	// watching (the sockets stay), never the process.
	defer panics.Recover("rtc address watcher", m.log, nil)
	t := time.NewTicker(addrScanInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			// A panic ends one scan, not the watching.
			panics.Do("rtc", m.log, m.scan)
		}
	}
}

// scan opens a socket for each qualifying local address without one (up
// to maxAddrSockets) and closes those of addresses gone. A listing that
// fails changes nothing; an address that cannot be bound (an IPv6 address
// still in duplicate address detection, the port taken) is tried again at
// the next scan.
func (m *addrMux) scan() {
	addrs, err := localAddrs(m.v4only, m.interfaces, m.loopback)
	if err != nil {
		if ok, n := m.limit.Allow("list"); ok {
			m.log.Warn("WebRTC UDP: cannot list local addresses; sockets kept", "err", err, "suppressed", n)
		}
		return
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	var gone []addrSock
	m.socks = slices.DeleteFunc(m.socks, func(s addrSock) bool {
		if slices.Contains(addrs, s.addr) {
			return false
		}
		gone = append(gone, s)
		return true
	})
	var fresh []netip.Addr
	for _, a := range addrs {
		if !slices.ContainsFunc(m.socks, func(s addrSock) bool { return s.addr == a }) {
			fresh = append(fresh, a)
		}
	}
	room := maxAddrSockets - len(m.socks)
	m.mu.Unlock()

	for _, s := range gone {
		err := s.mux.Close()
		m.mu.Lock()
		addStats(&m.retired, s.batch.Stats())
		m.mu.Unlock()
		m.log.Info("WebRTC UDP socket closed: local address gone", "addr", s.laddr.String(), "err", err)
	}
	if len(fresh) > room {
		if ok, n := m.limit.Allow("cap"); ok {
			m.log.Warn("WebRTC UDP: more local addresses than sockets allowed; the rest are not listened on",
				"max", maxAddrSockets, "unlistened", fresh[max(room, 0):], "suppressed", n)
		}
		fresh = fresh[:max(room, 0)]
	}
	for _, a := range fresh {
		laddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, m.port))
		uc, err := net.ListenUDP("udp", laddr)
		if err != nil {
			if ok, n := m.limit.Allow("bind " + a.String()); ok {
				m.log.Warn("WebRTC UDP: cannot listen on a new local address; trying again", "addr", laddr.String(), "err", err, "suppressed", n)
			}
			continue
		}
		s := m.sock(uc)
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			_ = s.mux.Close()
			return
		}
		m.socks = append(m.socks, s)
		m.mu.Unlock()
		m.log.Info("WebRTC UDP socket opened on a new local address", "addr", laddr.String())
	}
}

// sock wraps c, bound to one local address.
func (m *addrMux) sock(c *net.UDPConn) addrSock {
	laddr := c.LocalAddr().(*net.UDPAddr)
	ap := laddr.AddrPort()
	mux, batch := m.wrap(c)
	return addrSock{addr: ap.Addr().Unmap(), laddr: laddr, mux: mux, batch: batch}
}

// current returns a copy of the socket set.
func (m *addrMux) current() []addrSock {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.socks)
}

// GetConn returns the connection of ufrag on the socket of addr, the local
// address pion gathers on (one of GetListenAddresses).
func (m *addrMux) GetConn(ufrag string, addr net.Addr) (net.PacketConn, error) {
	for _, s := range m.current() {
		if s.laddr.String() == addr.String() {
			return s.mux.GetConn(ufrag, addr)
		}
	}
	return nil, fmt.Errorf("rtc: no ICE UDP socket on local address %s (removed since gathering began?)", addr)
}

// RemoveConnByUfrag removes ufrag's connections from every socket.
func (m *addrMux) RemoveConnByUfrag(ufrag string) {
	for _, s := range m.current() {
		s.mux.RemoveConnByUfrag(ufrag)
	}
}

// GetListenAddresses returns the addresses listened on now.
func (m *addrMux) GetListenAddresses() []net.Addr {
	socks := m.current()
	addrs := make([]net.Addr, len(socks))
	for i, s := range socks {
		addrs[i] = s.laddr
	}
	return addrs
}

// Stats sums the send counters of every socket since start.
func (m *addrMux) Stats() udpbatch.Stats {
	m.mu.Lock()
	sum := m.retired
	socks := slices.Clone(m.socks)
	m.mu.Unlock()
	for _, s := range socks {
		addStats(&sum, s.batch.Stats())
	}
	return sum
}

// addStats adds st to sum.
func addStats(sum *udpbatch.Stats, st udpbatch.Stats) {
	sum.Sent += st.Sent
	sum.Batches += st.Batches
	sum.GSOSends += st.GSOSends
	sum.Dropped += st.Dropped
}

// Close stops the watcher and closes every socket.
func (m *addrMux) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	socks := m.socks
	m.socks = nil
	m.mu.Unlock()
	if m.stop != nil {
		close(m.stop)
		<-m.done
	}
	var errs []error
	for _, s := range socks {
		errs = append(errs, s.mux.Close())
	}
	return errors.Join(errs...)
}
