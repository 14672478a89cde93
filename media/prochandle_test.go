package media

import (
	"sync/atomic"
	"testing"
	"time"
)

// keyProc counts the keyframe requests it is given.
type keyProc struct{ asked atomic.Int32 }

func (*keyProc) Process(*Unit) error { return nil }
func (p *keyProc) RequestKeyframe()  { p.asked.Add(1) }

// TestProcessorHandleRequestKeyframe: a handle's keyframe request reaches
// the processor as it runs now (made again for a new publisher's track),
// only one that takes requests, and none once the handle is released.
func TestProcessorHandleRequestKeyframe(t *testing.T) {
	reg := graceRegistry(time.Minute)
	first := publishTracks(t, reg, "live/kf", "one", h264Track())
	s := first.Stream
	var made []*keyProc
	h, err := s.AddProcessor(s.Track(0), "reencode", func(*Track) Processor {
		p := &keyProc{}
		made = append(made, p)
		return p
	})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := s.AddProcessor(s.Track(0), "plain", func(*Track) Processor { return &countingProc{} })
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Release()
	if plain.RequestKeyframe() {
		t.Error("a processor that takes no keyframe requests took one")
	}
	if !h.RequestKeyframe() || made[0].asked.Load() != 1 {
		t.Fatal("the request did not reach the processor")
	}

	first.Close()
	publishTracks(t, reg, "live/kf", "two", h264Track()) // compatible: the processors are made again
	if len(made) != 2 {
		t.Fatalf("%d processors made, expected one more for the new publisher", len(made))
	}
	if !h.RequestKeyframe() || made[1].asked.Load() != 1 || made[0].asked.Load() != 1 {
		t.Fatalf("after the takeover: requests %d (old) and %d (new), expected 1 and 1", made[0].asked.Load(), made[1].asked.Load())
	}

	h.Release()
	if h.RequestKeyframe() {
		t.Error("a request after Release was taken")
	}
	var none *ProcessorHandle
	none.Release()
	if none.RequestKeyframe() {
		t.Error("a nil handle took a request")
	}
}
