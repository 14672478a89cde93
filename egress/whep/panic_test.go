package whep

import (
	"testing"

	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/media"
)

// TestWHEPPanicEndsSession (issue 12, panic boundary): a panic on one of a
// viewer session's goroutines (here the publisher's keyframe callback,
// which runs on the goroutine reading the viewer's RTCP) ends that session
// alone, counted under "whep session"; the bridge and the stream go on and
// the next viewer gets its picture. (It used to end the whole bridge.)
func TestWHEPPanicEndsSession(t *testing.T) {
	b := newBench(t)
	video := &media.Track{Codec: media.H264{SPS: testSPS, PPS: testPPS}}
	pub := b.publish(t, "live/cam", "encoder", video)
	defer pub.Close()
	pub.OnKeyframeRequest(func(int) { panic("a bug in the publisher's keyframe request") })
	for n := range 5 {
		pub.Write(frame(video, n, n == 0, testSPS))
	}
	before := sessionPanics()

	v := watch(t, b, "live/cam")
	v.wait(t, 5)
	v.pli(t, <-v.ssrc)
	b.waitLog(t, "viewer session ended", "the viewer's session did not end after the panic", "a panic ended the session")
	if got := sessionPanics() - before; got != 1 {
		t.Errorf("%d panics counted under whep session, expected 1", got)
	}

	pub.OnKeyframeRequest(nil)
	next := watch(t, b, "live/cam")
	for n := 5; n < 10; n++ {
		pub.Write(frame(video, n, n == 5, testSPS))
	}
	if aus := next.wait(t, 5); !aus[0].key() {
		t.Fatalf("next viewer's first frame has NAL unit types %v, expected a keyframe", aus[0].types)
	}
}

func sessionPanics() uint64 {
	for _, c := range panics.Counts() {
		if c.Component == "whep session" {
			return c.N
		}
	}
	return 0
}
