// The fuzz targets of the audio transcoders (transcode's AAC -> Opus
// processor and Opus -> AAC converter) live here, in an external test
// package of av, rather than beside them in transcode: they start from the
// RTMP fixture through testkit, whose fixture path is relative to a package
// two levels below the module root, and testkit imports transcode (a test
// of package transcode cannot import it).
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

// Bounds the audio fuzz targets hold the transcoders to for one input.
const (
	// audioFuzzHang is how long one input may run before it counts as a
	// hang: a few hundred frames take milliseconds.
	audioFuzzHang = 30 * time.Second
	// maxOpusPerAAC bounds the Opus packets (20 ms) one AAC unit may
	// make: the longest AAC frame (1024 samples at 7350 Hz, 139 ms; SBR
	// doubles samples and rate alike) plus the largest gap filled with
	// silence (100 ms) plus the 20 ms the encoder may hold back. More
	// would let a publisher multiply what every viewer is sent.
	maxOpusPerAAC = (139 + 100 + 20 + 19) / 20
	// maxOpusPacket is the largest Opus packet (RFC 6716 3.2.1: 1275
	// bytes a frame, one 20 ms frame a packet here).
	maxOpusPacket = 1275
	// maxAACPerOpus bounds the AAC units (1024 samples, 21.3 ms at 48 kHz)
	// one Opus unit may make: the longest Opus packet (120 ms, RFC 6716
	// 3.2.5) plus the largest gap filled (100 ms) plus the frame the
	// encoder may hold back.
	maxAACPerOpus = (120+100)*48/1024 + 2
	// maxAACFrame is the largest raw AAC frame for two channels (ISO/IEC
	// 14496-3 4.5.3.2: 6144 bits per channel).
	maxAACFrame = 2 * 6144 / 8
)

// FuzzAACToOpus feeds publisher-controlled AAC through the processor the
// hub runs for WebRTC readers of an RTMP or SRT stream: the
// AudioSpecificConfig (asc, as the RTMP sequence header carries it; the
// track's rate and channels parsed from it as the RTMP ingest does, which
// refuses what it refuses) opens libavcodec's AAC decoder, and every raw
// frame goes through the decoder, libswresample and libopus. frames and
// jitter are as fuzzUnits reads them, so gaps, overlaps and
// discontinuities are the fuzzer's too. No input may crash FFmpeg, panic
// or hang; each unit makes at most maxOpusPerAAC packets of at most
// maxOpusPacket bytes. Seeds: the first frames of the RTMP fixture.
func FuzzAACToOpus(f *testing.F) {
	m := testkit.ReadFLV(f, "h264-aac.flv")
	asc := m.Audio.Codec.(media.AAC).Config
	frames := seedFrames(m.Units, m.Audio, 12)
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
		units := fuzzUnits(track, frames, jitter, 1024*time.Second/time.Duration(track.Codec.(media.AAC).SampleRate))
		withinHang(t, func() {
			p := transcode.NewAACToOpus(track, 0)
			if c, ok := p.(interface{ Close() }); ok {
				defer c.Close()
			}
			for i, u := range units {
				if p.Process(u) != nil {
					continue // an error is the expected answer to garbage
				}
				if len(u.RTP) > maxOpusPerAAC {
					t.Errorf("frame %d (%d bytes, %v): %d Opus packets, at most %d expected", i, len(u.Data), track, len(u.RTP), maxOpusPerAAC)
				}
				for _, pk := range u.RTP {
					if len(pk.Payload) == 0 || len(pk.Payload) > maxOpusPacket {
						t.Errorf("frame %d: Opus packet of %d bytes", i, len(pk.Payload))
					}
				}
			}
		})
	})
}

// FuzzOpusToAAC feeds publisher-controlled Opus (a WHIP publisher's RTP
// payloads) through the converter of the AAC view that RTMP and SRT
// egress read: libavcodec's Opus decoder, libswresample and the AAC
// encoder. stereo's low bit picks the track's channel count (the SDP's);
// packets and jitter are as fuzzUnits reads them. No input may crash
// FFmpeg, panic or hang; each Opus unit makes at most maxAACPerOpus AAC
// units of at most maxAACFrame bytes. Seeds: the fixture's audio as Opus.
func FuzzOpusToAAC(f *testing.F) {
	m := testkit.WithOpus(f, testkit.ReadFLV(f, "h264-aac.flv"))
	packets := seedFrames(m.Units, m.Audio, 12)
	f.Add(byte(1), packets, []byte(nil))
	f.Add(byte(0), packets, []byte{0, 0, 120, 0, 0x80, 0, 50, 50, 50})
	f.Fuzz(func(t *testing.T, stereo byte, packets, jitter []byte) {
		if !av.Available() {
			t.Skip("built without FFmpeg")
		}
		track := &media.Track{Codec: media.Opus{Channels: 1 + int(stereo&1)}}
		units := fuzzUnits(track, packets, jitter, 20*time.Millisecond)
		withinHang(t, func() {
			c, err := transcode.NewOpusToAAC(track, 0)
			if err != nil {
				t.Error(err) // nothing of the publisher's in it yet
				return
			}
			defer c.Close()
			out := &media.Track{Codec: c.Codec()}
			for i, u := range units {
				aac, _ := c.Transcode(u, out) // an error is the expected answer to garbage
				if len(aac) > maxAACPerOpus {
					t.Errorf("packet %d (%d bytes): %d AAC units, at most %d expected", i, len(u.Data), len(aac), maxAACPerOpus)
				}
				for _, a := range aac {
					if len(a.Data) == 0 || len(a.Data) > maxAACFrame {
						t.Errorf("packet %d: AAC frame of %d bytes", i, len(a.Data))
					}
				}
			}
		})
	})
}

// seedFrames encodes the payloads of the first n units of track as
// fuzzUnits reads them.
func seedFrames(units []*media.Unit, track *media.Track, n int) []byte {
	var out []byte
	for _, u := range units {
		if u.Track != track {
			continue
		}
		if n--; n < 0 {
			break
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(u.Data)))
		out = append(out, u.Data...)
	}
	return out
}

// fuzzUnits cuts data into units of track: each payload a 2-byte
// big-endian length and that many bytes (fewer at the end), one every
// step, unit i moved off its nominal time by jitter[i] ms (int8; 0 past
// the end of jitter).
func fuzzUnits(track *media.Track, data, jitter []byte, step time.Duration) []*media.Unit {
	var units []*media.Unit
	for i := 0; len(data) >= 2; i++ {
		n := min(int(binary.BigEndian.Uint16(data)), len(data)-2)
		pts := time.Duration(i) * step
		if i < len(jitter) {
			pts += time.Duration(int8(jitter[i])) * time.Millisecond
		}
		units = append(units, &media.Unit{Track: track, PTS: pts, DTS: pts, Key: true, Data: data[2 : 2+n]})
		data = data[2+n:]
	}
	return units
}

// withinHang runs fn and fails t if it has not returned within
// audioFuzzHang (fn keeps running: FFmpeg cannot be interrupted).
func withinHang(t *testing.T, fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(audioFuzzHang):
		t.Fatalf("not done in %v: a hang", audioFuzzHang)
	}
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
