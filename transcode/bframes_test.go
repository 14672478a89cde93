package transcode

import (
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/media"
)

func TestSliceTypeFixture(t *testing.T) {
	v := readFLVVideo(t, bframesFLV)
	counts := map[int]int{}
	for _, u := range v.units {
		for _, n := range u.NALUs {
			if st := SliceType(n); st >= 0 {
				counts[st]++
			}
		}
	}
	// The fixture's README: 10 I, 114 P, 176 B, one slice each.
	if counts[SliceI] != 10 || counts[SliceP] != 114 || counts[SliceB] != 176 || len(counts) != 3 {
		t.Errorf("slice types %v", counts)
	}
	for _, n := range [][]byte{nil, {0x65}, {0x67, 0x42}, {0x41, 0x00, 0x00, 0x00}} {
		if st := SliceType(n); st != -1 {
			t.Errorf("SliceType(%x) = %d", n, st)
		}
	}
}

// stripSPS returns copies of units without their parameter sets, on a
// track that declares none: only timestamps and slices are left to go by.
func stripSPS(units []*media.Unit) (*media.Track, []*media.Unit) {
	tr := &media.Track{Codec: media.H264{}}
	out := make([]*media.Unit, len(units))
	for i, u := range units {
		c := *u
		c.Track = tr
		c.NALUs = nil
		for _, n := range u.NALUs {
			if !isParamSet(n) {
				c.NALUs = append(c.NALUs, n)
			}
		}
		out[i] = &c
	}
	return tr, out
}

func TestBFrameDetector(t *testing.T) {
	bf, plain := readFLVVideo(t, bframesFLV), readFLVVideo(t, plainFLV)
	run := func(name string, tr *media.Track, units []*media.Unit, wantAt int, wantReason string) {
		t.Helper()
		d := NewBFrameDetector(tr)
		at := -1
		for i, u := range units {
			if d.Observe(u) {
				at = i
				break
			}
		}
		if at != wantAt || d.HasBFrames() != (wantAt >= 0) || !strings.Contains(d.Reason(), wantReason) {
			t.Errorf("%s: detected at unit %d (%q), want %d (%q)", name, at, d.Reason(), wantAt, wantReason)
		}
	}
	tr, units := bf.track()
	// x264's SPS says max_num_reorder_frames=2: known before any unit.
	run("FLV with B-frames", tr, units, 0, "max_num_reorder_frames=2")
	ptr, punits := plain.track()
	run("FLV without B-frames", ptr, punits, -1, "")

	// Without the SPS: the third unit (a B-frame shown before the P-frame
	// decoded just before it) goes back in time.
	_, units = stripSPS(units)
	trNoSPS := &media.Track{Codec: media.H264{}}
	run("timestamps", trNoSPS, units, 2, "timestamps reorder")
	// RTP source: DTS is PTS.
	rtpUnits := make([]*media.Unit, len(units))
	for i, u := range units {
		c := *u
		c.DTS = c.PTS
		rtpUnits[i] = &c
	}
	run("RTP timestamps", trNoSPS, rtpUnits, 2, "timestamps reorder")
	// Timestamps in decoding order (a broken muxer): the first B slice.
	flat := make([]*media.Unit, len(units))
	for i, u := range units {
		c := *u
		c.PTS = c.DTS
		flat[i] = &c
	}
	run("B slices", trNoSPS, flat, 2, "B slices")
	_, plainUnits := plain.track()
	_, plainUnits = stripSPS(plainUnits)
	run("no SPS, no B-frames", trNoSPS, plainUnits, -1, "")

	// A discontinuity backwards is not reordering.
	jump := []*media.Unit{
		{PTS: 10 * time.Second, DTS: 10 * time.Second, NALUs: [][]byte{{0x41, 0x9a}}},
		{PTS: 2 * time.Second, DTS: 2 * time.Second, NALUs: [][]byte{{0x41, 0x9a}}},
	}
	run("jump", trNoSPS, jump, -1, "")

	// pic_order_cnt_type 2 (the plain fixture's SPS) rules B slices out.
	d := NewBFrameDetector(&media.Track{Codec: media.H264{SPS: plain.sps}})
	for _, u := range flat {
		if d.Observe(u) {
			t.Fatalf("B slices counted under pic_order_cnt_type 2")
		}
	}
}

func TestDetectBFrames(t *testing.T) {
	for _, c := range []struct {
		path string
		want bool
	}{{bframesFLV, true}, {plainFLV, false}} {
		v := readFLVVideo(t, c.path)
		reg := media.NewRegistry(nil)
		s, err := reg.Publish("live/detect", "test")
		if err != nil {
			t.Fatal(err)
		}
		_, units := v.track()
		// An SPS-less track declaration: the cached GOP has to tell.
		if err := s.SetTracks(&media.Track{Codec: media.H264{}}); err != nil {
			t.Fatal(err)
		}
		for _, u := range units[:45] {
			u.Track = s.Tracks()[0]
			s.Write(u)
		}
		has, reason := DetectBFrames(s.Stream, 0)
		if has != c.want {
			t.Errorf("%s: %v (%s)", c.path, has, reason)
		}
		t.Logf("%s: %v (%s)", c.path, has, reason)
		if has, _ := DetectBFrames(s.Stream, 5); has {
			t.Error("no such track: detected")
		}
		s.Close()
	}
}
