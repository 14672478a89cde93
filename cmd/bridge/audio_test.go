package main

import (
	"math"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/wishbridge/bridge/transcode/av"
)

// TestRTMPAACToWHEPOpus: an AAC source plays as Opus over WHEP: the tones
// survive (left 440 Hz, right 660 Hz) and the 1760 Hz beep at each second
// lines up with the video keyframe of the same second (frames 0, 30, 60...
// are the IDRs of the 30-frame GOP) on the receiver's clock, mapped through
// the RTCP sender reports as a browser does for lip sync.
func TestRTMPAACToWHEPOpus(t *testing.T) {
	if !av.Available() {
		t.Fatal("this test binary has no FFmpeg: build with cgo and install libavcodec-dev libavutil-dev libswresample-dev pkg-config")
	}
	b := startBridge(t, nil)
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/test")
	waitStream(t, b, "live/test")

	v := watch(t, b, "live/test", nil)
	v.waitFrames(t, 200, 20*time.Second)
	v.mu.Lock()
	audio := append([]audioPacket(nil), v.audio...)
	reports := append([]senderReport(nil), v.reports...)
	v.mu.Unlock()
	aus := v.frames()
	if len(audio) < 200 {
		t.Fatalf("got %d Opus packets in %d video frames, want ~50/s", len(audio), len(aus))
	}

	base := audio[0].ts
	left, right := decodeOpus(t, audio)

	onsets := beepOnsets(left)
	if len(onsets) < 3 {
		t.Fatalf("found %d 1760 Hz beeps in %.1f s of audio, want one per second", len(onsets), float64(len(left))/48000)
	}
	// Tones between beeps.
	from := onsets[0] + 4800 // 100 ms after a beep: past its 40 ms
	if got := dominant(left[from : from+24000]); math.Abs(got-440) > 5 {
		t.Errorf("left channel dominant frequency %.0f Hz, want 440", got)
	}
	if got := dominant(right[from : from+24000]); math.Abs(got-660) > 5 {
		t.Errorf("right channel dominant frequency %.0f Hz, want 660", got)
	}

	// A/V sync: map both onto the sender-report wall clock.
	audioSR, videoSR := lastReport(reports, "audio"), lastReport(reports, "video")
	if audioSR == nil || videoSR == nil {
		t.Fatalf("no RTCP sender reports for audio (%v) or video (%v)", audioSR != nil, videoSR != nil)
	}
	var idrTimes []float64
	for _, au := range aus {
		if len(au.nalus) > 2 && h264.NALUType(au.nalus[2][0]&0x1f) == h264.NALUTypeIDR {
			idrTimes = append(idrTimes, srTime(videoSR, au.ts, 90000))
		}
	}
	worst := 0.0
	for _, o := range onsets {
		at := srTime(audioSR, base+uint32(o), 48000)
		nearest := math.Inf(1)
		for _, v := range idrTimes {
			if math.Abs(at-v) < math.Abs(nearest) {
				nearest = at - v
			}
		}
		if math.Abs(nearest) > 0.5 {
			continue // a beep before the first or after the last IDR received
		}
		worst = max(worst, math.Abs(nearest))
		t.Logf("beep at %.3f s: %+.1f ms from its keyframe", at-idrTimes[0], nearest*1000)
	}
	if worst > 0.040 {
		t.Errorf("A/V offset up to %.1f ms, want within 40 ms", worst*1000)
	}
}

// srTime maps an RTP timestamp to seconds on the sender's wall clock.
func srTime(sr *senderReport, ts uint32, rate float64) float64 {
	secs := float64(sr.ntp>>32) + float64(sr.ntp&0xffffffff)/(1<<32)
	return secs + float64(int32(ts-sr.rtp))/rate
}

func lastReport(rs []senderReport, kind string) *senderReport {
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i].kind == kind {
			return &rs[i]
		}
	}
	return nil
}

// beepOnsets returns the sample positions where a 1760 Hz beep starts
// (0.5 ms resolution).
func beepOnsets(x []float32) []int {
	const win, hop = 96, 24
	var out []int
	in := false
	for i := 0; i+win <= len(x); i += hop {
		beep := goertzel(x[i:i+win], 1760) > 4*goertzel(x[i:i+win], 440)
		if beep && !in && (len(out) == 0 || i-out[len(out)-1] > 24000) {
			out = append(out, i+win/2)
		}
		in = beep
	}
	return out
}

// dominant returns the frequency (200-2000 Hz, 1 Hz steps) with the most
// power in x, sampled at 48 kHz.
func dominant(x []float32) float64 {
	best, bestP := 0.0, -1.0
	for f := 200.0; f <= 2000; f++ {
		if p := goertzel(x, f); p > bestP {
			best, bestP = f, p
		}
	}
	return best
}

// goertzel returns the power of frequency f in x (48 kHz).
func goertzel(x []float32, f float64) float64 {
	w := 2 * math.Pi * f / 48000
	c := 2 * math.Cos(w)
	var s1, s2 float64
	for _, v := range x {
		s0 := float64(v) + c*s1 - s2
		s2, s1 = s1, s0
	}
	return s1*s1 + s2*s2 - c*s1*s2
}
