package transcode

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/pion/rtp"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode/av"
)

// DefaultOpusBitrate is the Opus bitrate when a route sets none: enough for
// transparent stereo music.
const DefaultOpusBitrate = 128_000

// CanTranscodeAudio reports whether this build can transcode AAC <-> Opus
// (false when built without cgo, i.e. without FFmpeg).
func CanTranscodeAudio() bool { return av.Available() }

// aacToOpus decodes an AAC track and encodes Opus, attaching the Opus RTP
// packets completed by each AAC unit to that unit's RTP field. One per
// track, shared by every WebRTC reader through Stream.AddProcessor; it runs
// on the publisher's goroutine.
//
// Timestamps: an Opus packet's RTP timestamp is its first sample's place on
// the stream clock at 48 kHz (the source PTS, less the encoder's priming
// delay, which a WebRTC receiver decodes and plays), so audio and video RTP
// timestamps share one origin. A gap in the source of up to 100 ms is
// filled with silence; a larger one is a discontinuity: the Opus timeline
// restarts at the new timestamp, no silence is sent for the gap, and the
// unit's error (errDiscontinuity) says so.
type aacToOpus struct {
	track *media.Track
	rate  int
	dec   *av.Decoder
	enc   *av.Encoder
	seq   uint16
	ssrc  uint32
}

// NewAACToOpus returns the "opus" processor for AAC track t: 48 kHz Opus in
// 20 ms frames at bitrate bit/s (0: DefaultOpusBitrate), stereo when the
// source is stereo. When this build cannot transcode or FFmpeg cannot open
// the codecs, the processor fails every unit with the reason (the hub
// counts and logs it) and readers get no audio.
func NewAACToOpus(t *media.Track, bitrate int) media.Processor {
	p, err := newAACToOpus(t, bitrate)
	if err != nil {
		return errProcessor{err}
	}
	return p
}

func newAACToOpus(t *media.Track, bitrate int) (*aacToOpus, error) {
	c, ok := t.Codec.(media.AAC)
	if !ok {
		return nil, fmt.Errorf("aac->opus: %s is not AAC", t)
	}
	if bitrate <= 0 {
		bitrate = DefaultOpusBitrate
	}
	dec, err := av.NewDecoder("aac", c.Config, c.SampleRate, c.Channels)
	if err != nil {
		return nil, fmt.Errorf("aac->opus: %s: %w", t, err)
	}
	channels := min(max(c.Channels, 1), 2)
	enc, err := av.NewEncoder("opus", 48000, channels, bitrate)
	if err != nil {
		dec.Close()
		return nil, fmt.Errorf("aac->opus: %s: %w", t, err)
	}
	return &aacToOpus{
		track: t, rate: c.SampleRate, dec: dec, enc: enc,
		seq: uint16(rand.N(1 << 15)), ssrc: rand.Uint32(),
	}, nil
}

// errDiscontinuity is a transcoder's report of a timestamp jump in its
// source: a gap too long to fill with silence (av fills 100 ms at most: a
// longer fill lets a publisher multiply the packets every viewer is sent)
// or an overlap too long to trim. The output timeline restarts at the new
// timestamp, with no silence sent for the gap. It is returned as the
// unit's error, so the hub counts it and logs it at most once a second per
// stream and track, however often a publisher does it.
var errDiscontinuity = errors.New("discontinuity: the timestamp jumps further than silence fills; the audio restarts there, no silence sent")

// discontinuity returns errDiscontinuity if enc restarted its timeline
// since it had restarted times, else err.
func discontinuity(enc *av.Encoder, restarted int, err error) error {
	if err == nil && enc.Restarts() != restarted {
		return errDiscontinuity
	}
	return err
}

// Process implements media.Processor.
func (p *aacToOpus) Process(u *media.Unit) error {
	restarted := p.enc.Restarts()
	frames, err := p.dec.Decode(u.Data, media.ClockTicks(u.PTS, p.rate))
	var out []*rtp.Packet
	for _, f := range frames {
		pkts, encErr := p.enc.Encode(f)
		for _, pk := range pkts {
			out = append(out, &rtp.Packet{
				Header: rtp.Header{
					Version:        2,
					PayloadType:    PayloadTypeOpus,
					SequenceNumber: p.seq,
					Timestamp:      uint32(pk.PTS),
					SSRC:           p.ssrc,
				},
				Payload: pk.Data,
			})
			p.seq++
		}
		if encErr != nil && err == nil {
			err = encErr
		}
	}
	u.RTP = out
	if err = discontinuity(p.enc, restarted, err); err != nil {
		return fmt.Errorf("aac->opus: %s: unit at %v: %w", p.track, u.PTS.Round(time.Millisecond), err)
	}
	return nil
}

// Close releases the codecs. The hub calls it when the last reader leaves.
func (p *aacToOpus) Close() {
	p.dec.Close()
	p.enc.Close()
}
