package rtc

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/sdp/v3"
	"github.com/pion/stun/v4"
	"github.com/pion/webrtc/v4"
)

// TestReplyFromRequestAddress: with listen.webrtc_udp on a wildcard
// address (the default), a connectivity check sent from a loopback address
// to each of the answer's host candidates, IPv4 and IPv6, is answered from
// that candidate's address and port, the one the client sent to. From a
// wildcard socket the reply to a check on a non-loopback candidate left
// from a loopback address, and the client learnt a peer-reflexive
// candidate instead of completing its check.
func TestReplyFromRequestAddress(t *testing.T) {
	e, _ := wildcardEngine(t)

	_, offer := recvClient(t)
	_, server, _ := vp8Session(t, e, offer)
	od := mustParse(t, offer)
	ad := mustParse(t, server.LocalDescription().SDP)
	clientUfrag := iceAttr(od, "ice-ufrag")
	serverUfrag, serverPwd := iceAttr(ad, "ice-ufrag"), iceAttr(ad, "ice-pwd")

	var families [2]int // non-loopback candidates checked: IPv4, IPv6
	for _, m := range ad.MediaDescriptions {
		for _, a := range m.Attributes {
			if a.Key != "candidate" {
				continue
			}
			c, err := ice.UnmarshalCandidate(a.Value)
			if err != nil {
				t.Fatalf("answer candidate %q: %v", a.Value, err)
			}
			if c.Type() != ice.CandidateTypeHost || c.NetworkType().IsTCP() {
				continue
			}
			to := netip.AddrPortFrom(netip.MustParseAddr(c.Address()), uint16(c.Port()))
			from := "127.0.0.1:0"
			if to.Addr().Is6() {
				from = "[::1]:0"
			}
			got := checkReplySource(t, from, to, serverUfrag+":"+clientUfrag, serverPwd)
			if got != to {
				t.Errorf("check from %s to candidate %s: reply came from %s", from, to, got)
			}
			if !to.Addr().IsLoopback() {
				families[map[bool]int{false: 0, true: 1}[to.Addr().Is6()]]++
			}
		}
	}
	if families[0]+families[1] == 0 {
		t.Skip("this host has no non-loopback address: every reply leaves from the address it was sent to")
	}
	t.Logf("non-loopback candidates checked: %d IPv4, %d IPv6", families[0], families[1])
}

// wildcardEngine returns an Engine with loopback on a wildcard socket
// (listen.webrtc_udp ":0", as the default config) and its port, closed at
// the end of the test.
func wildcardEngine(t *testing.T) (*Engine, uint16) {
	t.Helper()
	udp, err := net.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(udp.LocalAddr().(*net.UDPAddr).Port)
	e, err := New(Settings{UDP: udp, IncludeLoopback: true, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e, port
}

// iceAttr returns a session description's ICE attribute key, from the
// session or its first media section.
func iceAttr(d *sdp.SessionDescription, key string) string {
	if v, ok := d.Attribute(key); ok {
		return v
	}
	for _, m := range d.MediaDescriptions {
		if v, ok := m.Attribute(key); ok {
			return v
		}
	}
	return ""
}

// checkReplySource sends a connectivity check (a STUN Binding request
// with the session's credentials, as a controlling client's) from a socket
// bound to from to the candidate at to, and returns the source address of
// the success response. It retries for a few seconds, as ICE does.
func checkReplySource(t *testing.T, from string, to netip.AddrPort, username, pwd string) netip.AddrPort {
	t.Helper()
	conn, err := net.ListenPacket("udp", from)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	uc := conn.(*net.UDPConn)
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest,
		stun.NewUsername(username), ice.PriorityAttr(1<<24), ice.AttrControlling(1),
		stun.NewShortTermIntegrity(pwd), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	for range 10 {
		if _, err := uc.WriteToUDPAddrPort(req.Raw, to); err != nil {
			t.Fatalf("check to %s: %v", to, err)
		}
		_ = uc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, src, err := uc.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // timed out: send again
			}
			res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if res.Decode() == nil && res.TransactionID == req.TransactionID && res.Type == stun.BindingSuccess {
				return netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
			}
		}
	}
	t.Fatalf("check from %s to %s: no success response", uc.LocalAddr(), to)
	return netip.AddrPort{}
}

// BenchmarkLoopbackClientICE measures the time from setting the answer to
// ICE connected for a pion client that offers only loopback candidates,
// against a bridge on a wildcard address whose candidates are its
// non-loopback addresses (as in production). With replies from the wrong
// address (a wildcard socket) the client's checks to those candidates got
// answers from a loopback address, and it connected over a peer-reflexive
// pair after its nomination delay: about 200 ms, against 1 ms.
func BenchmarkLoopbackClientICE(b *testing.B) {
	iface := nonLoopbackInterface(b)
	udp, err := net.ListenPacket("udp", ":0")
	if err != nil {
		b.Fatal(err)
	}
	// IncludeLoopback so that the bridge accepts the client's loopback
	// candidates; Interfaces so that it offers none of its own.
	e, err := New(Settings{UDP: udp, IncludeLoopback: true, Interfaces: []string{iface}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Close() })
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return strings.HasPrefix(name, "lo") })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se))
	var took []time.Duration
	for b.Loop() {
		took = append(took, clientConnect(b, e, api, false))
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "ms-p50")
	b.ReportMetric(float64(took[len(took)*95/100].Microseconds())/1000, "ms-p95")
}

// clientConnect connects a client of api to a session of e and returns
// the time from setting the answer to ICE connected, or with dtls to the
// client's connected state (ICE and DTLS done).
func clientConnect(b *testing.B, e *Engine, api *webrtc.API, dtls bool) time.Duration {
	client, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	if _, err := client.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		b.Fatal(err)
	}
	offer, err := client.CreateOffer(nil)
	if err != nil {
		b.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(client)
	if err := client.SetLocalDescription(offer); err != nil {
		b.Fatal(err)
	}
	<-gathered
	server, err := e.NewPeerConnection()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	log := slog.New(slog.DiscardHandler)
	if err := e.SetRemoteOffer(server, client.LocalDescription().SDP, log); err != nil {
		b.Fatal(err)
	}
	if err := Answer(server, 5*time.Second); err != nil {
		b.Fatal(err)
	}
	connected := make(chan struct{})
	if dtls {
		client.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
			if s == webrtc.PeerConnectionStateConnected {
				close(connected)
			}
		})
	} else {
		client.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
			if s == webrtc.ICEConnectionStateConnected {
				close(connected)
			}
		})
	}
	start := time.Now()
	if err := client.SetRemoteDescription(*server.LocalDescription()); err != nil {
		b.Fatal(err)
	}
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		b.Fatal("did not connect within 10s")
	}
	return time.Since(start)
}

// nonLoopbackInterface returns the name of an interface that is up and
// has an address that is not loopback, or skips the test.
func nonLoopbackInterface(t testing.TB) string {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		if addrs, err := iface.Addrs(); err == nil && len(addrs) > 0 {
			return iface.Name
		}
	}
	t.Skip("this host has no non-loopback interface: a loopback client reaches only loopback candidates")
	return ""
}
