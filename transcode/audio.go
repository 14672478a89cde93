package transcode

import (
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
// timestamps share one origin.
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

// Process implements media.Processor.
func (p *aacToOpus) Process(u *media.Unit) error {
	frames, err := p.dec.Decode(u.Data, durationToTicks(u.PTS, int64(p.rate)))
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
	if err != nil {
		return fmt.Errorf("aac->opus: %s: unit at %v: %w", p.track, u.PTS.Round(time.Millisecond), err)
	}
	return nil
}

// Close releases the codecs. The hub calls it when the last reader leaves.
func (p *aacToOpus) Close() {
	p.dec.Close()
	p.enc.Close()
}
