package media

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// graceRegistry returns a registry giving every path grace.
func graceRegistry(grace time.Duration) *Registry {
	reg := NewRegistry(quietLog)
	reg.SetGrace(func(string) time.Duration { return grace })
	return reg
}

func publishTracks(t *testing.T, reg *Registry, path, who string, tracks ...*Track) *Publication {
	t.Helper()
	p, err := reg.Publish(path, who)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if err := p.SetTracks(tracks...); err != nil {
		t.Fatal(err)
	}
	return p
}

func h264Track() *Track { return &Track{Codec: H264{SPS: testSPS, PPS: testPPS}} }
func aacTrack() *Track {
	return &Track{Codec: AAC{Config: []byte{0x11, 0x90}, SampleRate: 48000, Channels: 2}}
}

// expectOpen fails if s has ended.
func expectOpen(t *testing.T, s *Stream) {
	t.Helper()
	select {
	case <-s.Done():
		t.Fatal("stream ended")
	default:
	}
}

// TestRepublishWithinGrace: readers survive a publisher reconnect. Its
// units follow the old ones with timestamps that keep increasing, video
// from its first keyframe, and the processors are made anew for its
// tracks.
func TestRepublishWithinGrace(t *testing.T) {
	reg := graceRegistry(time.Minute)
	v1, a1 := h264Track(), aacTrack()
	first := publishTracks(t, reg, "live/re", "one", v1, a1)
	s := first.Stream
	r := newTestReader(t, first, 0)
	var made, closed atomic.Int32
	var procTrack atomic.Pointer[Track]
	defer addProc(t, s, v1, "rtp", func(t *Track) Processor {
		made.Add(1)
		procTrack.Store(t)
		return &closeCounter{closed: &closed}
	})()

	old := []*Unit{idr(v1, 0), aunit(a1, 1), vunit(v1, 2, false), aunit(a1, 3)}
	writeAll(first, old...)
	first.Close()
	expectOpen(t, s)
	if got, ok := reg.Get("live/re"); !ok || got != s {
		t.Fatal("stream left the registry within the grace period")
	}
	expectUnits(t, "queued before the publisher left", readQueued(t, r), old)
	first.Write(vunit(v1, 4, false)) // after Close: discarded
	if got := readQueued(t, r); len(got) != 0 {
		t.Fatalf("Write after Close delivered %v", describe(got))
	}

	const pause = 30 * time.Millisecond
	time.Sleep(pause)
	second, err := reg.Publish("live/re", "two")
	if err != nil {
		t.Fatalf("Publish within the grace: %v", err)
	}
	defer second.Close()
	if second.Stream != s || s.Publisher() != "two" {
		t.Fatalf("Publish within the grace got stream %p (publisher %q), expected %p", second.Stream, s.Publisher(), s)
	}
	if _, err := reg.Publish("live/re", "three"); !errors.Is(err, ErrPublisherExists) {
		t.Fatalf("third Publish: %v, expected ErrPublisherExists", err)
	}
	first.Close() // the old publication's Close does not touch the new one

	v2 := &Track{Codec: H264{SPS: []byte{0x67, 0x64, 0x00, 0x28}, PPS: testPPS}} // another profile and size: fine
	a2 := aacTrack()
	if err := second.SetTracks(v2, a2); err != nil {
		t.Fatal(err)
	}
	if got := s.Tracks(); len(got) != 2 || got[0] != v2 || got[1] != a2 {
		t.Fatalf("Tracks after the takeover = %v", got)
	}
	if made.Load() != 2 || closed.Load() != 1 || procTrack.Load() != v2 {
		t.Fatalf("processors made %d, closed %d, last made for %v; expected the old one closed and a new one made for the new track", made.Load(), closed.Load(), procTrack.Load())
	}
	// The GOP cache starts afresh: nothing to join before the new keyframe.
	if got := readQueued(t, newJoiner(t, s, 0)); len(got) != 0 {
		t.Fatalf("joiner got %v from the previous publisher", describe(got))
	}

	// The new publisher's clock starts at 0 again, and not at a keyframe.
	fresh := []*Unit{aunit(a2, 0), vunit(v2, 0, false), idr(v2, 33), aunit(a2, 21), vunit(v2, 66, false)}
	writeAll(second, fresh...)
	got := readQueued(t, r)
	expectUnits(t, "after the takeover", got, []*Unit{fresh[0], fresh[2], fresh[3], fresh[4]})
	if d := r.Dropped(); d != 0 {
		t.Fatalf("the skip to the new keyframe counted %d drops", d)
	}
	last := map[*Track]time.Duration{v1: old[2].PTS, a1: old[3].PTS}
	for _, u := range got {
		prev := last[v1]
		if u.Track == a2 {
			prev = last[a1]
		}
		if u.PTS <= prev || u.DTS <= prev {
			t.Fatalf("%v: PTS %v DTS %v not after the previous publisher's %v", describe([]*Unit{u}), u.PTS, u.DTS, prev)
		}
	}
	// The gap in the timestamps is the time that passed: the old units
	// were all written at once, at the origin, and the new ones after the
	// pause.
	if got[0].PTS < pause {
		t.Fatalf("the new publisher's first unit is at %v on the stream clock, expected after the %v pause", got[0].PTS, pause)
	}
	// Within the new publisher, timing is kept.
	if d := got[1].PTS - got[0].PTS; d != 33*time.Millisecond {
		t.Fatalf("new publisher's keyframe %v after its first audio unit, expected 33ms as written", d)
	}
	r.Close()
}

