package testkit

import (
	"encoding/binary"
	"math"
	"os/exec"
	"testing"
	"time"
)

// DecodeAudio decodes file's audio to 48 kHz stereo float32.
func DecodeAudio(t testing.TB, file string) (left, right []float32) {
	t.Helper()
	out, err := exec.Command(FFmpegBin(t, "ffmpeg"), "-v", "error", "-i", file, "-vn", "-f", "f32le", "-ac", "2", "-ar", "48000", "-").Output()
	if err != nil {
		t.Fatalf("decode %s: %v", file, err)
	}
	n := len(out) / 8
	left, right = make([]float32, n), make([]float32, n)
	for i := range n {
		left[i] = math.Float32frombits(binary.LittleEndian.Uint32(out[8*i:]))
		right[i] = math.Float32frombits(binary.LittleEndian.Uint32(out[8*i+4:]))
	}
	return left, right
}

// Goertzel returns the power of frequency f in x.
func Goertzel(x []float32, rate int, f float64) float64 {
	w := 2 * math.Pi * f / float64(rate)
	c := 2 * math.Cos(w)
	var s1, s2 float64
	for _, v := range x {
		s := float64(v) + c*s1 - s2
		s2, s1 = s1, s
	}
	return s1*s1 + s2*s2 - c*s1*s2
}

// CheckTones checks that from sample from on, for n samples, the left
// channel is 440 Hz and the right 660 Hz (the fixtures' tones).
func CheckTones(t testing.TB, left, right []float32, from, n int) {
	t.Helper()
	if from+n > len(left) {
		t.Fatalf("only %d samples decoded, want %d", len(left), from+n)
	}
	l, r := left[from:from+n], right[from:from+n]
	l440, l660 := Goertzel(l, 48000, 440), Goertzel(l, 48000, 660)
	r440, r660 := Goertzel(r, 48000, 440), Goertzel(r, 48000, 660)
	if l440 < 100*l660 || r660 < 100*r440 {
		t.Errorf("tones at %.2f s: left 440/660 Hz power %.3g/%.3g, right %.3g/%.3g; want 440 Hz left, 660 Hz right",
			float64(from)/48000, l440, l660, r440, r660)
	}
	if l440 < 1 {
		t.Errorf("left channel at %.2f s is nearly silent (440 Hz power %.3g)", float64(from)/48000, l440)
	}
}

// CheckSync checks A/V sync at the fixtures' beeps: the left channel has a
// 1760 Hz beep starting with frames 0, 30, 60, ... The first video frame
// of the recording must be a keyframe at a whole second of the fixture
// (every keyframe is), so beep k is due k s after the video starts.
func CheckSync(t testing.TB, p Probe, left []float32, beeps int) {
	t.Helper()
	v, a := p.Start(t, "video"), p.Start(t, "audio")
	const rate, win, hop = 48000, 480, 48 // 10 ms windows, 1 ms steps
	for k := 1; k <= beeps; k++ {
		due := v + time.Duration(k)*time.Second
		// Search 300 ms either side of due for the beep's onset: the first
		// window whose 1760 Hz power reaches half the strongest one's.
		from := int((due - a - 300*time.Millisecond).Seconds() * rate)
		to := int((due - a + 300*time.Millisecond).Seconds() * rate)
		if from < 0 || to+win > len(left) {
			t.Fatalf("beep %d due at %v is outside the decoded audio (%d samples from %v)", k, due, len(left), a)
		}
		var powers []float64
		peak := 0.0
		for i := from; i < to; i += hop {
			pw := Goertzel(left[i:i+win], rate, 1760)
			powers = append(powers, pw)
			peak = max(peak, pw)
		}
		onset := -1
		for i, pw := range powers {
			if pw >= peak/2 {
				onset = from + i*hop
				break
			}
		}
		// The window reaches half power when about half of it holds the beep.
		got := a + time.Duration(float64(onset+win/2)/rate*float64(time.Second))
		if d := got - due; d < -40*time.Millisecond || d > 40*time.Millisecond {
			t.Errorf("beep %d at %v, its frame at %v: A/V offset %v, want within 40 ms", k, got.Round(time.Millisecond), due, d.Round(time.Millisecond))
		} else {
			t.Logf("beep %d: A/V offset %v", k, d.Round(time.Millisecond))
		}
	}
}
