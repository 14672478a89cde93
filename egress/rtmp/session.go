package rtmp

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/wishbridge/bridge/internal/rtmpwire"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
)

// sendFunc sends one RTMP message (rtmpwire.TypeAudio, rtmpwire.TypeVideo or rtmpwire.TypeDataAMF0) at
// timestamp ts (ms) on the media message stream. payload is only read
// during the call.
type sendFunc func(typeID uint8, ts uint32, payload []byte) error

// flvOut turns a stream's units into the RTMP messages of one push or
// play: metadata and sequence headers first, then FLV tags from a keyframe
// on, with timestamps in ms from the first unit sent. Used by one
// goroutine.
type flvOut struct {
	send         sendFunc
	setDataFrame bool // push: "@setDataFrame" in front of onMetaData
	tracks       func() []*media.Track
	aacBitrate   int // for onMetaData, 0: not announced

	videoID, audioID int   // the track IDs sent; -1: none
	tsOffset         int64 // ms added to every timestamp (tests: extended timestamps)

	started bool
	base    time.Duration // DTS of the first unit sent: timestamp 0
	last    [2]int64      // per kind (0 video, 1 audio): last timestamp sent, ms
	sent    [2]bool       // per kind: something was sent
	sps     []byte        // in the AVC sequence header sent last
	pps     []byte
	asc     []byte // in the AAC sequence header sent last
	buf     []byte // tag scratch
	frames  [2]uint64
	bytes   uint64 // the video and audio frames' tag bodies sent
}

// newFLVOut picks the tracks RTMP can carry: the first H.264 track and the
// first AAC track. It fails if there is neither. skipped names the tracks
// left out, for the caller's log.
func newFLVOut(st *media.Stream, send sendFunc, setDataFrame bool) (o *flvOut, skipped []string, err error) {
	o = &flvOut{send: send, setDataFrame: setDataFrame, tracks: st.Tracks, videoID: -1, audioID: -1}
	tracks := st.Tracks()
	for _, t := range tracks {
		switch t.Codec.(type) {
		case media.H264:
			if o.videoID < 0 {
				o.videoID = t.ID
				continue
			}
		case media.AAC:
			if o.audioID < 0 {
				o.audioID = t.ID
				continue
			}
		}
		skipped = append(skipped, t.String())
	}
	if o.videoID < 0 && o.audioID < 0 {
		return nil, skipped, fmt.Errorf("stream %q has no track RTMP can carry (H.264 video, AAC audio): it has %s", st.Path(), codecList(tracks))
	}
	return o, skipped, nil
}

func codecList(tracks []*media.Track) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, t := range tracks {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(t.Codec.Name())
	}
	b.WriteByte(']')
	return b.String()
}

// run sends the reader's units until an error: the reader's (the stream
// ended, ctx) or the peer's.
func (o *flvOut) run(ctx context.Context, r *media.Reader) error {
	for {
		u, err := r.Read(ctx)
		if err != nil {
			return err
		}
		if err := o.write(u); err != nil {
			return err
		}
	}
}

// write sends one unit, starting the output on the first video keyframe
// (or, for a stream without video, on the first audio unit).
func (o *flvOut) write(u *media.Unit) error {
	switch u.Track.ID {
	case o.videoID:
		if _, ok := u.Track.Codec.(media.H264); !ok {
			return nil
		}
		if !o.started {
			if !u.Key {
				return nil
			}
			if err := o.start(u); err != nil {
				return err
			}
		}
		return o.writeVideo(u)
	case o.audioID:
		if _, ok := u.Track.Codec.(media.AAC); !ok {
			return nil
		}
		if !o.started {
			if o.videoID >= 0 {
				return nil // audio waits for the first keyframe
			}
			if err := o.start(u); err != nil {
				return err
			}
		}
		return o.writeAudio(u)
	}
	return nil
}

// start sends onMetaData and the sequence headers at timestamp 0.
func (o *flvOut) start(first *media.Unit) error {
	o.started = true
	o.base = first.DTS
	info := streamInfo{aacBitrate: o.aacBitrate / 1000}
	tracks := o.tracks()
	if o.videoID >= 0 {
		o.sps, o.pps = paramSets(first)
		info.videoInfo(o.sps)
	}
	if o.audioID >= 0 && o.audioID < len(tracks) {
		if c, ok := tracks[o.audioID].Codec.(media.AAC); ok {
			o.asc = c.Config
			info.audioInfo(o.asc)
		}
	}
	ts := uint32(o.tsOffset)
	if err := o.send(rtmpwire.TypeDataAMF0, ts, metadata(o.setDataFrame, info)); err != nil {
		return err
	}
	if o.videoID >= 0 && o.sps != nil {
		tag, err := avcSequenceHeader(o.sps, o.pps)
		if err != nil {
			return err
		}
		if err := o.send(rtmpwire.TypeVideo, ts, tag); err != nil {
			return err
		}
	}
	if o.asc != nil {
		if err := o.send(rtmpwire.TypeAudio, ts, aacSequenceHeader(o.asc)); err != nil {
			return err
		}
	}
	return nil
}