type closeCounter struct{ closed *atomic.Int32 }

func (*closeCounter) Process(*Unit) error { return nil }
func (c *closeCounter) Close()            { c.closed.Add(1) }

// TestRepublishAheadOfWallClock: a publisher whose timestamps ran ahead of
// the wall clock (it sent faster than real time) still gets followed by
// increasing timestamps on every track, even when the new publisher's
// tracks start skewed.
func TestRepublishAheadOfWallClock(t *testing.T) {
	reg := graceRegistry(time.Minute)
	v1, a1 := h264Track(), aacTrack()
	first := publishTracks(t, reg, "live/fast", "one", v1, a1)
	writeAll(first, idr(v1, 0), aunit(a1, 1), vunit(v1, 10_000, false), aunit(a1, 9_000)) // 10 s in no time
	r := newTestReader(t, first, 0)
	first.Close()
	second, err := reg.Publish("live/fast", "two")
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	v2, a2 := h264Track(), aacTrack()
	if err := second.SetTracks(v2, a2); err != nil {
		t.Fatal(err)
	}
	// Video first at 500 ms, then audio from 0: audio must still come
	// after the previous audio.
	k, a := idr(v2, 500), aunit(a2, 0)
	writeAll(second, k, a, aunit(a2, 21), vunit(v2, 533, false))
	got := readQueued(t, r)
	if len(got) != 4 {
		t.Fatalf("got %v", describe(got))
	}
	if k.PTS <= 10*time.Second || a.PTS <= 9*time.Second {
		t.Fatalf("video at %v after 10s, audio at %v after 9s: timestamps went back", k.PTS, a.PTS)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Track == got[i-1].Track && got[i].PTS <= got[i-1].PTS {
			t.Fatalf("unit %d: %v", i, describe(got))
		}
	}
}

