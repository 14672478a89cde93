package av

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
)

func TestMain(m *testing.M) {
	// Corrupt-packet tests make FFmpeg log errors; keep the output readable.
	SetLogLevel(LogQuiet)
	os.Exit(m.Run())
}

func needFFmpeg(t testing.TB) {
	t.Helper()
	if !Available() {
		t.Skip("built without FFmpeg")
	}
}

const amp = 0.5

// signal returns n samples per channel starting at absolute sample index
// start: silence before silentUntil, then channel c plays freqs[c].
func signal(rate int, freqs []float64, start, n, silentUntil int) []float32 {
	ch := len(freqs)
	pcm := make([]float32, n*ch)
	for i := range n {
		abs := start + i
		if abs < silentUntil {
			continue
		}
		t := float64(abs-silentUntil) / float64(rate)
		for c, f := range freqs {
			pcm[i*ch+c] = float32(amp * math.Sin(2*math.Pi*f*t))
		}
	}
	return pcm
}

// feed encodes n samples of signal starting at absolute index start, in
// chunks of chunk samples, with PTS = base + absolute index.
func feed(t testing.TB, e *Encoder, rate int, freqs []float64, base int64, start, n, silentUntil, chunk int) []Packet {
	t.Helper()
	var out []Packet
	for off := 0; off < n; off += chunk {
		k := min(chunk, n-off)
		pkts, err := e.Encode(Frame{
			PCM:        signal(rate, freqs, start+off, k, silentUntil),
			Samples:    k,
			PTS:        base + int64(start+off),
			SampleRate: rate,
			Channels:   len(freqs),
		})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pkts...)
	}
	return out
}

// render decodes pkts and lays the decoded samples out by PTS: result[c][i]
// is channel c at output time origin+i.
func render(t testing.TB, codec string, e *Encoder, pkts []Packet, origin int64, length int) (chans [][]float32, total int) {
	t.Helper()
	d, err := NewDecoder(codec, e.Extradata(), e.SampleRate(), e.Channels())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	chans = make([][]float32, e.Channels())
	for c := range chans {
		chans[c] = make([]float32, length)
	}
	for _, p := range pkts {
		frames, err := d.Decode(p.Data, p.PTS)
		if err != nil {
			t.Fatalf("decode packet at %d: %v", p.PTS, err)
		}
		for _, f := range frames {
			if f.SampleRate != e.SampleRate() || f.Channels != e.Channels() {
				t.Fatalf("decoded %d Hz %d ch, want %d Hz %d ch", f.SampleRate, f.Channels, e.SampleRate(), e.Channels())
			}
			total += f.Samples
			for i := range f.Samples {
				idx := f.PTS + int64(i) - origin
				if idx < 0 || idx >= int64(length) {
					continue
				}
				for c := range f.Channels {
					chans[c][idx] = f.PCM[i*f.Channels+c]
				}
			}
		}
	}
	return chans, total
}

func goertzel(x []float32, rate int, f float64) float64 {
	w := 2 * math.Pi * f / float64(rate)
	coeff := 2 * math.Cos(w)
	var s1, s2 float64
	for _, v := range x {
		s0 := float64(v) + coeff*s1 - s2
		s2, s1 = s1, s0
	}
	return s1*s1 + s2*s2 - coeff*s1*s2
}

// dominant returns the strongest frequency in x between 100 Hz and 2 kHz.
func dominant(x []float32, rate int) float64 {
	best, bestF := -1.0, 0.0
	for f := 100.0; f <= 2000; f += 2 {
		if p := goertzel(x, rate, f); p > best {
			best, bestF = p, f
		}
	}
	lo := bestF - 2
	for f := lo; f <= lo+4; f += 0.25 {
		if p := goertzel(x, rate, f); p > best {
			best, bestF = p, f
		}
	}
	return bestF
}

func rms(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return math.Sqrt(s / float64(max(len(x), 1)))
}

