package rtc

import (
	"net"

	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"
	"github.com/pion/webrtc/v4"
)

// outboundSettings returns the settings of the bridge's outbound sessions
// (WHIP forward, WHEP pull), made from server, the server sessions'
// settings before their UDP mux is set: the same interface filter,
// loopback, remote IP filter, timeouts and address rewrite, but no UDP
// mux. Each outbound agent gathers on sockets of its own (an ephemeral
// port per local address, closed with the agent) and runs full ICE. On
// the shared server socket the mux tells sessions apart by the remote
// address once a check has arrived, and two sessions to one remote media
// address (two forwards to one WHIP service, a forward and a pull against
// one server: most services use a single media port) would be the same
// one to it: only the first completed ICE. The connectivity checks these
// agents send still draw from budget (see outboundNet).
func outboundSettings(server webrtc.SettingEngine, budget *checkBudget) webrtc.SettingEngine {
	out := server
	out.SetICEUDPMux(nil)
	out.SetNet(outboundNet{Net: &stdnet.Net{}, budget: budget})
	return out
}

// outboundNet is the host network of the outbound agents: pion's standard
// one, with the connectivity checks sent from each UDP socket it opens
// bounded by the check budget, and the interface list read afresh each
// time an agent asks (at gathering), so that addresses added after start
// are gathered. The embedded Net is only used for its stateless methods
// (listen, dial, resolve): its interface list is never filled, as one
// shared list refreshed under pion's agents would be a data race.
type outboundNet struct {
	*stdnet.Net
	budget *checkBudget
}

func (n outboundNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	return &checkUDPConn{UDPConn: c, budget: n.budget}, nil
}

func (n outboundNet) Interfaces() ([]*transport.Interface, error) {
	now, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	return now.Interfaces()
}

func (n outboundNet) InterfaceByIndex(index int) (*transport.Interface, error) {
	now, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	return now.InterfaceByIndex(index)
}

func (n outboundNet) InterfaceByName(name string) (*transport.Interface, error) {
	now, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	return now.InterfaceByName(name)
}

// checkUDPConn is a socket of an outbound agent: connectivity checks over
// the agent's budget are dropped, as checkConn drops them on the server
// socket. pion's agents send everything through WriteTo.
type checkUDPConn struct {
	transport.UDPConn
	budget *checkBudget
}

func (c *checkUDPConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.budget.over(p) {
		return len(p), nil
	}
	return c.UDPConn.WriteTo(p, addr)
}

// NewOutboundPeerConnection returns a PeerConnection for a remote server
// we pull media from (WHEP pull), with the interceptors of
// NewPeerConnection, on sockets of its own (see outboundSettings).
func (e *Engine) NewOutboundPeerConnection() (*webrtc.PeerConnection, error) {
	return e.outAPI.NewPeerConnection(e.agentConfig())
}

// NewOutboundSenderPeerConnection returns a PeerConnection for a remote
// server we only send to (WHIP forward), without interceptors as
// NewSenderPeerConnection, on sockets of its own (see outboundSettings).
func (e *Engine) NewOutboundSenderPeerConnection() (*webrtc.PeerConnection, error) {
	return e.outSendAPI.NewPeerConnection(e.agentConfig())
}