// TestGraceExpires: without a new publisher the stream ends when the grace
// runs out, and leaves the registry.
func TestGraceExpires(t *testing.T) {
	reg := graceRegistry(50 * time.Millisecond)
	v := h264Track()
	p := publishTracks(t, reg, "live/gone", "one", v)
	s := p.Stream
	r := newTestReader(t, p, 0)
	k := idr(v, 0)
	p.Write(k)
	start := time.Now()
	p.Close()
	expectOpen(t, s)
	expectUnits(t, "queued", readN(t, r, 1), []*Unit{k})
	if err := readErr(t, r); !errors.Is(err, ErrStreamEnded) {
		t.Fatalf("Read after the grace: %v, expected ErrStreamEnded", err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("stream ended %v after the publisher left, expected the 50ms grace", d)
	}
	<-s.Done()
	if _, ok := reg.Get("live/gone"); ok {
		t.Fatal("ended stream still registered")
	}
	if _, err := s.NewReader(ReaderOptions{}); !errors.Is(err, ErrStreamEnded) {
		t.Fatalf("NewReader on the ended stream: %v", err)
	}
	again, err := reg.Publish("live/gone", "two")
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.Stream == s {
		t.Fatal("Publish after the end got the ended stream")
	}
}

// TestGraceNotExtended: a publisher that attaches within the grace and
// leaves before declaring tracks does not extend it; a publisher that never
// declared tracks gets no grace at all.
func TestGraceNotExtended(t *testing.T) {
	reg := graceRegistry(time.Hour)
	p := publishTracks(t, reg, "live/x", "one", h264Track())
	s := p.Stream
	p.Close()
	s.mu.Lock()
	until := s.graceUntil
	s.mu.Unlock()
	q, err := reg.Publish("live/x", "two")
	if err != nil {
		t.Fatal(err)
	}
	q.Close() // no SetTracks
	expectOpen(t, s)
	s.mu.Lock()
	if !s.graceUntil.Equal(until) || s.graceTimer == nil {
		t.Errorf("grace until %v (timer %v) after a publisher without tracks left, expected %v", s.graceUntil, s.graceTimer != nil, until)
	}
	s.mu.Unlock()

	// A shorter grace (a reload, a shutdown) applies when the next one leaves.
	reg.SetGrace(func(string) time.Duration { return 0 })
	q, err = reg.Publish("live/x", "four")
	if err != nil {
		t.Fatal(err)
	}
	q.Close()
	select {
	case <-s.Done():
	default:
		t.Fatal("stream still waiting after the grace became 0")
	}
	reg.SetGrace(func(string) time.Duration { return time.Hour })

	lone, err := reg.Publish("live/never", "three")
	if err != nil {
		t.Fatal(err)
	}
	lone.Close()
	select {
	case <-lone.Done():
	default:
		t.Fatal("a stream that never had tracks waits for its publisher")
	}
	if _, ok := reg.Get("live/never"); ok {
		t.Fatal("still registered")
	}
}

// TestIncompatibleRepublish: a new publisher with other codecs ends the
// readers, after what is queued for them, with an error naming both; the
// stream goes on for new readers.
func TestIncompatibleRepublish(t *testing.T) {
	for name, tracks := range map[string]func() []*Track{
		"other codec":   func() []*Track { return []*Track{h264Track(), {Codec: Opus{Channels: 2}}} },
		"fewer tracks":  func() []*Track { return []*Track{h264Track()} },
		"swapped order": func() []*Track { return []*Track{aacTrack(), h264Track()} },
	} {
		t.Run(name, func(t *testing.T) {
			reg := graceRegistry(time.Minute)
			v1, a1 := h264Track(), aacTrack()
			first := publishTracks(t, reg, "live/inc", "one", v1, a1)
			s := first.Stream
			r := newTestReader(t, first, 0)
			var closed atomic.Int32
			release := addProc(t, s, a1, "opus", func(*Track) Processor { return &closeCounter{closed: &closed} })
			defer release()
			k := idr(v1, 0)
			first.Write(k)
			first.Close()

			second, err := reg.Publish("live/inc", "two")
			if err != nil {
				t.Fatal(err)
			}
			defer second.Close()
			newTracks := tracks()
			if err := second.SetTracks(newTracks...); err != nil {
				t.Fatal(err)
			}
			expectUnits(t, "queued", readN(t, r, 1), []*Unit{k})
			err = readErr(t, r)
			if !errors.Is(err, ErrIncompatibleRepublish) {
				t.Fatalf("Read: %v, expected ErrIncompatibleRepublish", err)
			}
			want := codecNames(newTracks)
			for _, part := range []string{`"live/inc"`, "two", want, "[H264 AAC]"} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not say %s", err, part)
				}
			}
			if closed.Load() != 1 || s.ProcessorErrors(1, "opus") != 0 || len(s.processors) != 0 {
				t.Errorf("the old track's processor: closed %d times, %d left", closed.Load(), len(s.processors))
			}
			release() // no effect now
			// A reader negotiated for the old tracks (a WHEP viewer whose
			// ICE completes only now) is refused the old audio track's
			// processor; its constructor is never given a track that is gone.
			if _, err := s.AddProcessor(a1, "opus", func(*Track) Processor {
				t.Error("constructor called for a track that is gone")
				return nil
			}); !errors.Is(err, ErrNoTrack) {
				t.Errorf("AddProcessor for the old audio track: %v, expected ErrNoTrack", err)
			}

			expectOpen(t, s)
			fresh := newTestReader(t, second, 0)
			u := &Unit{Track: newTracks[0], Key: true, NALUs: [][]byte{{0x65}}, Data: nil}
			if !newTracks[0].IsVideo() {
				u = aunit(newTracks[0], 0)
			}
			second.Write(u)
			expectUnits(t, "new reader", readQueued(t, fresh), []*Unit{u})
		})
	}
}

