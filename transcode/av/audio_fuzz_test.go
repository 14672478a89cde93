// The fuzz target of the AAC -> Opus processor lives here, in an external
// test package of av, rather than beside the processor in transcode: it
// starts from the RTMP fixture through testkit.ReadFLV, whose fixture path
// is relative to a package two levels below the module root, and testkit
// imports transcode (a test of package transcode cannot import it).
package av_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
	"github.com/wishbridge/bridge/transcode/av"
)

// Bounds FuzzAACToOpus holds the AAC -> Opus path to for one input.
const (
	// aacFuzzHang is how long one input may run before it counts as a
	// hang: a few hundred frames take milliseconds.
	aacFuzzHang = 30 * time.Second
	// maxOpusPerAAC bounds the Opus packets (20 ms) one AAC unit may
	// make: the longest AAC frame (1024 samples at 7350 Hz, 139 ms; SBR
	// doubles samples and rate alike) plus the largest gap filled with
	// silence (100 ms) plus the 20 ms the encoder may hold back. More
	// would let a publisher multiply what every viewer is sent.
	maxOpusPerAAC = (139 + 100 + 20 + 19) / 20
	// maxOpusPacket is the largest Opus packet (RFC 6716 3.2.1: 1275
	// bytes a frame, one 20 ms frame a packet here).
	maxOpusPacket = 1275
)

// FuzzAACToOpus feeds publisher-controlled AAC through the processor the
// hub runs for WebRTC readers of an RTMP or SRT stream: the
// AudioSpecificConfig (asc, as the RTMP sequence header carries it; the
// track's rate and channels parsed from it as the RTMP ingest does, which
// refuses what it refuses) opens libavcodec's AAC decoder, and every raw
// frame goes through the decoder, libswresample and libopus. frames holds
// the raw frames, each a 2-byte big-endian length and that many bytes;
// jitter[i] moves frame i off its nominal time by that many ms (int8), so
// gaps, overlaps and discontinuities are the fuzzer's too. No input may
// crash FFmpeg, panic or hang; each unit makes at most maxOpusPerAAC
// packets of at most maxOpusPacket bytes. Seeds: the first frames of the
// RTMP fixture.
func FuzzAACToOpus(f *testing.F) {
	m := testkit.ReadFLV(f, "h264-aac.flv")
	var frames []byte
	n := 0
	for _, u := range m.Units {
		if u.Track != m.Audio || n == 12 {
			continue
		}
		frames = binary.BigEndian.AppendUint16(frames, uint16(len(u.Data)))
		frames = append(frames, u.Data...)
		n++
	}
	asc := m.Audio.Codec.(media.AAC).Config
	f.Add(asc, frames, []byte(nil))
	f.Add(asc, frames, []byte{0, 0, 120, 0, 0x80, 0, 50, 50, 50})
	f.Fuzz(func(t *testing.T, asc, frames, jitter []byte) {
		if !av.Available() {
			t.Skip("built without FFmpeg")
		}
		track, ok := aacTrack(asc)
		if !ok {
			return // the ingest refuses this configuration
		}
		rate := track.Codec.(media.AAC).SampleRate
		done := make(chan struct{})
		go func() {
			defer close(done)
			p := transcode.NewAACToOpus(track, 0)
			if c, ok := p.(interface{ Close() }); ok {
				defer c.Close()
			}
			var pts time.Duration
			for i := 0; len(frames) >= 2; i++ {
				size := min(int(binary.BigEndian.Uint16(frames)), len(frames)-2)
				u := &media.Unit{Track: track, PTS: pts, DTS: pts, Key: true, Data: frames[2 : 2+size]}
				frames = frames[2+size:]
				if i < len(jitter) {
					u.PTS += time.Duration(int8(jitter[i])) * time.Millisecond
					u.DTS = u.PTS
				}
				pts += 1024 * time.Second / time.Duration(rate)
				if p.Process(u) != nil {
					continue // an error is the expected answer to garbage
				}
				if len(u.RTP) > maxOpusPerAAC {
					t.Errorf("frame %d (%d bytes, %d Hz): %d Opus packets, at most %d expected", i, size, rate, len(u.RTP), maxOpusPerAAC)
				}
				for _, pk := range u.RTP {
					if len(pk.Payload) == 0 || len(pk.Payload) > maxOpusPacket {
						t.Errorf("frame %d: Opus packet of %d bytes", i, len(pk.Payload))
					}
				}
			}
		}()
		select {
		case <-done:
		case <-time.After(aacFuzzHang):
			t.Fatalf("frames not processed in %v", aacFuzzHang)
		}
	})
}

// aacTrack returns the track the RTMP ingest declares for AudioSpecificConfig
// asc, or false where it refuses asc (ingest/rtmp parseAACConfig): the
// channel count from the channel configuration (1-6, 7 for 7.1; 0, a
// program config element, is refused) and the rate from mediacommon.
func aacTrack(asc []byte) (*media.Track, bool) {
	var cfg mpeg4audio.AudioSpecificConfig
	if len(asc) == 0 || cfg.Unmarshal(asc) != nil || cfg.SampleRate <= 0 {
		return nil, false
	}
	ch := int(cfg.ChannelConfig)
	switch {
	case ch == 7:
		ch = 8
	case ch < 1 || ch > 6:
		return nil, false
	}
	return &media.Track{Codec: media.AAC{Config: asc, SampleRate: cfg.SampleRate, Channels: ch}}, true
}
