package rtc

import (
	"log/slog"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/media"
)

// BenchmarkOutTrackSend is the fan-out's cost per viewer per packet: one
// 1,200-byte H.264 RTP packet through OutTrack (the viewer's rewrite and
// history), pion's track, SRTP (AES-GCM, as browsers negotiate), the ICE
// UDP mux and the sendto to a pion viewer on loopback. What the kernel
// spends delivering to the viewer's socket on loopback is in it too.
func BenchmarkOutTrackSend(b *testing.B) {
	log := slog.New(slog.DiscardHandler)
	e := testEngine(b, log)
	server, err := e.NewSenderPeerConnection()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = server.Close() })
	// A receiver without interceptors, so allocations counted are the
	// sender's (and the receiver's SRTP).
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		b.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	client, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se), webrtc.WithInterceptorRegistry(&interceptor.Registry{})).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = client.Close() })
	if _, err := client.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		b.Fatal(err)
	}
	client.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		buf := make([]byte, 1500)
		for {
			if _, _, err := tr.Read(buf); err != nil {
				return
			}
		}
	})
	connected := make(chan struct{})
	server.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			close(connected)
		}
	})
	offer, err := client.CreateOffer(nil)
	if err != nil {
		b.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(client)
	if err := client.SetLocalDescription(offer); err != nil {
		b.Fatal(err)
	}
	<-gathered
	if err := server.SetRemoteDescription(*client.LocalDescription()); err != nil {
		b.Fatal(err)
	}
	local, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}, "video", "bench")
	if err != nil {
		b.Fatal(err)
	}
	sender, err := server.AddTrack(local)
	if err != nil {
		b.Fatal(err)
	}
	if err := Answer(server, 5*time.Second); err != nil {
		b.Fatal(err)
	}
	if err := client.SetRemoteDescription(*server.LocalDescription()); err != nil {
		b.Fatal(err)
	}
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		b.Fatal("not connected within 10 s")
	}

	pub, err := media.NewRegistry(log).Publish("bench", "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pub.Close)
	ot := NewOutTrack(server, pub.Stream, local, sender)
	u := &media.Unit{RTP: []*rtp.Packet{{
		Header:  rtp.Header{Version: 2, Marker: true, Timestamp: 0},
		Payload: make([]byte, 1200-12),
	}}}
	b.SetBytes(1200)
	b.ReportAllocs()
	for b.Loop() {
		if err := ot.Send(u, false); err != nil {
			b.Fatal(err)
		}
	}
}
