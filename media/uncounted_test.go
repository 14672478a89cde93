package media

import (
	"errors"
	"testing"
)

// An uncounted reader (a dashboard preview) gets the units like any other
// but is left out of Readers and so of CheckReaders' limit.
func TestUncountedReader(t *testing.T) {
	s, video, _ := newTestStream(t)
	counted := newTestReader(t, s, 8)
	preview, err := s.NewReader(ReaderOptions{Name: "preview", QueueSize: 8, Uncounted: true})
	if err != nil {
		t.Fatal(err)
	}
	defer preview.Close()
	if n := s.Readers(); n != 1 {
		t.Fatalf("Readers() = %d with one counted and one uncounted reader, want 1", n)
	}
	if err := s.CheckReaders(2, 0); err != nil {
		t.Fatalf("CheckReaders(2) refused with one counted reader and a preview: %v", err)
	}
	if err := s.CheckReaders(1, 0); !errors.Is(err, ErrTooManyReaders) {
		t.Fatalf("CheckReaders(1) = %v, want ErrTooManyReaders", err)
	}
	s.Write(vunit(video, 0, true))
	for _, r := range []*Reader{counted, preview} {
		if u, _, err := r.TryRead(); err != nil || u == nil {
			t.Fatalf("%s: TryRead = %v, %v; want the unit written", r.name, u, err)
		}
	}
	preview.Close()
	if n := s.Readers(); n != 1 {
		t.Fatalf("Readers() = %d after the preview left, want 1", n)
	}
}

// BytesIn counts the payload written: NAL units and audio frames.
func TestBytesIn(t *testing.T) {
	s, video, audio := newTestStream(t)
	s.Write(vunit(video, 0, true)) // one NAL unit of 2 bytes
	s.Write(aunit(audio, 1))       // 2 bytes
	if n := s.BytesIn(); n != 4 {
		t.Fatalf("BytesIn() = %d, want 4", n)
	}
}