// TestRepublishReusedTracks: a new publisher must declare its own tracks.
func TestRepublishReusedTracks(t *testing.T) {
	reg := graceRegistry(time.Minute)
	v := h264Track()
	first := publishTracks(t, reg, "live/reuse", "one", v)
	first.Close()
	second, err := reg.Publish("live/reuse", "two")
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if err := second.SetTracks(v); err == nil {
		t.Fatal("SetTracks with the previous publisher's track succeeded")
	}
	if err := second.SetTracks(h264Track()); err != nil {
		t.Fatal(err)
	}
	if err := first.SetTracks(h264Track()); err == nil {
		t.Fatal("SetTracks of a publication that left succeeded")
	}
}

// TestBlockedReaderSurvivesRepublish: a reader blocked in Read while the
// publisher is away gets the new publisher's units.
func TestBlockedReaderSurvivesRepublish(t *testing.T) {
	reg := graceRegistry(time.Minute)
	first := publishTracks(t, reg, "live/block", "one", h264Track())
	r := newTestReader(t, first, 0)
	first.Close()
	got := make(chan *Unit, 1)
	go func() {
		u, err := r.Read(context.Background())
		if err != nil {
			t.Errorf("Read: %v", err)
		}
		got <- u
	}()
	time.Sleep(10 * time.Millisecond)
	second, err := reg.Publish("live/block", "two")
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	v := h264Track()
	if err := second.SetTracks(v); err != nil {
		t.Fatal(err)
	}
	k := idr(v, 0)
	second.Write(k)
	select {
	case u := <-got:
		if u != k {
			t.Fatalf("got %v", describe([]*Unit{u}))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocked reader got nothing from the new publisher")
	}
}

// TestRepublishShiftsRTP: an RTP publisher's packets (WHIP) move with the
// unit's timestamps onto the stream clock.
func TestRepublishShiftsRTP(t *testing.T) {
	reg := graceRegistry(time.Minute)
	first := publishTracks(t, reg, "live/rtp", "one", &Track{Codec: Opus{Channels: 2}})
	a := first.Tracks()[0]
	old := aunit(a, 1000)
	first.Write(old)
	first.Close()
	second, err := reg.Publish("live/rtp", "two")
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	b := &Track{Codec: Opus{Channels: 2}}
	if err := second.SetTracks(b); err != nil {
		t.Fatal(err)
	}
	u := aunit(b, 0)
	u.RTP = []*rtp.Packet{{Header: rtp.Header{Timestamp: 0}}, {Header: rtp.Header{Timestamp: 960}}}
	second.Write(u)
	if u.PTS <= old.PTS {
		t.Fatalf("PTS %v after %v", u.PTS, old.PTS)
	}
	want := uint32(ClockTicks(u.PTS, 48000))
	if got := u.RTP[0].Timestamp; got != want || u.RTP[1].Timestamp != want+960 {
		t.Fatalf("packet timestamps %d, %d; expected %d (the shifted PTS at 48 kHz) and 960 more", got, u.RTP[1].Timestamp, want)
	}
}
