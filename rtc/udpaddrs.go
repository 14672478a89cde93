package rtc

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// splitWildcard replaces a UDP socket bound to a wildcard address
// (listen.webrtc_udp ":8189") with one socket per local address on the
// same port, and returns those.
//
// Why: a reply from a wildcard socket leaves with the source address the
// kernel's routing picks for the way back, not the address the request
// arrived on. A client that sent a check to the answer's candidate
// 192.0.2.2:8189 from a loopback address gets the answer from
// 127.0.0.1:8189, does not recognise it as a reply to that check, learns a
// peer-reflexive candidate instead and waits out its nomination delay
// (about a second); on a multi-homed host such replies can also be dropped
// on the way. A socket bound to one address always answers from it.
//
// The addresses are those pion would gather on the wildcard socket: the
// interfaces that are up (loopback only if loopback is set, only those
// named in interfaces if any), IPv4 only for an IPv4 wildcard, IPv6 without
// link-local addresses (which pion never advertises), at most
// maxAddrSockets. Addresses that appear or go after start are followed by
// addrMux.
//
// The wildcard socket is closed first (the port cannot be bound twice) and
// only on success: if no address qualifies it is returned alone and kept;
// if one cannot be bound, the sockets bound so far are closed and the
// error names the address (the wildcard socket is then closed too: the
// Engine owns it).
func splitWildcard(wild *net.UDPConn, interfaces []string, loopback bool) ([]*net.UDPConn, error) {
	la, ok := wild.LocalAddr().(*net.UDPAddr)
	if !ok || !la.IP.IsUnspecified() {
		return []*net.UDPConn{wild}, nil
	}
	addrs, err := localAddrs(la.IP.To4() != nil, interfaces, loopback)
	if err != nil || len(addrs) == 0 {
		return []*net.UDPConn{wild}, err
	}
	// The rest are logged by addrMux's first scan.
	addrs = addrs[:min(len(addrs), maxAddrSockets)]
	if err := wild.Close(); err != nil {
		return nil, fmt.Errorf("rtc: close wildcard ICE socket %s: %w", la, err)
	}
	conns := make([]*net.UDPConn, 0, len(addrs))
	for _, a := range addrs {
		uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, uint16(la.Port))))
		if err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			return nil, fmt.Errorf("rtc: ICE UDP socket on local address %s (for wildcard %s): %w", a, la, err)
		}
		conns = append(conns, uc)
	}
	return conns, nil
}

// localAddrs lists the local addresses splitWildcard binds, in interface
// order, each once.
func localAddrs(v4only bool, interfaces []string, loopback bool) ([]netip.Addr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("rtc: list network interfaces: %w", err)
	}
	var addrs []netip.Addr
	var errs []error
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 ||
			(iface.Flags&net.FlagLoopback != 0 && !loopback) ||
			(len(interfaces) > 0 && !slices.Contains(interfaces, iface.Name)) {
			continue
		}
		ifAddrs, err := iface.Addrs()
		if err != nil {
			errs = append(errs, fmt.Errorf("rtc: addresses of interface %s: %w", iface.Name, err))
			continue
		}
		for _, ia := range ifAddrs {
			ipn, ok := ia.(*net.IPNet)
			if !ok {
				continue
			}
			a, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			a = a.Unmap()
			switch {
			case a.IsLoopback() && !loopback,
				a.Is6() && (v4only || a.IsLinkLocalUnicast()),
				slices.Contains(addrs, a):
				continue
			}
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, errors.Join(errs...)
	}
	return addrs, nil
}
