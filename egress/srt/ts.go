package srt

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/substructs"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
)

// MPEG-TS muxing with mediacommon's Writer (astits underneath).

const (
	// tsPacketSize is one MPEG-TS packet.
	tsPacketSize = 188
	// payloadSize is an SRT payload: 7 TS packets, what every SRT tool
	// sends (ffmpeg's pkt_size=1316, srt-live-transmit).
	payloadSize = 7 * tsPacketSize
	// tsStart is the first unit's timestamp on the 90 kHz clock. The
	// Writer puts the PCR 100 ms before the DTS, which must not be
	// negative; ffmpeg's muxer starts at 1.4 s for the same reason.
	tsStart = 90000
	// tsMask keeps a timestamp to its 33 bits (it wraps after 26.5 h).
	tsMask = 1<<33 - 1
)

// packetizer cuts the TS byte stream into SRT payloads: full 1316-byte
// payloads as they fill, and what is left (whole TS packets) when flushed
// at the end of each access unit, so a frame leaves at once instead of
// waiting for the next one to fill its last payload.
type packetizer struct {
	send func([]byte) error
	buf  []byte
	err  error // the first send error: the muxer is done once it fails
}

func (p *packetizer) Write(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	p.buf = append(p.buf, b...)
	for len(p.buf) >= payloadSize && p.err == nil {
		p.err = p.send(p.buf[:payloadSize])
		p.buf = p.buf[:copy(p.buf, p.buf[payloadSize:])]
	}
	return len(b), p.err
}

func (p *packetizer) flush() error {
	if p.err == nil && len(p.buf) > 0 {
		p.err = p.send(p.buf)
		p.buf = p.buf[:0]
	}
	return p.err
}

// tsOut turns a stream's units into MPEG-TS in SRT payloads: H.264 (an AUD
// in front of every access unit, SPS and PPS in front of every IDR, as the
// hub has them) or H.265, and AAC in ADTS or Opus; one PES per unit; PCR
// on the video PID. It starts at the first video keyframe (or, without
// video, the first audio unit), with timestamps from tsStart on. Used by
// one goroutine.
type tsOut struct {
	pk *packetizer
	w  *mpegts.Writer

	videoID, audioID int // source track IDs; -1: none
	video, audio     *mpegts.Track
	h265, opus       bool
	aac              *codecs.MPEG4Audio // the audio codec, updated when the stream's AudioSpecificConfig changes
	asc              []byte

	started bool
	base    time.Duration
	frames  [2]uint64
}

// newTSOut picks the first H.264 or H.265 track and the first AAC or Opus
// track of st. It fails if there is neither. skipped names the tracks left
// out.
func newTSOut(st *media.Stream, send func([]byte) error) (o *tsOut, skipped []string, err error) {
	o = &tsOut{pk: &packetizer{send: send}, videoID: -1, audioID: -1}
	var tracks []*mpegts.Track
	for _, t := range st.Tracks() {
		switch c := t.Codec.(type) {
		case media.H264, media.H265:
			if o.videoID < 0 {
				o.videoID = t.ID
				_, o.h265 = c.(media.H265)
				if o.h265 {
					o.video = &mpegts.Track{Codec: &codecs.H265{}}
				} else {
					o.video = &mpegts.Track{Codec: &codecs.H264{}}
				}
				tracks = append(tracks, o.video)
				continue
			}
		case media.AAC:
			if o.audioID < 0 {
				var asc mpeg4audio.AudioSpecificConfig
				if err := asc.Unmarshal(c.Config); err != nil {
					skipped = append(skipped, fmt.Sprintf("%s: AudioSpecificConfig: %v", t, err))
					continue
				}
				o.audioID, o.asc = t.ID, c.Config
				o.aac = &codecs.MPEG4Audio{Config: asc}
				o.audio = &mpegts.Track{Codec: o.aac}
				tracks = append(tracks, o.audio)
				continue
			}
		case media.Opus:
			if o.audioID < 0 {
				o.audioID, o.opus = t.ID, true
				ch := c.Channels
				if ch < 1 || ch > 2 {
					ch = 2
				}
				o.audio = &mpegts.Track{Codec: &codecs.Opus{Desc: &substructs.OpusAudioDescriptor{ChannelConfigCode: uint8(ch)}}}
				tracks = append(tracks, o.audio)
				continue
			}
		}
		skipped = append(skipped, t.String())
	}
	if len(tracks) == 0 {
		return nil, skipped, fmt.Errorf("stream %q has no track MPEG-TS can carry here (H.264, H.265, AAC, Opus)", st.Path())
	}
	o.w = &mpegts.Writer{W: o.pk, Tracks: tracks}
	if err := o.w.Initialize(); err != nil {
		return nil, skipped, err
	}
	return o, skipped, nil
}

