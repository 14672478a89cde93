package rtc

// rtpClock rewrites the RTP timestamps of one track for one viewer. Live
// units keep their spacing: a packet's timestamp plus an offset (random at
// first, RFC 3550 5.1). Units from the hub's GOP cache (a join, or the
// answer to a keyframe request) are sent at once and get consecutive
// timestamps one tick apart, ending just before the live units:
//
//   - At a join, the viewer's first unit is the cached IDR. A WebRTC
//     receiver maps the first timestamp it gets to the moment it arrives
//     and plays the rest out on that mapping; with the original
//     timestamps it would play the whole cached GOP in real time, behind
//     live by the GOP's age for as long as the session lasts (libwebrtc
//     resets its timing only for a frame whose render time is more than
//     10 s off, see FrameHasBadRenderTiming). With one tick between them,
//     the decoder decodes the cached frames as fast as it can and only the
//     last is due for display, so the viewer sees the live picture as soon
//     as the burst is decoded, and its playout clock is anchored at the
//     live edge: no more latency than a viewer who joined at a keyframe.
//     The first live unit then continues from the last cached one with the
//     source's spacing, and the offset stays so from then on.
//   - For a keyframe request answered from the cache, the viewer's clock
//     is already anchored: the replayed GOP goes in one-tick steps right
//     after the last timestamp sent, in the gap before the next live
//     frame, and live units keep their offset (bumped only if the replay
//     were longer than that gap, which takes thousands of frames).
//
// Timestamps are compared in RTP (serial number) order. Cached units are
// video, whose packets share their unit's timestamp; the zero value is not
// ready: set offset.
type rtpClock struct {
	offset  uint32 // added to a live unit's packet timestamps
	started bool   // a unit was sent
	live    bool   // a live unit was sent: offset is settled
	catchUp bool   // cached units were sent since the last live one
	last    uint32 // the latest timestamp sent
	lastSrc uint32 // the source timestamp of the last cached unit sent
}

// adjust returns what to add to the packet timestamps of a unit whose first
// packet has timestamp src; cached says it came from the GOP cache.
func (c *rtpClock) adjust(src uint32, cached bool) uint32 {
	var out uint32
	switch {
	case !c.started:
		out = src + c.offset
	case cached:
		out = c.last + 1
	case !c.live: // the first live unit after the joining GOP
		c.offset = c.last - c.lastSrc
		out = src + c.offset
	default:
		out = src + c.offset
	}
	if !cached && c.catchUp && !after(out, c.last) {
		c.offset += c.last + 1 - out
		out = c.last + 1
	}
	if !c.started || after(out, c.last) {
		c.last = out
	}
	c.started = true
	if cached {
		c.lastSrc = src
		c.catchUp = true
	} else {
		c.live = true
		c.catchUp = false
	}
	return out - src
}

// after reports whether RTP timestamp a comes after b.
func after(a, b uint32) bool { return int32(a-b) > 0 }
