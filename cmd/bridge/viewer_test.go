package main

import (
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// TestInstantJoin: on a 4 s GOP source, a viewer joining mid-GOP starts
// with the cached IDR (with SPS/PPS) and the frames since, handed over at
// once (consecutive RTP timestamps one tick apart), instead of waiting
// for the source's next keyframe.
func TestInstantJoin(t *testing.T) {
	b := startBridge(t, nil)
	publish(t, "long-gop.flv", "rtmp://"+b.RTMPAddr().String()+"/live/long")
	waitStream(t, b, "live/long")
	time.Sleep(1500 * time.Millisecond) // mid-GOP: IDRs are at 0, 4 and 8 s

	v := watch(t, b, "live/long", nil)
	aus := v.waitFrames(t, 40, 10*time.Second)
	types := naluTypes(aus[0])
	if len(types) < 3 || types[0] != h264.NALUTypeSPS || types[1] != h264.NALUTypePPS {
		t.Fatalf("first frame NAL types %v, want SPS, PPS, IDR", types)
	}
	burst := 1
	for burst < len(aus) && aus[burst].ts-aus[burst-1].ts <= 1 {
		burst++
	}
	t.Logf("joined with the IDR and %d cached frames", burst-1)
	if burst < 10 {
		t.Errorf("only %d frames came from the cache: the viewer waited for the next keyframe instead of joining the current GOP", burst-1)
	}
}

// TestPublisherReconnect: an RTMP publisher drops and comes back within the
// route's grace; the viewer keeps its PeerConnection, and its RTP sequence
// numbers and timestamps go on without a jump back.
func TestPublisherReconnect(t *testing.T) {
	b := startBridge(t, nil)
	url := "rtmp://" + b.RTMPAddr().String() + "/live/re"
	_, stop := publish(t, "h264-aac.flv", url)
	waitStream(t, b, "live/re")
	v := watch(t, b, "live/re", nil)
	before := len(v.waitFrames(t, 60, 10*time.Second))

	stop()
	time.Sleep(time.Second)
	publish(t, "h264-aac.flv", url)
	aus := v.waitFrames(t, before+90, 20*time.Second)
	if n := b.sessions.Len(); n != 1 {
		t.Errorf("%d sessions after the reconnect, want the viewer's one", n)
	}
	for i := 1; i < len(aus); i++ {
		if d := int32(aus[i].ts - aus[i-1].ts); d < 0 {
			t.Fatalf("frame %d: RTP timestamp went back by %d across the reconnect", i, -d)
		}
	}
	// The new publisher's parameter sets come in front of its first IDR.
	for _, au := range aus[before:] {
		types := naluTypes(au)
		for i, nt := range types {
			if nt == h264.NALUTypeIDR {
				if i < 2 || types[0] != h264.NALUTypeSPS || types[1] != h264.NALUTypePPS {
					t.Fatalf("IDR after the reconnect without SPS/PPS in front: %v", types)
				}
				return
			}
		}
	}
	t.Fatal("no IDR after the reconnect")
}