// onset returns the first index at or after from where |x| exceeds half the
// tone amplitude, or -1.
func onset(x []float32, from int) int {
	for i := from; i < len(x); i++ {
		if math.Abs(float64(x[i])) > amp/2 {
			return i
		}
	}
	return -1
}

func checkPacketTimeline(t *testing.T, e *Encoder, pkts []Packet, firstPTS int64) {
	t.Helper()
	if len(pkts) == 0 {
		t.Fatal("no packets")
	}
	if want := firstPTS - int64(e.Delay()); pkts[0].PTS != want {
		t.Errorf("first packet PTS %d, want first input PTS %d - delay %d = %d", pkts[0].PTS, firstPTS, e.Delay(), want)
	}
	for i := 1; i < len(pkts); i++ {
		if d := pkts[i].PTS - pkts[i-1].PTS; d != int64(e.FrameSize()) {
			t.Fatalf("packet %d: PTS %d follows %d (step %d, want %d)", i, pkts[i].PTS, pkts[i-1].PTS, d, e.FrameSize())
		}
	}
	for i, p := range pkts {
		if len(p.Data) == 0 {
			t.Fatalf("packet %d is empty", i)
		}
		if i < len(pkts)-1 && p.Duration != e.FrameSize() {
			t.Fatalf("packet %d: duration %d, want %d", i, p.Duration, e.FrameSize())
		}
	}
}

func TestRoundTrip(t *testing.T) {
	needFFmpeg(t)
	for _, tc := range []struct {
		name      string
		codec     string
		inRate    int
		freqs     []float64
		outRate   int
		outCh     int
		frameSize int
	}{
		{"aac 48k stereo", "aac", 48000, []float64{440, 660}, 48000, 2, 1024},
		{"aac 44.1k mono", "aac", 44100, []float64{440}, 44100, 1, 1024},
		{"opus 48k stereo", "opus", 48000, []float64{440, 660}, 48000, 2, 960},
		{"opus from 44.1k mono", "opus", 44100, []float64{440}, 48000, 1, 960},
		{"opus from 44.1k stereo", "opus", 44100, []float64{440, 660}, 48000, 2, 960},
		{"aac 48k from 44.1k stereo", "aac", 44100, []float64{440, 660}, 48000, 2, 1024},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEncoder(tc.codec, tc.outRate, tc.outCh, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			if e.FrameSize() != tc.frameSize || e.SampleRate() != tc.outRate || e.Channels() != tc.outCh {
				t.Fatalf("frame size %d rate %d channels %d, want %d %d %d",
					e.FrameSize(), e.SampleRate(), e.Channels(), tc.frameSize, tc.outRate, tc.outCh)
			}
			if e.Delay() <= 0 || e.Delay() > e.FrameSize() {
				t.Fatalf("delay %d", e.Delay())
			}
			// 2 s: 0.25 s of silence, then the tone. PTS starts at an
			// arbitrary point.
			base := int64(7 * tc.inRate)
			n, silent := 2*tc.inRate, tc.inRate/4
			pkts := feed(t, e, tc.inRate, tc.freqs, base, 0, n, silent, 1000)
			tail, err := e.Flush()
			if err != nil {
				t.Fatal(err)
			}
			pkts = append(pkts, tail...)
			outBase := rescale(base, tc.inRate, tc.outRate)
			checkPacketTimeline(t, e, pkts, outBase)

			outN := int(rescale(int64(n), tc.inRate, tc.outRate))
			chans, total := render(t, tc.codec, e, pkts, outBase, outN)
			if lo, hi := outN-e.FrameSize(), outN+e.Delay()+e.FrameSize(); total < lo || total > hi {
				t.Errorf("decoded %d samples, want %d..%d (input %d)", total, lo, hi, outN)
			}
			wantOnset := int(rescale(int64(silent), tc.inRate, tc.outRate))
			for c, ch := range chans {
				f := dominant(ch[tc.outRate/2:tc.outRate/2+tc.outRate/5], tc.outRate)
				want := tc.freqs[min(c, len(tc.freqs)-1)]
				if math.Abs(f-want) > 5 {
					t.Errorf("channel %d: dominant %.2f Hz, want %.0f", c, f, want)
				}
				if r := rms(ch[:wantOnset-tc.outRate/100]); r > 0.01 {
					t.Errorf("channel %d: rms %.4f in the leading silence", c, r)
				}
				if got := onset(ch, 0); got < wantOnset-tc.outRate/500 || got > wantOnset+tc.outRate/500 {
					t.Errorf("channel %d: tone starts at sample %d, want %d (±2 ms)", c, got, wantOnset)
				}
			}
		})
	}
}

