package media

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
)

var (
	testSPS = []byte{0x67, 0x42, 0xc0, 0x1e}
	testPPS = []byte{0x68, 0xce, 0x3c, 0x80}
)

// idr is a canonical IDR unit: SPS, PPS, then the slice, tagged by seq.
func idr(tr *Track, seq int) *Unit {
	u := vunit(tr, seq, true)
	u.NALUs = [][]byte{testSPS, testPPS, u.NALUs[0]}
	return u
}

// writeAll writes us in order.
func writeAll(p *Publication, us ...*Unit) {
	for _, u := range us {
		p.Write(u)
	}
}

// readCached reads what is queued, with Reader.Cached for each unit.
func readCached(t testing.TB, r *Reader) (units []*Unit, cached []bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		u, err := r.Read(ctx)
		if err != nil {
			return units, cached
		}
		units = append(units, u)
		cached = append(cached, r.Cached())
	}
}

func newJoiner(t testing.TB, s *Stream, size int) *Reader {
	t.Helper()
	r, err := s.NewReader(ReaderOptions{Name: t.Name() + " joiner", QueueSize: size, StartAtKeyframe: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// TestGOPJoin: a reader that joins late with StartAtKeyframe gets the last
// IDR (with its SPS and PPS) first, then the rest of that GOP, audio
// included, in write order and marked Cached, then the live units.
func TestGOPJoin(t *testing.T) {
	s, video, audio := newTestStream(t)
	plain := newTestReader(t, s, 0)

	writeAll(s, idr(video, 0), aunit(audio, 1), vunit(video, 2, false), aunit(audio, 3))
	gop := []*Unit{idr(video, 4), aunit(audio, 5), vunit(video, 6, false), aunit(audio, 7), vunit(video, 8, false)}
	writeAll(s, gop...)

	late := newJoiner(t, s.Stream, 0)
	got, cached := readCached(t, late)
	expectUnits(t, "late joiner", got, gop)
	for i, c := range cached {
		if !c {
			t.Fatalf("cached unit %d (%v) not marked Cached", i, describe(got[i:i+1]))
		}
	}
	if first := got[0]; !first.Key || !bytes.Equal(first.NALUs[0], testSPS) || !bytes.Equal(first.NALUs[1], testPPS) {
		t.Fatalf("first unit: key %v, NAL units %x; expected the IDR with SPS and PPS", first.Key, first.NALUs)
	}

	live := []*Unit{aunit(audio, 9), vunit(video, 10, false), idr(video, 12)}
	writeAll(s, live...)
	got, cached = readCached(t, late)
	expectUnits(t, "late joiner, live", got, live)
	for i, c := range cached {
		if c {
			t.Fatalf("live unit %d marked Cached", i)
		}
	}
	if d := late.Dropped(); d != 0 {
		t.Fatalf("joiner dropped %d", d)
	}
	// A reader without StartAtKeyframe gets only what is written after it.
	if got := readQueued(t, plain); len(got) != 4+len(gop)+len(live) {
		t.Fatalf("plain reader got %d units", len(got))
	}
	r := newTestReader(t, s, 0)
	if got := readQueued(t, r); len(got) != 0 {
		t.Fatalf("reader without StartAtKeyframe got %v", describe(got))
	}
}

// TestGOPJoinWithoutCache: before any keyframe, or on an audio-only
// stream, a joiner starts live, its video at the next keyframe.
func TestGOPJoinWithoutCache(t *testing.T) {
	s, video, audio := newTestStream(t)
	writeAll(s, aunit(audio, 0), vunit(video, 1, false)) // no keyframe yet: nothing cached
	r := newJoiner(t, s.Stream, 0)
	if got := readQueued(t, r); len(got) != 0 {
		t.Fatalf("joiner got %v before any keyframe", describe(got))
	}
	a3, k4 := aunit(audio, 3), idr(video, 4)
	writeAll(s, vunit(video, 2, false), a3, k4)
	expectUnits(t, "joiner", readQueued(t, r), []*Unit{a3, k4})
	if d := r.Dropped(); d != 0 {
		t.Fatalf("join skip counted %d drops", d)
	}

	reg := NewRegistry(quietLog)
	p, err := reg.Publish("live/audio", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	opus := &Track{Codec: Opus{Channels: 2}}
	if err := p.SetTracks(opus); err != nil {
		t.Fatal(err)
	}
	writeAll(p, aunit(opus, 0), aunit(opus, 1))
	ar := newJoiner(t, p.Stream, 0)
	if got := readQueued(t, ar); len(got) != 0 {
		t.Fatalf("audio-only joiner got %v from a cache", describe(got))
	}
}

// TestGOPPerVideoTrack: with two video tracks, each starts at its own
// keyframe; a track with none cached waits for its next one.
func TestGOPPerVideoTrack(t *testing.T) {
	reg := NewRegistry(quietLog)
	s, err := reg.Publish("live/two", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v0, v1, a := &Track{Codec: H264{}}, &Track{Codec: H264{}}, &Track{Codec: Opus{Channels: 2}}
	if err := s.SetTracks(v0, v1, a); err != nil {
		t.Fatal(err)
	}
	k0, a1, p2, k3, a4, p5 := idr(v0, 0), aunit(a, 1), vunit(v0, 2, false), idr(v1, 3), aunit(a, 4), vunit(v1, 5, false)
	writeAll(s, vunit(v1, -1, false), k0, a1, p2, k3, a4, p5)
	expectUnits(t, "joiner", readQueued(t, newJoiner(t, s.Stream, 0)), []*Unit{k0, a1, p2, k3, a4, p5})

	// v0 starts a new GOP: what came before it is dropped, but v1's GOP
	// (from k3) and the audio since k3 stay.
	k6, p7 := idr(v0, 6), vunit(v1, 7, false)
	writeAll(s, k6, p7)
	expectUnits(t, "second joiner", readQueued(t, newJoiner(t, s.Stream, 0)), []*Unit{k3, a4, p5, k6, p7})

	// v1's GOP outgrows the cache: v1 joiners wait for its next keyframe;
	// v0's GOP and the audio since k6 stay.
	big := vunit(v1, 8, false)
	big.NALUs = [][]byte{make([]byte, MaxGOPBytes)}
	a9 := aunit(a, 9)
	writeAll(s, big, a9)
	r := newJoiner(t, s.Stream, 0)
	expectUnits(t, "third joiner", readQueued(t, r), []*Unit{k6, a9})
	k10 := idr(v1, 10)
	writeAll(s, vunit(v1, 9, false), k10)
	expectUnits(t, "third joiner, live", readQueued(t, r), []*Unit{k10})
}

// TestGOPByteBound: a GOP larger than MaxGOPBytes is not cached; joiners
// then start at the next keyframe, and caching resumes there.
func TestGOPByteBound(t *testing.T) {
	s, video, audio := newTestStream(t)
	k0, a1, p2 := idr(video, 0), aunit(audio, 1), vunit(video, 2, false)
	k0.NALUs = append(k0.NALUs, make([]byte, MaxGOPBytes-100-k0.Size()-a1.Size()-p2.Size()))
	writeAll(s, k0, a1, p2)
	if got := readQueued(t, newJoiner(t, s.Stream, 0)); len(got) != 3 {
		t.Fatalf("joiner got %v within the bound, expected the 3 units", describe(got))
	}
	over := vunit(video, 3, false)
	over.NALUs[0] = make([]byte, 200)
	writeAll(s, over, aunit(audio, 4), vunit(video, 5, false))

	r := newJoiner(t, s.Stream, 0)
	if got := readQueued(t, r); len(got) != 0 {
		t.Fatalf("joiner got %v from a GOP past the bound", describe(got))
	}
	a7, k8, p9 := aunit(audio, 7), idr(video, 8), vunit(video, 9, false)
	writeAll(s, vunit(video, 6, false), a7, k8, p9)
	expectUnits(t, "joiner after the bound", readQueued(t, r), []*Unit{a7, k8, p9})
	expectUnits(t, "next joiner", readQueued(t, newJoiner(t, s.Stream, 0)), []*Unit{k8, p9})
	if d := r.Dropped(); d != 0 {
		t.Fatalf("dropped %d", d)
	}
}

// TestGOPByteBoundEveryUnit: the byte bound counts every byte a unit holds
// (Unit.Size), whatever it carries. A publisher that sends one IDR and then
// units the bound once did not count (an RTP ingest's damaged video units,
// which carry their RTP packets and no NAL units; big audio frames; audio
// with RTP packets) makes the cache hold at most MaxGOPBytes, not all it
// sent.
func TestGOPByteBoundEveryUnit(t *testing.T) {
	// One payload shared by every packet and frame: the test allocates
	// little, and Size counts what each unit refers to.
	payload := make([]byte, 1200)
	packets := func(seq int) []*rtp.Packet {
		pkts := make([]*rtp.Packet, 100)
		for i := range pkts {
			pkts[i] = &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(seq*100 + i)}, Payload: payload}
		}
		return pkts
	}
	frame := make([]byte, 120<<10)
	for _, tc := range []struct {
		name string
		unit func(video, audio *Track, seq int) *Unit
	}{
		{"damaged video", func(video, _ *Track, seq int) *Unit {
			u := vunit(video, seq, false)
			u.NALUs, u.RTP = nil, packets(seq)
			return u
		}},
		{"audio frames", func(_, audio *Track, seq int) *Unit {
			u := aunit(audio, seq)
			u.Data = frame
			return u
		}},
		{"audio RTP", func(_, audio *Track, seq int) *Unit {
			u := aunit(audio, seq)
			u.RTP = packets(seq)
			return u
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, video, audio := newTestStream(t)
			s.Write(idr(video, 0))
			sent := 0
			for seq := 1; sent < 3*MaxGOPBytes; seq++ {
				u := tc.unit(video, audio, seq)
				sent += u.Size()
				s.Write(u)
			}
			held := 0
			for _, u := range readQueued(t, newJoiner(t, s.Stream, 0)) {
				held += u.Size()
			}
			if held > MaxGOPBytes {
				t.Fatalf("the GOP cache holds %.1f MiB of the %.1f MiB sent, bound %d MiB",
					float64(held)/(1<<20), float64(sent)/(1<<20), MaxGOPBytes>>20)
			}
		})
	}
}

// TestGOPUnitBound: a GOP of more than MaxGOPUnits units is not cached
// either, and a joiner's queue grows by what is cached, never more.
func TestGOPUnitBound(t *testing.T) {
	s, video, audio := newTestStream(t)
	us := interleaved(video, audio, MaxGOPUnits, MaxGOPUnits) // one keyframe, then MaxGOPUnits-1 units
	writeAll(s, us...)
	r := newJoiner(t, s.Stream, 4)
	expectUnits(t, "joiner of a full cache", readQueued(t, r), us)
	if got := len(r.buf); got != 4+MaxGOPUnits {
		t.Fatalf("queue of %d, expected 4 plus the %d cached", got, MaxGOPUnits)
	}
	writeAll(s, aunit(audio, MaxGOPUnits))
	if got := readQueued(t, newJoiner(t, s.Stream, 4)); len(got) != 0 {
		t.Fatalf("joiner got %d units past the bound", len(got))
	}
}

// rtpProc stands for the RTP packetizer: it sets u.RTP unless set, and
// records the PTS of every unit it sees, in order.
type rtpProc struct {
	mu   sync.Mutex
	seen []time.Duration
}

func (p *rtpProc) Process(u *Unit) error {
	p.mu.Lock()
	p.seen = append(p.seen, u.PTS)
	p.mu.Unlock()
	if u.RTP == nil {
		u.RTP = []*rtp.Packet{{Header: rtp.Header{Timestamp: uint32(u.PTS / time.Millisecond)}}}
	}
	return nil
}

// TestProcessorBackfill: a processor created while a GOP is cached runs
// over the cached units first (copies: readers holding the originals see
// no change), so a joiner's cached units carry its output.
func TestProcessorBackfill(t *testing.T) {
	s, video, audio := newTestStream(t)
	early := newTestReader(t, s, 0)
	gop := []*Unit{idr(video, 0), aunit(audio, 1), vunit(video, 2, false), aunit(audio, 3), vunit(video, 4, false)}
	writeAll(s, gop...)

	// The early reader reads the originals while the processor is added:
	// the race detector checks that nothing it reads is written.
	var wg sync.WaitGroup
	wg.Go(func() {
		for _, u := range readN(t, early, len(gop)) {
			if u.RTP != nil {
				t.Errorf("original unit %v got RTP", describe([]*Unit{u}))
			}
		}
	})
	p := &rtpProc{}
	release := addProc(t, s.Stream, video, "rtp", func(*Track) Processor { return p })
	defer release()
	wg.Wait()
	if want := []time.Duration{0, 2 * time.Millisecond, 4 * time.Millisecond}; !equalDurations(p.seen, want) {
		t.Fatalf("backfill ran over %v, expected the cached video units %v", p.seen, want)
	}

	r := newJoiner(t, s.Stream, 0)
	got := readQueued(t, r)
	if len(got) != len(gop) {
		t.Fatalf("joiner got %v", describe(got))
	}
	for i, u := range got {
		if u.PTS != gop[i].PTS || u.Track != gop[i].Track || u.Key != gop[i].Key {
			t.Fatalf("cached unit %d is %v, expected %v", i, describe(got[i:i+1]), describe(gop[i:i+1]))
		}
		switch {
		case u.Track.IsVideo() && u.RTP == nil:
			t.Fatalf("cached video unit %d has no RTP after the backfill", i)
		case !u.Track.IsVideo() && u.RTP != nil:
			t.Fatalf("audio unit %d went through the video processor", i)
		case u.Track.IsVideo() && u == gop[i]:
			t.Fatalf("cached video unit %d is the original, expected a copy", i)
		}
	}

	// Live units go through it once, after the cached ones; a second
	// caller does not backfill again.
	release2 := addProc(t, s.Stream, video, "rtp", func(*Track) Processor { t.Error("second processor created"); return nil })
	defer release2()
	live := vunit(video, 6, false)
	s.Write(live)
	if live.RTP == nil {
		t.Fatal("live unit has no RTP")
	}
	if want := []time.Duration{0, 2 * time.Millisecond, 4 * time.Millisecond, 6 * time.Millisecond}; !equalDurations(p.seen, want) {
		t.Fatalf("processor ran over %v, expected %v: each unit once, in order", p.seen, want)
	}
	expectUnits(t, "joiner, live", readQueued(t, r), []*Unit{live})
	if got := readQueued(t, newJoiner(t, s.Stream, 0)); len(got) != len(gop)+1 || got[len(got)-1] != live {
		t.Fatalf("second joiner got %v", describe(got))
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestWriteAllocs: once the cache has grown to the GOP, Write allocates
// nothing, cache and fan-out included.
func TestWriteAllocs(t *testing.T) {
	s, video, audio := newTestStream(t)
	const gop = 30
	units := interleaved(video, audio, 4*gop, gop)
	r := newTestReader(t, s, 1<<16)
	defer addProc(t, s.Stream, video, "count", func(*Track) Processor { return &countingProc{} })()
	writeAll(s, units...) // grow the cache
	readQueued(t, r)
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		s.Write(units[i%len(units)])
		i++
	})
	if allocs != 0 {
		t.Fatalf("Write allocates %v times per unit, expected 0", allocs)
	}
}
