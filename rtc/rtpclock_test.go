package rtc

import (
	"slices"
	"testing"
)

// sent applies c to a sequence of units given as (source timestamp,
// cached) and returns the timestamps sent.
func sent(c *rtpClock, units ...struct {
	src    uint32
	cached bool
}) []uint32 {
	var out []uint32
	for _, u := range units {
		out = append(out, u.src+c.adjust(u.src, u.cached))
	}
	return out
}

type u = struct {
	src    uint32
	cached bool
}

func TestRTPClockLive(t *testing.T) {
	c := &rtpClock{offset: 1000}
	// Live units keep their spacing and order, B-frames included.
	got := sent(c, u{0, false}, u{9000, false}, u{3000, false}, u{6000, false})
	if want := []uint32{1000, 10000, 4000, 7000}; !slices.Equal(got, want) {
		t.Fatalf("sent %v, expected %v", got, want)
	}
}

// TestRTPClockJoin: the cached GOP goes one tick apart from the viewer's
// first timestamp, and live continues from the last cached unit with the
// source's spacing.
func TestRTPClockJoin(t *testing.T) {
	c := &rtpClock{offset: 0xffff_fffe} // wraps during the test
	// A 4 s GOP at 30 fps (3000 ticks a frame), the last cached frame at
	// 120*3000, then live frames.
	var units []u
	for i := range 121 {
		units = append(units, u{uint32(i * 3000), true})
	}
	units = append(units, u{121 * 3000, false}, u{122 * 3000, false})
	got := sent(c, units...)
	for i := 1; i <= 120; i++ {
		if got[i]-got[i-1] != 1 {
			t.Fatalf("cached unit %d sent %d ticks after the previous one, expected 1", i, got[i]-got[i-1])
		}
	}
	if d := got[121] - got[120]; d != 3000 {
		t.Fatalf("first live unit %d ticks after the last cached one, expected the source's 3000", d)
	}
	if d := got[122] - got[121]; d != 3000 {
		t.Fatalf("live spacing %d", d)
	}
	// The whole GOP takes 120 ticks (1.3 ms) of the viewer's clock, not 4 s.
	if span := got[120] - got[0]; span != 120 {
		t.Fatalf("cached GOP spans %d ticks", span)
	}
}

// TestRTPClockReplay: a GOP replayed mid-session goes right after the last
// timestamp sent, and live units keep their offset.
func TestRTPClockReplay(t *testing.T) {
	c := &rtpClock{offset: 500}
	got := sent(c,
		u{0, false}, u{3000, false}, u{6000, false}, // live
		u{0, true}, u{3000, true}, u{6000, true}, // the GOP again
		u{9000, false}, u{12000, false}, // live goes on
	)
	want := []uint32{500, 3500, 6500, 6501, 6502, 6503, 9500, 12500}
	if !slices.Equal(got, want) {
		t.Fatalf("sent %v, expected %v", got, want)
	}
	// A replay longer than the gap to the next frame pushes live later,
	// never back.
	c = &rtpClock{offset: 0}
	units := []u{{0, false}, {3, false}}
	for range 10 {
		units = append(units, u{0, true})
	}
	units = append(units, u{6, false}, u{9, false})
	got = sent(c, units...)
	for i := 1; i < len(got); i++ {
		if !after(got[i], got[i-1]) {
			t.Fatalf("timestamp %d (%d) not after %d: %v", i, got[i], got[i-1], got)
		}
	}
	if got[len(got)-1]-got[len(got)-2] != 3 {
		t.Fatalf("live spacing lost after the bump: %v", got)
	}
}

// TestRTPClockNoCache: with no cached units the clock is the plain
// offset.
func TestRTPClockNoCache(t *testing.T) {
	c := &rtpClock{offset: 7}
	if got := sent(c, u{100, false}, u{200, false}); !slices.Equal(got, []uint32{107, 207}) {
		t.Fatalf("sent %v", got)
	}
}