func (o *tsOut) run(ctx context.Context, r *media.Reader) error {
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

// ticks converts a stream time to the 90 kHz output clock, or false if it
// is before the first unit.
func (o *tsOut) ticks(d time.Duration) (int64, bool) {
	d -= o.base
	if d < 0 {
		return 0, false
	}
	return (tsStart + media.ClockTicks(d, 90000)) & tsMask, true
}

func (o *tsOut) write(u *media.Unit) error {
	switch u.Track.ID {
	case o.videoID:
		if !o.started {
			if !u.Key {
				return nil
			}
			o.started, o.base = true, u.DTS
		}
		dts, ok := o.ticks(u.DTS)
		if !ok || len(u.NALUs) == 0 {
			return nil
		}
		pts, ok := o.ticks(u.PTS)
		if !ok {
			pts = dts
		}
		var err error
		if o.h265 {
			if _, ok := u.Track.Codec.(media.H265); !ok {
				return nil
			}
			err = o.w.WriteH265(o.video, pts, dts, u.NALUs)
		} else {
			if _, ok := u.Track.Codec.(media.H264); !ok {
				return nil
			}
			err = o.w.WriteH264(o.video, pts, dts, u.NALUs)
		}
		if err != nil {
			return err
		}
		o.frames[0]++
	case o.audioID:
		if !o.started {
			if o.videoID >= 0 {
				return nil // audio waits for the first keyframe
			}
			o.started, o.base = true, u.DTS
		}
		pts, ok := o.ticks(u.PTS)
		if !ok || len(u.Data) == 0 {
			return nil
		}
		switch c := u.Track.Codec.(type) {
		case media.AAC:
			if o.opus {
				return nil
			}
			if !bytes.Equal(c.Config, o.asc) {
				// A new publisher with other AAC parameters: ADTS headers
				// carry them, the PMT does not.
				var asc mpeg4audio.AudioSpecificConfig
				if err := asc.Unmarshal(c.Config); err != nil {
					return nil
				}
				o.aac.Config, o.asc = asc, c.Config
			}
			if err := o.w.WriteMPEG4Audio(o.audio, pts, [][]byte{u.Data}); err != nil {
				return err
			}
		case media.Opus:
			if !o.opus {
				return nil
			}
			if err := o.w.WriteOpus(o.audio, pts, [][]byte{u.Data}); err != nil {
				return err
			}
		default:
			return nil
		}
		o.frames[1]++
	default:
		return nil
	}
	return o.pk.flush()
}

// Audio is what an SRT egress sends for Opus audio.
const (
	// AudioAAC transcodes Opus to AAC-LC (ADTS), what SRT receivers
	// expect. The default.
	AudioAAC = "aac"
	// AudioOpus sends Opus as it is (MPEG-TS Opus, ETSI TS 102 366-ish
	// registration "Opus"); ffmpeg reads it, many receivers do not.
	AudioOpus = "opus"
)

// source returns the stream to send for st and the function releasing it:
// st itself, or its AAC view when st has Opus audio and audio is AudioAAC
// ("" too). When Opus cannot be transcoded it returns st (the Opus audio
// then goes out as Opus) and logs why.
func source(st *media.Stream, audio string, views *transcode.AACViews, bitrate int, log *slog.Logger) (*media.Stream, func()) {
	if audio == AudioOpus || !transcode.NeedsAAC(st.Tracks()) {
		return st, func() {}
	}
	v, release, err := views.Acquire(st, bitrate)
	if err != nil {
		log.Warn("Opus audio sent as Opus: it cannot be transcoded to AAC", "err", err)
		return st, func() {}
	}
	return v, release
}
