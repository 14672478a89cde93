package rtc

import (
	"log/slog"
	"sync"
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
// UDP mux and the socket's batched sends, until the last packet has left,
// to 4 pion viewers on loopback in turn (as in a fan-out, neighbouring
// packets go to different viewers, so no UDP GSO). The flushers run beside
// the sender, so this is the time per packet of the whole pipeline, not its
// CPU. What the kernel spends delivering to the viewers' sockets on
// loopback is in it too.
func BenchmarkOutTrackSend(b *testing.B) {
	log := slog.New(slog.DiscardHandler)
	e := testEngine(b, log)
	pub, err := media.NewRegistry(log).Publish("bench", "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pub.Close)
	const viewers = 4
	tracks := make([]*OutTrack, viewers)
	for i := range tracks {
		tracks[i] = benchViewer(b, e, pub.Stream)
	}
	u := &media.Unit{RTP: []*rtp.Packet{{
		Header:  rtp.Header{Version: 2, Marker: true, Timestamp: 0},
		Payload: make([]byte, 1200-12),
	}}}
	b.SetBytes(1200)
	b.ReportAllocs()
	sent0 := e.UDPStats().Sent
	b.ResetTimer()
	for i := range b.N {
		if err := tracks[i%viewers].Send(u, false); err != nil {
			b.Fatal(err)
		}
	}
	// Send returns once a packet is queued for the socket's batches
	// (internal/udpbatch); the time counts until the last one left.
	for e.UDPStats().Sent-sent0 < uint64(b.N) {
		time.Sleep(50 * time.Microsecond)
	}
}

// benchViewer connects a pion viewer that drains what it gets to a new
// sending peer of e, and returns the OutTrack that sends it H.264.
func benchViewer(b *testing.B, e *Engine, st *media.Stream) *OutTrack {
	b.Helper()
	_, ot := testViewer(b, e, st, false, func(tr *webrtc.TrackRemote) {
		buf := make([]byte, 1500)
		for {
			if _, _, err := tr.Read(buf); err != nil {
				return
			}
		}
	})
	return ot
}

// testViewer connects a pion viewer without interceptors (so allocations
// counted are the sender's and the receiver's SRTP) to a new sending peer
// of e, hands the video track it receives to onTrack, and returns the
// viewer and the OutTrack that sends it H.264. noReplay turns the viewer's
// SRTP replay protection off, so that it reads resent packets.
func testViewer(tb testing.TB, e *Engine, st *media.Stream, noReplay bool, onTrack func(*webrtc.TrackRemote)) (*webrtc.PeerConnection, *OutTrack) {
	tb.Helper()
	server, err := e.NewSenderPeerConnection()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = server.Close() })
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		tb.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.DisableSRTPReplayProtection(noReplay)
	client, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se), webrtc.WithInterceptorRegistry(&interceptor.Registry{})).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = client.Close() })
	if _, err := client.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		tb.Fatal(err)
	}
	client.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { onTrack(tr) })
	connected := make(chan struct{})
	var once sync.Once
	server.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(connected) })
		}
	})
	offer, err := client.CreateOffer(nil)
	if err != nil {
		tb.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(client)
	if err := client.SetLocalDescription(offer); err != nil {
		tb.Fatal(err)
	}
	<-gathered
	if err := server.SetRemoteDescription(*client.LocalDescription()); err != nil {
		tb.Fatal(err)
	}
	local, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}, "video", "bench")
	if err != nil {
		tb.Fatal(err)
	}
	sender, err := server.AddTrack(local)
	if err != nil {
		tb.Fatal(err)
	}
	if err := Answer(server, 5*time.Second); err != nil {
		tb.Fatal(err)
	}
	if err := client.SetRemoteDescription(*server.LocalDescription()); err != nil {
		tb.Fatal(err)
	}
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		tb.Fatal("not connected within 10 s")
	}
	return client, NewOutTrack(server, st, local, sender)
}