func TestExtradata(t *testing.T) {
	needFFmpeg(t)
	e, err := NewEncoder("aac", 48000, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	// AAC-LC (2), 48 kHz (index 3), 2 channels; FFmpeg appends an explicit
	// "no SBR" sync extension, which readers skip.
	var asc mpeg4audio.AudioSpecificConfig
	if err := asc.Unmarshal(e.Extradata()); err != nil {
		t.Fatalf("AAC extradata %x: %v", e.Extradata(), err)
	}
	if asc.Type != mpeg4audio.ObjectTypeAACLC || asc.SampleRate != 48000 || asc.ChannelCount != 2 ||
		!bytes.HasPrefix(e.Extradata(), []byte{0x11, 0x90}) {
		t.Errorf("AAC extradata %x: %+v", e.Extradata(), asc)
	}
	o, err := NewEncoder("opus", 0, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	x := o.Extradata()
	if len(x) < 19 || string(x[:8]) != "OpusHead" || x[9] != 2 {
		t.Fatalf("Opus extradata %x", x)
	}
	if preSkip := int(binary.LittleEndian.Uint16(x[10:])); preSkip != o.Delay() {
		t.Errorf("OpusHead pre-skip %d, Delay %d", preSkip, o.Delay())
	}
	if o.SampleRate() != 48000 || o.FrameSize() != 960 {
		t.Errorf("opus rate %d frame %d", o.SampleRate(), o.FrameSize())
	}
}

// TestGap feeds 1 s of tone, skips PTS, then feeds 1 s more: the second
// tone must start where its PTS says, and nothing may play in the gap.
func TestGap(t *testing.T) {
	needFFmpeg(t)
	for _, codec := range []string{"aac", "opus"} {
		for _, gapMs := range []int{60, 500, 3000} { // filled with silence; restarted timeline twice
			t.Run(fmt.Sprintf("%s/%dms", codec, gapMs), func(t *testing.T) {
				const rate = 48000
				e, err := NewEncoder(codec, rate, 2, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer e.Close()
				freqs := []float64{440, 660}
				gap := gapMs * rate / 1000
				pkts := feed(t, e, rate, freqs, 0, 0, rate, 0, 960)
				// Second part: absolute index rate+gap onward, tone
				// starting afresh at its first sample.
				second := feed(t, e, rate, freqs, 0, rate+gap, rate, rate+gap, 960)
				tail, err := e.Flush()
				if err != nil {
					t.Fatal(err)
				}
				second = append(second, tail...)
				all := append(pkts, second...)
				for i := 1; i < len(all); i++ {
					if all[i].PTS <= all[i-1].PTS {
						t.Fatalf("packet %d: PTS %d after %d", i, all[i].PTS, all[i-1].PTS)
					}
				}
				gapEnd := int64(rate + gap)
				if restarted := e.Restarts() == 1; restarted != (gapMs > maxGapFillMs) {
					t.Errorf("%d restarts after a %d ms gap (fill up to %d ms)", e.Restarts(), gapMs, maxGapFillMs)
				}
				if gapMs > maxGapFillMs {
					// Restarted: packets carrying post-gap audio start at
					// the gap end exactly; none fall inside the gap.
					var firstNew int64 = -1
					for _, p := range all {
						if p.PTS > int64(rate) && p.PTS < gapEnd {
							t.Errorf("packet at %d inside the gap %d..%d", p.PTS, rate, gapEnd)
						}
						if firstNew < 0 && p.PTS >= gapEnd {
							firstNew = p.PTS
						}
					}
					if firstNew != gapEnd {
						t.Errorf("first packet after the gap at %d, want %d", firstNew, gapEnd)
					}
				} else {
					checkPacketTimeline(t, e, all, 0)
				}
				length := rate + gap + rate
				chans, _ := render(t, codec, e, all, 0, length)
				for c, ch := range chans {
					if r := rms(ch[rate+rate/50 : rate+gap-rate/50]); r > 0.01 {
						t.Errorf("channel %d: rms %.4f inside the gap", c, r)
					}
					if got := onset(ch, rate+rate/50); got < int(gapEnd)-rate/500 || got > int(gapEnd)+rate/500 {
						t.Errorf("channel %d: second tone starts at %d, want %d (±2 ms)", c, got, gapEnd)
					}
					if f := dominant(ch[int(gapEnd)+rate/4:int(gapEnd)+rate/4+rate/5], rate); math.Abs(f-freqs[c]) > 5 {
						t.Errorf("channel %d: after the gap dominant %.2f Hz, want %.0f", c, f, freqs[c])
					}
				}
			})
		}
	}
}

// TestJitterAndOverlap: PTS jitter below the tolerance does not move the
// output; an overlapping frame is trimmed so later audio keeps its place.
func TestJitterAndOverlap(t *testing.T) {
	needFFmpeg(t)
	const rate = 48000
	e, err := NewEncoder("opus", rate, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var pkts []Packet
	jitter := []int64{0, 100, -150, 200, -50}
	for i := range 50 {
		off := i * 960
		p, err := e.Encode(Frame{
			PCM: signal(rate, []float64{440}, off, 960, 0), Samples: 960,
			PTS: int64(off) + jitter[i%len(jitter)], SampleRate: rate, Channels: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, p...)
	}
	// Resend the last 0.1 s plus 0.1 s of new audio: the repeated part
	// must be dropped.
	p, err := e.Encode(Frame{
		PCM: signal(rate, []float64{440}, 50*960-4800, 9600, 0), Samples: 9600,
		PTS: 50*960 - 4800, SampleRate: rate, Channels: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	pkts = append(pkts, p...)
	// A frame entirely in the past is dropped.
	if p, err := e.Encode(Frame{PCM: make([]float32, 960), Samples: 960, PTS: 50 * 960, SampleRate: rate, Channels: 1}); err != nil || len(p) != 0 {
		t.Fatalf("past frame: %d packets, %v", len(p), err)
	}
	tail, err := e.Flush()
	if err != nil {
		t.Fatal(err)
	}
	pkts = append(pkts, tail...)
	checkPacketTimeline(t, e, pkts, 0)
	if want := (50*960+4800+e.Delay())/960 + 1; len(pkts) != want {
		t.Errorf("%d packets, want %d", len(pkts), want)
	}
}

func TestFormatChange(t *testing.T) {
	needFFmpeg(t)
	e, err := NewEncoder("aac", 48000, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	pkts := feed(t, e, 48000, []float64{440, 660}, 0, 0, 48000, 0, 1024)
	// The source switches to 44.1 kHz mono, continuing in time.
	pkts = append(pkts, feed(t, e, 44100, []float64{440}, 0, 44100, 44100, 0, 1024)...)
	tail, err := e.Flush()
	if err != nil {
		t.Fatal(err)
	}
	pkts = append(pkts, tail...)
	checkPacketTimeline(t, e, pkts, 0)
	chans, _ := render(t, "aac", e, pkts, 0, 96000)
	for c, ch := range chans {
		if f := dominant(ch[60000:60000+9600], 48000); math.Abs(f-440) > 5 {
			t.Errorf("channel %d after the switch: %.2f Hz, want 440", c, f)
		}
		// Mono is copied to both channels at full level.
		if r, want := rms(ch[60000:60000+9600]), amp/math.Sqrt2; math.Abs(r-want) > 0.05*want {
			t.Errorf("channel %d after the switch: rms %.3f, want %.3f", c, r, want)
		}
	}
}

func TestDecoderCorrupt(t *testing.T) {
	needFFmpeg(t)
	e, err := NewEncoder("aac", 48000, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	pkts := feed(t, e, 48000, []float64{440, 660}, 0, 0, 4800, 0, 1024)
	if len(pkts) < 3 {
		t.Fatalf("%d packets", len(pkts))
	}
	oe, err := NewEncoder("opus", 48000, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer oe.Close()
	opkts := feed(t, oe, 48000, []float64{440, 660}, 0, 0, 4800, 0, 960)

	for _, tc := range []struct {
		codec   string
		extra   []byte
		good    []byte
		corrupt [][]byte
	}{
		{"aac", e.Extradata(), pkts[2].Data, [][]byte{
			bytes.Repeat([]byte{0xff}, 300),
			{0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03},
			pkts[1].Data[:len(pkts[1].Data)/3],
		}},
		// Opus code 3 packet with a frame count of 0, and one claiming
		// more frame data than it has.
		{"opus", oe.Extradata(), opkts[2].Data, [][]byte{{0x03, 0x00}, {0x03, 0x05, 0xff}}},
	} {
		d, err := NewDecoder(tc.codec, tc.extra, 48000, 2)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range tc.corrupt {
			if _, err := d.Decode(c, int64(i)); err == nil {
				t.Errorf("%s: corrupt packet %d decoded without error", tc.codec, i)
			}
		}
		frames, err := d.Decode(tc.good, 100)
		if err != nil || len(frames) != 1 || frames[0].Samples == 0 {
			t.Errorf("%s: good packet after corrupt ones: %d frames, %v", tc.codec, len(frames), err)
		}
		d.Close()
	}

	// Random data never crashes the decoder.
	d, err := NewDecoder("aac", e.Extradata(), 48000, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	seed := uint32(1)
	buf := make([]byte, 2048)
	for i := range 500 {
		for j := range buf {
			seed = seed*1664525 + 1013904223
			buf[j] = byte(seed >> 24)
		}
		d.Decode(buf[:1+i*4%len(buf)], int64(i*1024)) //nolint:errcheck // only must not crash
	}
}

func TestArgsAndClose(t *testing.T) {
	needFFmpeg(t)
	if _, err := NewDecoder("mp3", nil, 48000, 2); err == nil {
		t.Error("mp3 decoder opened")
	}
	if _, err := NewDecoder("opus", nil, 48000, 0); err == nil {
		t.Error("opus decoder without channels opened")
	}
	if _, err := NewEncoder("vorbis", 48000, 2, 0); err == nil {
		t.Error("vorbis encoder opened")
	}
	_, err := NewEncoder("opus", 44100, 2, 0)
	if err == nil {
		t.Fatal("opus encoder at 44.1 kHz opened")
	}
	if want := "av: open libopus encoder: Invalid argument"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}

	e, err := NewEncoder("opus", 48000, 2, 64000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Encode(Frame{PCM: make([]float32, 10), Samples: 10, SampleRate: 48000, Channels: 2}); err == nil {
		t.Error("short PCM accepted")
	}
	if _, err := e.Flush(); err != nil {
		t.Errorf("flush of an unused encoder: %v", err)
	}
	if _, err := e.Encode(Frame{PCM: make([]float32, 20), Samples: 10, SampleRate: 48000, Channels: 2}); err == nil {
		t.Error("encode after flush accepted")
	}
	e.Close()
	e.Close()
	if _, err := e.Encode(Frame{PCM: make([]float32, 20), Samples: 10, SampleRate: 48000, Channels: 2}); err == nil {
		t.Error("encode after close accepted")
	}

	d, err := NewDecoder("opus", nil, 48000, 2)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	d.Close()
	if _, err := d.Decode([]byte{0xfc, 0xff, 0xfe}, 0); err == nil {
		t.Error("decode after close accepted")
	}
}

// TestOpusWithoutExtradata decodes Opus as WebRTC delivers it: no OpusHead.
func TestOpusWithoutExtradata(t *testing.T) {
	needFFmpeg(t)
	e, err := NewEncoder("opus", 48000, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	pkts := feed(t, e, 48000, []float64{440, 660}, 0, 0, 48000, 0, 960)
	d, err := NewDecoder("opus", nil, 48000, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var left []float32
	for _, p := range pkts {
		frames, err := d.Decode(p.Data, p.PTS)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frames {
			if f.Channels != 2 || f.SampleRate != 48000 || f.PTS != p.PTS {
				t.Fatalf("frame %+v for packet at %d", f, p.PTS)
			}
			for i := range f.Samples {
				left = append(left, f.PCM[2*i])
			}
		}
	}
	if f := dominant(left[24000:24000+9600], 48000); math.Abs(f-440) > 5 {
		t.Errorf("dominant %.2f Hz, want 440", f)
	}
}

func TestUnavailableError(t *testing.T) {
	if Available() {
		t.Skip("FFmpeg is linked in")
	}
	if _, err := NewEncoder("opus", 48000, 2, 0); !errors.Is(err, ErrUnavailable) {
		t.Errorf("NewEncoder: %v", err)
	}
	if _, err := NewDecoder("aac", nil, 48000, 2); !errors.Is(err, ErrUnavailable) {
		t.Errorf("NewDecoder: %v", err)
	}
}

// BenchmarkAACToOpus transcodes one second of 48 kHz stereo AAC to Opus
// per op.
func BenchmarkAACToOpus(b *testing.B) {
	needFFmpeg(b)
	ae, err := NewEncoder("aac", 48000, 2, 0)
	if err != nil {
		b.Fatal(err)
	}
	src := feed(b, ae, 48000, []float64{440, 660}, 0, 0, 48000, 0, 1024)
	extra := ae.Extradata()
	ae.Close()

	d, err := NewDecoder("aac", extra, 48000, 2)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	e, err := NewEncoder("opus", 48000, 2, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	span := int64(len(src) * 1024)
	b.ReportAllocs()
	b.ResetTimer()
	var out int
	for i := 0; b.Loop(); i++ {
		for _, p := range src {
			frames, err := d.Decode(p.Data, p.PTS+int64(i)*span)
			if err != nil {
				b.Fatal(err)
			}
			for _, f := range frames {
				pkts, err := e.Encode(f)
				if err != nil {
					b.Fatal(err)
				}
				out += len(pkts)
			}
		}
	}
	if out == 0 {
		b.Fatal("no output")
	}
}

func TestRescale(t *testing.T) {
	for _, tc := range []struct {
		v        int64
		from, to int
		want     int64
	}{
		{0, 44100, 48000, 0},
		{44100, 44100, 48000, 48000},
		{-44100, 44100, 48000, -48000},
		{1, 44100, 48000, 1},      // 1.088
		{-1, 44100, 48000, -1},    // -1.088
		{1, 2, 1, 1},              // 0.5 rounds away from zero
		{-1, 2, 1, -1},            // -0.5 rounds away from zero
		{1000, 48000, 44100, 919}, // 918.75
		{7, 48000, 48000, 7},
		{math.MaxInt64, 1, 2, math.MaxInt64},
		{math.MinInt64 + 1, 1, 2, -math.MaxInt64},
		{-math.MaxInt64 / 3, 1, 4, -math.MaxInt64},
	} {
		if got := rescale(tc.v, tc.from, tc.to); got != tc.want {
			t.Errorf("rescale(%d, %d, %d) = %d, want %d", tc.v, tc.from, tc.to, got, tc.want)
		}
	}
}
