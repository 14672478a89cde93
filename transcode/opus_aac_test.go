package transcode

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"runtime"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode/av"
)

func needAV(t testing.TB) {
	t.Helper()
	if !av.Available() {
		t.Skip("built without FFmpeg")
	}
}

// opusUnits encodes seconds of 440 Hz left / 660 Hz right as Opus units
// (20 ms packets) on track, the first input sample at start.
func opusUnits(t testing.TB, track *media.Track, start time.Duration, seconds float64) []*media.Unit {
	t.Helper()
	enc, err := av.NewEncoder("opus", 48000, 2, 96000)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	pcm, n := stereoTone(seconds)
	base := media.ClockTicks(start, 48000)
	var units []*media.Unit
	for off := 0; off < n; off += 960 {
		k := min(960, n-off)
		pkts, err := enc.Encode(av.Frame{PCM: pcm[2*off : 2*(off+k)], Samples: k, PTS: base + int64(off), SampleRate: 48000, Channels: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pkts {
			ts := ticksToDuration(p.PTS, 48000)
			units = append(units, &media.Unit{Track: track, PTS: ts, DTS: ts, Key: true, Data: p.Data})
		}
	}
	return units
}

// stereoTone is seconds of 440 Hz left / 660 Hz right at 48 kHz,
// interleaved, and its length in samples per channel.
func stereoTone(seconds float64) (pcm []float32, n int) {
	n = int(seconds * 48000)
	pcm = make([]float32, 2*n)
	for i := range n {
		x := float64(i) / 48000
		pcm[2*i] = float32(0.5 * math.Sin(2*math.Pi*440*x))
		pcm[2*i+1] = float32(0.5 * math.Sin(2*math.Pi*660*x))
	}
	return pcm, n
}

func goertzelPower(x []float32, f float64) float64 {
	w := 2 * math.Pi * f / 48000
	c := 2 * math.Cos(w)
	var s1, s2 float64
	for _, v := range x {
		s := float64(v) + c*s1 - s2
		s2, s1 = s1, s
	}
	return s1*s1 + s2*s2 - c*s1*s2
}

func TestOpusToAAC(t *testing.T) {
	needAV(t)
	src := &media.Track{Codec: media.Opus{Channels: 2}}
	out := &media.Track{}
	c, err := NewOpusToAAC(src, 96000)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	codec := c.Codec()
	var asc mpeg4audio.AudioSpecificConfig
	if err := asc.Unmarshal(codec.Config); err != nil {
		t.Fatal(err)
	}
	if asc.Type != mpeg4audio.ObjectTypeAACLC || asc.SampleRate != 48000 || asc.ChannelConfig != 2 || codec.SampleRate != 48000 || codec.Channels != 2 {
		t.Errorf("codec %+v, AudioSpecificConfig %+v: want AAC-LC 48 kHz stereo", codec, asc)
	}

	start := 10 * time.Second
	var aac []*media.Unit
	for _, u := range opusUnits(t, src, start, 2) {
		units, err := c.Transcode(u, out)
		if err != nil {
			t.Fatal(err)
		}
		aac = append(aac, units...)
	}
	rest, err := c.Flush(out)
	if err != nil {
		t.Fatal(err)
	}
	aac = append(aac, rest...)
	if len(aac) < 90 {
		t.Fatalf("%d AAC units for 2 s", len(aac))
	}
	// The first frame starts 1024 samples (the AAC priming) before the
	// audio, which starts 312 samples (Opus's) before the first Opus unit.
	first := start - time.Duration(312+1024)*time.Second/48000
	if d := aac[0].PTS - first; d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("first AAC unit at %v, want %v", aac[0].PTS, first)
	}
	for i, u := range aac {
		if u.Track != out || !u.Key || u.PTS != u.DTS || len(u.Data) == 0 {
			t.Fatalf("unit %d: %+v", i, u)
		}
		if i > 0 {
			if d := u.PTS - aac[i-1].PTS; d < 21*time.Millisecond || d > 22*time.Millisecond {
				t.Fatalf("unit %d: %v after the previous one, want 1024 samples", i, d)
			}
		}
	}

	// Decoded, it is the same audio.
	dec, err := av.NewDecoder("aac", codec.Config, 48000, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var left, right []float32
	for _, u := range aac {
		frames, err := dec.Decode(u.Data, media.ClockTicks(u.PTS, 48000))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frames {
			for i := range f.Samples {
				left, right = append(left, f.PCM[2*i]), append(right, f.PCM[2*i+1])
			}
		}
	}
	l, r := left[48000/2:48000], right[48000/2:48000]
	if goertzelPower(l, 440) < 100*goertzelPower(l, 660) || goertzelPower(r, 660) < 100*goertzelPower(r, 440) {
		t.Errorf("decoded audio is not 440 Hz left, 660 Hz right")
	}

	if _, err := NewOpusToAAC(&media.Track{Codec: media.AAC{}}, 0); err == nil {
		t.Error("NewOpusToAAC accepted an AAC track")
	}
}

func TestTicksToDuration(t *testing.T) {
	for _, tc := range []struct {
		ticks int64
		want  time.Duration
	}{
		{48000, time.Second},
		{-1024, -1024 * time.Second / 48000},
		{48000 * 86400 * 365, 365 * 24 * time.Hour}, // no overflow
	} {
		if got := ticksToDuration(tc.ticks, 48000); got != tc.want {
			t.Errorf("ticksToDuration(%d) = %v, want %v", tc.ticks, got, tc.want)
		}
	}
}

// fakeIDR is an H.264 access unit the hub takes as a keyframe.
func fakeIDR() [][]byte { return [][]byte{{0x67, 0x42, 0xc0, 0x1f}, {0x68, 0xce}, {0x65, 0x88, 0x84}} }

func TestAACViews(t *testing.T) {
	needAV(t)
	base := runtime.NumGoroutine()
	reg := media.NewRegistry(slog.New(slog.DiscardHandler))
	views := NewAACViews(slog.New(slog.DiscardHandler))
	video := &media.Track{Codec: media.H264{SPS: fakeIDR()[0], PPS: fakeIDR()[1]}}
	opus := &media.Track{Codec: media.Opus{Channels: 2}}
	pub, err := reg.Publish("live/test", "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := views.Acquire(pub.Stream, 0); err == nil {
		t.Error("Acquire before the tracks are known succeeded")
	}
	if err := pub.SetTracks(video, opus); err != nil {
		t.Fatal(err)
	}
	audio := opusUnits(t, opus, 0, 3)
	// Write 1 s (a GOP, cached) before anyone needs AAC.
	writeUntil := func(fromFrame, toFrame int) {
		for i := fromFrame; i < toFrame; i++ {
			f := time.Duration(i) * time.Second / 30
			pub.Write(&media.Unit{Track: video, PTS: f, DTS: f, Key: i%30 == 0, NALUs: fakeIDR()})
			for len(audio) > 0 && audio[0].PTS < f+time.Second/30 {
				pub.Write(audio[0])
				audio = audio[1:]
			}
		}
	}
	writeUntil(0, 45)

	v1, release1, err := views.Acquire(pub.Stream, 0)
	if err != nil {
		t.Fatal(err)
	}
	v2, release2, err := views.Acquire(pub.Stream, 0)
	if err != nil {
		t.Fatal(err)
	}
	if v1 != v2 || v1 == pub.Stream {
		t.Fatalf("two Acquires gave %p and %p (source %p), want one view", v1, v2, pub.Stream)
	}
	tr := v1.Tracks()
	if len(tr) != 2 || tr[0].Codec.Name() != "H264" || tr[1].Codec.Name() != "AAC" {
		t.Fatalf("view tracks %v", tr)
	}
	if c := tr[1].Codec.(media.AAC); c.SampleRate != 48000 || c.Channels != 2 {
		t.Errorf("view AAC %+v", c)
	}
	// A reader of the view joining now starts at the cached keyframe (1 s)
	// with the audio transcoded since.
	r, err := v1.NewReader(media.ReaderOptions{Name: "test", StartAtKeyframe: true})
	if err != nil {
		t.Fatal(err)
	}
	writeUntil(45, 60)
	pub.Close()
	var units []*media.Unit
	for {
		u, err := r.Read(context.Background())
		if err != nil {
			if !errors.Is(err, media.ErrStreamEnded) {
				t.Fatal(err)
			}
			break
		}
		units = append(units, u)
	}
	r.Close()
	if len(units) == 0 || units[0].Track != tr[0] || !units[0].Key || units[0].PTS != time.Second {
		t.Fatalf("the view's reader starts with %+v, want the keyframe at 1 s", units[0])
	}
	var nv, na int
	for _, u := range units {
		switch u.Track {
		case tr[0]:
			nv++
		case tr[1]:
			na++
		default:
			t.Fatalf("unit of track %v", u.Track)
		}
	}
	if nv != 30 || na < 40 {
		t.Errorf("the view's reader got %d video and %d AAC units for 1 s", nv, na)
	}
	// The source ended, so did the view: a new Acquire makes a new one,
	// which fails since the source has ended.
	if _, _, err := views.Acquire(pub.Stream, 0); err == nil {
		t.Error("Acquire of an ended stream succeeded")
	}
	release1()
	release2()
	release2()

	// Without Opus, the stream itself.
	pub2, _ := reg.Publish("live/aac", "test")
	_ = pub2.SetTracks(&media.Track{Codec: media.AAC{Config: []byte{0x11, 0x90}, SampleRate: 48000, Channels: 2}})
	s, release, err := views.Acquire(pub2.Stream, 0)
	if err != nil || s != pub2.Stream {
		t.Errorf("Acquire of an AAC stream: %v, %v", s, err)
	}
	release()
	pub2.Close()

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		t.Errorf("%d goroutines, %d before", n, base)
	}
}

func TestAACViewsRelease(t *testing.T) {
	needAV(t)
	reg := media.NewRegistry(slog.New(slog.DiscardHandler))
	views := NewAACViews(slog.New(slog.DiscardHandler))
	pub, _ := reg.Publish("live/test", "test")
	opus := &media.Track{Codec: media.Opus{Channels: 2}}
	_ = pub.SetTracks(opus)
	v, release, err := views.Acquire(pub.Stream, 64000)
	if err != nil {
		t.Fatal(err)
	}
	r, err := v.NewReader(media.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	release() // the last one: the view stops and its readers end
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.Read(ctx); !errors.Is(err, media.ErrStreamEnded) {
		t.Errorf("Read after the last release: %v", err)
	}
	r.Close()
	// The next Acquire starts a new view.
	v2, release2, err := views.Acquire(pub.Stream, 64000)
	if err != nil {
		t.Fatal(err)
	}
	if v2 == v {
		t.Error("the released view was handed out again")
	}
	release2()
	pub.Close()
}
