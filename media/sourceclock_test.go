package media

import (
	"testing"
	"time"
)

// TestSourceClock: timestamps are unwrapped (32 and 33 bits), follow
// reordering and real pauses, and a step that the time between arrivals
// does not explain is a discontinuity, continued from the highest time
// returned plus the time that passed, at least a frame.
func TestSourceClock(t *testing.T) {
	t0 := time.Now()
	c := SourceClock{Rate: 90000}
	c.Start(0xffffff00, 10*time.Millisecond+3, t0) // rounds to a whole tick
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tk := func(n int64) time.Duration { return time.Duration(n) * time.Second / 90000 }
	ms10 := 10 * time.Millisecond
	steps := []struct {
		ts     uint64
		ms     int // arrival
		want   time.Duration
		jumped bool
	}{
		{0xffffff00 + 3000, 33, ms10 + tk(3000), false},
		{0x100 - 56 + 3000, 66, ms10 + tk(3456), false},  // across the wrap
		{0xffffff00, 70, ms10, false},                    // reordered, back to the start
		{0xffffff00 + 6000, 100, ms10 + tk(6000), false}, // a frame is now 6000 ticks
		// A jump: the highest time so far plus a frame.
		{0xffffff00 + 6000 + 1<<31 - 1, 101, ms10 + tk(12000), true},
		// A real pause: 30 s of timestamps over 30 s.
		{0xffffff00 + 6000 + 1<<31 - 1 + 30*90000, 30101, ms10 + tk(12000) + 30*time.Second, false},
		// A step of one frame after 30 s of silence: 30 s later.
		{0xffffff00 + 12000 + 1<<31 - 1 + 30*90000, 60101, ms10 + tk(12000) + 60*time.Second, true},
		// A jump after 30 s of silence: 30 s later too.
		{0x1234, 90101, ms10 + tk(12000) + 90*time.Second, true},
	}
	for i, s := range steps {
		got, jumped := c.Time(s.ts, at(s.ms))
		if got != s.want || jumped != s.jumped {
			t.Errorf("step %d: ts %#x at %d ms: %v jumped %v, want %v jumped %v", i, s.ts, s.ms, got, jumped, s.want, s.jumped)
		}
	}

	// MPEG-TS: 33 bits.
	ts := SourceClock{Rate: 90000, Bits: 33}
	ts.Start(1<<33-100, 0, t0)
	if got, jumped := ts.Time(200, at(3)); jumped || got != tk(300) {
		t.Errorf("33-bit wrap: %v jumped %v, want %v", got, jumped, tk(300))
	}
}

// TestSourceClockHostile: a sender stepping its clock by 2^31 ticks per
// packet (6.6 hours at 90 kHz) gets a stream clock that stays monotonic
// and advances one frame per packet; one stepping just within the bound
// forever is held at maxSourceTime, never overflows.
func TestSourceClockHostile(t *testing.T) {
	t0 := time.Now()
	c := SourceClock{Rate: 90000}
	c.Start(0, 0, t0)
	var ts uint64
	last := time.Duration(0)
	const packets = 500000 // beyond the 386,000 that overflowed
	for i := 1; i <= packets; i++ {
		ts += 1 << 31
		got, jumped := c.Time(ts, t0)
		if !jumped || got <= last {
			t.Fatalf("packet %d: %v jumped %v after %v", i, got, jumped, last)
		}
		last = got
	}
	if want := packets * defaultFrameStep; last != want {
		t.Errorf("after %d jumps: %v, want %v", packets, last, want)
	}

	c.ext = c.ticks(maxSourceTime) - 1
	for range 3 {
		ts += uint64(c.ticks(MaxTimestampJump))
		if got, jumped := c.Time(ts, t0); jumped || got != maxSourceTime {
			t.Errorf("near the limit: %v jumped %v, want %v", got, jumped, maxSourceTime)
		}
	}
}
