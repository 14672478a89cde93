package media

import "time"

// Conversions between stream time (a time.Duration) and a codec's clock
// (ticks at a rate per second: 90 kHz for video, the sample rate for
// audio). They are the only ones: the hub, the processors, the RTP senders
// and the ingests all use them, so a time that came from a clock converts
// back to exactly the tick it came from.

// ClockTicks returns d on a clock of rate ticks per second, rounded to the
// nearest tick, without overflowing for any Duration: whole seconds and the
// non-negative remainder are scaled separately.
func ClockTicks(d time.Duration, rate int) int64 {
	secs, rem := int64(d/time.Second), int64(d%time.Second)
	if rem < 0 {
		secs--
		rem += int64(time.Second)
	}
	r := int64(rate)
	return secs*r + (rem*r+int64(time.Second)/2)/int64(time.Second)
}

// TicksDuration returns ticks on a clock of rate ticks per second as a
// stream time, truncated to the nanosecond (toward zero), so that
// ClockTicks gives the ticks back (a tick is far longer than 1 ns).
func TicksDuration(ticks int64, rate int) time.Duration {
	r := int64(rate)
	return time.Duration(ticks/r)*time.Second + time.Duration(ticks%r)*time.Second/time.Duration(r)
}

// RTPTimestamp converts a stream time to t's RTP clock (Codec.ClockRate:
// 90 kHz for H264, 48 kHz for Opus), rounded to the nearest tick (see
// ClockTicks: 1/30 s is 3000 ticks, not 2999). Negative times and times
// past 2^32 ticks wrap modulo 2^32 as RTP timestamps do.
func RTPTimestamp(t *Track, pts time.Duration) uint32 {
	return uint32(ClockTicks(pts, t.Codec.ClockRate()))
}
