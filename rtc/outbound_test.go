package rtc

import (
	"net"
	"testing"
	"time"

	"github.com/pion/transport/v5/stdnet"
)

// TestOutboundCheckBudget: the sockets outbound agents gather on send
// their connectivity checks within the check budget, as the server socket
// does; other packets pass untouched.
func TestOutboundCheckBudget(t *testing.T) {
	sink, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	budget := newCheckBudget(10)
	n := outboundNet{Net: &stdnet.Net{}, budget: budget}
	c, err := n.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rtp := []byte{0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}
	for range 30 {
		for _, p := range [][]byte{bindingRequest("remote:local"), rtp} {
			if _, err := c.WriteTo(p, sink.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
	}
	checks, media := 0, 0
	buf := make([]byte, 1500)
	_ = sink.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	for {
		m, _, err := sink.ReadFrom(buf)
		if err != nil {
			break
		}
		if _, ok := checkUfrag(buf[:m]); ok {
			checks++
		} else {
			media++
		}
	}
	if checks != 10 || media != 30 || budget.dropped.Load() != 20 {
		t.Errorf("%d checks and %d media packets of 30 each arrived, %d dropped: want the burst of 10 checks and every media packet",
			checks, media, budget.dropped.Load())
	}
	if ifs, err := n.Interfaces(); err != nil || len(ifs) == 0 {
		t.Errorf("outbound agents see interfaces %v (%v), want the host's", ifs, err)
	}
}