// paramSets returns the SPS and PPS of an H.264 unit: those in front of an
// IDR (the hub puts the current ones there), else the track's.
func paramSets(u *media.Unit) (sps, pps []byte) {
leading:
	for _, n := range u.NALUs {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			if sps == nil {
				sps = n
			}
		case h264.NALUTypePPS:
			if pps == nil {
				pps = n
			}
		default:
			break leading
		}
	}
	if c, ok := u.Track.Codec.(media.H264); ok {
		if sps == nil {
			sps = c.SPS
		}
		if pps == nil {
			pps = c.PPS
		}
	}
	return sps, pps
}

// ms converts a stream time to an output timestamp in ms (rounded), or
// false if it is before the first unit sent.
func (o *flvOut) ms(d time.Duration) (int64, bool) {
	d -= o.base
	if d < 0 {
		return 0, false
	}
	return o.tsOffset + int64((d+time.Millisecond/2)/time.Millisecond), true
}

// stamp returns the timestamp of a unit of kind k (0 video, 1 audio) at
// dts: never before the last one of its kind (FLV needs non-decreasing
// timestamps per track; a source that steps back a little is evened out).
func (o *flvOut) stamp(k int, dts time.Duration) (int64, bool) {
	ts, ok := o.ms(dts)
	if !ok {
		return 0, false
	}
	if o.sent[k] && ts < o.last[k] {
		ts = o.last[k]
	}
	o.last[k], o.sent[k] = ts, true
	return ts, true
}

func (o *flvOut) writeVideo(u *media.Unit) error {
	ts, ok := o.stamp(0, u.DTS)
	if !ok {
		return nil
	}
	if u.Key {
		// New parameter sets (an encoder restart, a new publisher): a new
		// sequence header before the keyframe that uses them.
		if sps, pps := paramSets(u); sps != nil && pps != nil && (!bytes.Equal(sps, o.sps) || !bytes.Equal(pps, o.pps)) {
			tag, err := avcSequenceHeader(sps, pps)
			if err != nil {
				return err
			}
			if err := o.send(rtmpwire.TypeVideo, uint32(ts), tag); err != nil {
				return err
			}
			o.sps, o.pps = sps, pps
		}
	}
	// Composition time: PTS - DTS, from the rounded timestamps so that the
	// player's PTS is exactly the rounded source PTS. Never negative (a
	// frame shown before it is decoded is a broken source).
	var cts int64
	if pts, ok := o.ms(u.PTS); ok && pts > ts {
		cts = min(pts-ts, 1<<23-1)
	}
	o.buf = appendVideoTag(o.buf[:0], u.Key, int32(cts), u.NALUs)
	if err := o.send(rtmpwire.TypeVideo, uint32(ts), o.buf); err != nil {
		return err
	}
	o.frames[0]++
	o.bytes += uint64(len(o.buf))
	return nil
}

func (o *flvOut) writeAudio(u *media.Unit) error {
	ts, ok := o.stamp(1, u.DTS)
	if !ok {
		return nil
	}
	if c := u.Track.Codec.(media.AAC); !bytes.Equal(c.Config, o.asc) && len(c.Config) > 0 {
		if err := o.send(rtmpwire.TypeAudio, uint32(ts), aacSequenceHeader(c.Config)); err != nil {
			return err
		}
		o.asc = c.Config
	}
	o.buf = appendAudioTag(o.buf[:0], u.Data)
	if err := o.send(rtmpwire.TypeAudio, uint32(ts), o.buf); err != nil {
		return err
	}
	o.frames[1]++
	o.bytes += uint64(len(o.buf))
	return nil
}

// source returns the stream to send for st: st itself, or its AAC view when
// it has Opus audio (RTMP carries AAC only), and the function releasing
// it. When Opus cannot be transcoded it returns st, whose Opus tracks the
// output leaves out, and logs why.
func source(st *media.Stream, views *transcode.AACViews, bitrate int, log *slog.Logger) (*media.Stream, func()) {
	if !transcode.NeedsAAC(st.Tracks()) {
		return st, func() {}
	}
	v, release, err := views.Acquire(st, bitrate)
	if err != nil {
		log.Warn("Opus audio not sent: it cannot be transcoded to AAC", "err", err)
		return st, func() {}
	}
	return v, release
}
