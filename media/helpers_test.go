package media

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"testing"
	"time"
)

// quietLog discards the hub's logs; tests that check logging make their own.
var quietLog = slog.New(slog.DiscardHandler)

// newTestStream publishes "live/test" with an H.264 and an AAC track. The
// registry gives no grace: Close ends the stream.
func newTestStream(t testing.TB) (*Publication, *Track, *Track) {
	t.Helper()
	reg := NewRegistry(quietLog)
	s, err := reg.Publish("live/test", "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	video := &Track{Codec: H264{SPS: []byte{0x67}, PPS: []byte{0x68}}}
	audio := &Track{Codec: AAC{Config: []byte{0x12, 0x10}, SampleRate: 44100, Channels: 2}}
	if err := s.SetTracks(video, audio); err != nil {
		t.Fatal(err)
	}
	return s, video, audio
}

func newTestReader(t testing.TB, s *Publication, size int) *Reader {
	t.Helper()
	r, err := s.NewReader(ReaderOptions{Name: t.Name(), QueueSize: size})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// addProc adds the processor newProc makes to track, failing the test
// (from any goroutine) if the hub refuses it.
func addProc(t testing.TB, s *Stream, track *Track, name string, newProc func(*Track) Processor) (release func()) {
	t.Helper()
	release, err := releaseOf(s.AddProcessor(track, name, newProc))
	if err != nil {
		t.Error(err)
	}
	return release
}

// vunit is a video unit, key or not, tagged by seq in its PTS.
func vunit(tr *Track, seq int, key bool) *Unit {
	nalu := []byte{0x41, byte(seq)}
	if key {
		nalu[0] = 0x65
	}
	d := time.Duration(seq) * time.Millisecond
	return &Unit{Track: tr, PTS: d, DTS: d, Key: key, NALUs: [][]byte{nalu}}
}

func aunit(tr *Track, seq int) *Unit {
	d := time.Duration(seq) * time.Millisecond
	return &Unit{Track: tr, PTS: d, DTS: d, Key: true, Data: []byte{0x21, byte(seq)}}
}

// interleaved returns n units: video (a keyframe every gop units) and audio
// alternating, so units[i].PTS == i ms.
func interleaved(video, audio *Track, n, gop int) []*Unit {
	out := make([]*Unit, n)
	for i := range out {
		if i%2 == 0 {
			out[i] = vunit(video, i, i%(2*gop) == 0)
		} else {
			out[i] = aunit(audio, i)
		}
	}
	return out
}

// readN reads n units, failing the test on an error or after 10 s.
func readN(t testing.TB, r *Reader, n int) []*Unit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := make([]*Unit, 0, n)
	for len(out) < n {
		u, err := r.Read(ctx)
		if err != nil {
			t.Fatalf("Read after %d of %d units: %v", len(out), n, err)
		}
		out = append(out, u)
	}
	return out
}

// readQueued reads what is queued without waiting.
func readQueued(t testing.TB, r *Reader) []*Unit {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out []*Unit
	for {
		u, err := r.Read(ctx)
		if errors.Is(err, context.Canceled) {
			return out
		}
		if err != nil {
			t.Fatalf("Read after %d units: %v", len(out), err)
		}
		out = append(out, u)
	}
}

// readErr waits for Read's error, failing if a unit comes instead.
func readErr(t testing.TB, r *Reader) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := r.Read(ctx)
	if err == nil {
		t.Fatalf("Read returned a unit (PTS %v), expected an error", u.PTS)
	}
	return err
}

// expectUnits checks that got are exactly want, in order (same pointers).
func expectUnits(t testing.TB, who string, got, want []*Unit) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d units %v, expected %d %v", who, len(got), describe(got), len(want), describe(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: unit %d is %v, expected %v (got %v)", who, i, describe(got[i:i+1]), describe(want[i:i+1]), describe(got))
		}
	}
}

// describe lists units compactly: V5 is a video keyframe at 5 ms, v6 a
// non-key video unit, a7 audio.
func describe(us []*Unit) []string {
	out := make([]string, len(us))
	for i, u := range us {
		c := "a"
		if u.Track.IsVideo() {
			c = "v"
			if u.Key {
				c = "V"
			}
		}
		out[i] = c + u.PTS.String()
	}
	return out
}

// goroutineBaseline returns a check that the goroutine count is back to
// what it is now, polling until a deadline.
func goroutineBaseline(t *testing.T) func() {
	t.Helper()
	base := runtime.NumGoroutine()
	return func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Fatalf("%d goroutines, expected at most %d:\n%s", n, base, buf)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// releaseOf returns the Release of the handle AddProcessor returned, with
// its error: the tests hold a processor as a func.
func releaseOf(h *ProcessorHandle, err error) (func(), error) { return h.Release, err }
