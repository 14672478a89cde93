package whep

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/media"
)

// opusUnit is an Opus packet (one 20 ms silent frame) at n*20 ms.
func opusUnit(tr *media.Track, n int) *media.Unit {
	pts := time.Duration(n) * 20 * time.Millisecond
	return &media.Unit{Track: tr, PTS: pts, DTS: pts, Key: true, Data: []byte{0xf8, 0xff, 0xfe}}
}

// TestWHEPICEAfterRepublishWithFewerTracks (issue 12, defect 1): a viewer
// is answered for a stream with H.264 and Opus, holds back its ICE, and
// the stream is republished within its grace period with video only; when
// its ICE and DTLS complete, the viewer's session ends saying why (its
// audio track is gone), the bridge goes on, and a new viewer of the
// republished stream gets its picture. (The session used to make the hub
// processor of the audio track that was gone: an index out of range on
// the session's goroutine, which took the whole bridge down.)
func TestWHEPICEAfterRepublishWithFewerTracks(t *testing.T) {
	b := newBench(t)
	b.reg.SetGrace(func(string) time.Duration { return time.Minute })
	video, audio := &media.Track{Codec: media.H264{SPS: testSPS, PPS: testPPS}}, &media.Track{Codec: media.Opus{Channels: 2}}
	pub := b.publish(t, "live/cam", "encoder 1", video, audio)
	defer func() { pub.Close() }()
	for n := range 10 {
		pub.Write(frame(video, n, n == 0, testSPS))
		pub.Write(opusUnit(audio, n))
	}

	// The answer says H.264 and Opus; the viewer keeps it for now.
	held, answer := offerOnly(t, b, "live/cam", webrtc.RTPCodecTypeAudio)
	if !strings.Contains(answer.SDP, "opus") || !strings.Contains(answer.SDP, "H264") {
		t.Fatalf("answer does not send both tracks:\n%s", answer.SDP)
	}
	ended := make(chan struct{})
	var endOnce sync.Once
	held.pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateClosed || st == webrtc.PeerConnectionStateFailed {
			endOnce.Do(func() { close(ended) })
		}
	})

	// The encoder restarts without audio, within the grace period.
	pub.Close()
	video2 := &media.Track{Codec: media.H264{SPS: testSPS, PPS: testPPS}}
	pub = b.publish(t, "live/cam", "encoder 2", video2)
	for n := 100; n < 110; n++ {
		pub.Write(frame(video2, n, n == 100, testSPS))
	}

	// Now the held viewer's ICE and DTLS complete.
	if err := held.pc.SetRemoteDescription(answer); err != nil {
		t.Fatal(err)
	}
	b.waitLog(t, "viewer session ended", "the held viewer's session did not end",
		"viewer cannot continue", "republished with other tracks (H264)")
	select {
	case <-ended:
	case <-time.After(15 * time.Second):
		t.Errorf("the held viewer's connection is still %s", held.pc.ConnectionState())
	}

	// The bridge is still there: a new viewer gets the new GOP.
	v := watch(t, b, "live/cam")
	if got := numbers(v.wait(t, 10)); got[0] != 100 || got[9] != 109 {
		t.Fatalf("new viewer got frames %v, expected 100..109", got)
	}
}
