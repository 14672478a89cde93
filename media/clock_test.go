package media

import (
	"math"
	"math/big"
	"testing"
	"time"
)

func TestRTPTimestamp(t *testing.T) {
	video, audio := &Track{Codec: H264{}}, &Track{Codec: Opus{}}
	const frameDuration = time.Second / 30
	cases := []struct {
		track *Track
		pts   time.Duration
		want  uint32
	}{
		{video, 0, 0},
		{video, time.Second, 90000},
		{video, frameDuration, 3000}, // 33333333 ns: rounded, not truncated to 2999
		{video, 299 * time.Second / 30, 299 * 3000},
		{video, -frameDuration, 1<<32 - 3000},
		{video, -time.Nanosecond, 0},
		{video, -6 * time.Microsecond, 1<<32 - 1}, // -0.54 ticks
		{video, 5555 * time.Nanosecond, 0},        // 0.49995 ticks
		{video, 5556 * time.Nanosecond, 1},        // 0.50004 ticks
		{audio, 20 * time.Millisecond, 960},
		{audio, -6500 * time.Microsecond, 1<<32 - 312},
		{video, 13 * time.Hour, uint32(13 * 3600 * 90000 % (1 << 32))}, // past 2^32 ticks
		{video, 1000 * time.Hour, uint32(1000 * 3600 * 90000 % (1 << 32))},
	}
	for _, tc := range cases {
		if got := RTPTimestamp(tc.track, tc.pts); got != tc.want {
			t.Errorf("RTPTimestamp(%s, %v) = %d, expected %d", tc.track.Codec.Name(), tc.pts, got, tc.want)
		}
	}

	// Against exact arithmetic, over the whole Duration range.
	ref := func(d time.Duration, rate int64) uint32 {
		// floor((d*rate + 5e8) / 1e9) mod 2^32
		n := new(big.Int).Mul(big.NewInt(int64(d)), big.NewInt(rate))
		n.Add(n, big.NewInt(5e8))
		q, m := new(big.Int), new(big.Int)
		q.DivMod(n, big.NewInt(1e9), m) // Euclidean: floor for a positive divisor
		return uint32(new(big.Int).And(q, big.NewInt(math.MaxUint32)).Uint64())
	}
	for _, d := range []time.Duration{math.MaxInt64, math.MinInt64, math.MaxInt64 / 3, -math.MaxInt64 / 7, 1<<62 + 12345, -(1<<40 + 1)} {
		for _, track := range []*Track{video, audio} {
			if got, want := RTPTimestamp(track, d), ref(d, int64(track.Codec.ClockRate())); got != want {
				t.Errorf("RTPTimestamp(%s, %d) = %d, expected %d", track.Codec.Name(), int64(d), got, want)
			}
		}
	}
}

func TestTicksToTime(t *testing.T) {
	for _, ticks := range []int64{0, 1, 2999, 3000, 89999, 90000, -1, -3000, 1 << 40, -(1 << 40)} {
		if got := ClockTicks(TicksDuration(ticks, 90000), 90000); got != ticks {
			t.Errorf("%d ticks -> %v -> %d", ticks, TicksDuration(ticks, 90000), got)
		}
	}
}
