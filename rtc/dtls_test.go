package rtc

import (
	"log/slog"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// BenchmarkDTLSFirstFlightLost measures the time from setting the answer
// to connected (ICE and DTLS done) for a loopback pion client, with no
// loss and with the first DTLS packet the client receives (the bridge's
// ClientHello: the bridge answers as the DTLS client) dropped, so that the
// handshake waits for the bridge's first retransmission
// (dtlsRetransmitInterval; pion's default 1 s).
func BenchmarkDTLSFirstFlightLost(b *testing.B) {
	for _, drop := range []bool{false, true} {
		name := "lossless"
		if drop {
			name = "first-DTLS-packet-lost"
		}
		b.Run(name, func(b *testing.B) {
			udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			e, err := New(Settings{UDP: udp, IncludeLoopback: true, Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = e.Close() })
			var took []time.Duration
			for b.Loop() {
				took = append(took, dtlsConnect(b, e, drop))
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "ms-p50")
			b.ReportMetric(float64(took[len(took)*95/100].Microseconds())/1000, "ms-p95")
		})
	}
}

// dtlsConnect connects a loopback client to a session of e, dropping the
// first DTLS packet the client receives if drop, and returns the time
// from setting the answer to the client's connected state.
func dtlsConnect(b *testing.B, e *Engine, drop bool) time.Duration {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	lossy := &dropFirstDTLS{PacketConn: pc}
	lossy.dropped.Store(!drop)
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	mux := webrtc.NewICEUDPMux(nil, lossy)
	defer mux.Close()
	se.SetICEUDPMux(mux)
	took := clientConnect(b, e, webrtc.NewAPI(webrtc.WithSettingEngine(se)), true)
	if !lossy.dropped.Load() {
		b.Fatal("no DTLS packet reached the client")
	}
	return took
}

// dropFirstDTLS is a socket that loses the first DTLS packet it receives
// (first byte 20-63, RFC 7983) while dropped is false.
type dropFirstDTLS struct {
	net.PacketConn
	dropped atomic.Bool
}

func (c *dropFirstDTLS) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err == nil && n > 0 && p[0] >= 20 && p[0] <= 63 && c.dropped.CompareAndSwap(false, true) {
			continue
		}
		return n, addr, err
	}
}
