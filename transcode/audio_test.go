package transcode

import (
	"errors"
	"testing"
	"time"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode/av"
)

// aacTrack encodes seconds of 440 Hz left / 660 Hz right as AAC-LC frames
// (48 kHz stereo, 1024 samples each) and returns the track they belong to
// and the raw frames.
func aacTrack(t testing.TB, seconds float64) (*media.Track, [][]byte) {
	t.Helper()
	enc, err := av.NewEncoder("aac", 48000, 2, 128000)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	pcm, n := stereoTone(seconds)
	pkts, err := enc.Encode(av.Frame{PCM: pcm, Samples: n, SampleRate: 48000, Channels: 2})
	if err != nil {
		t.Fatal(err)
	}
	frames := make([][]byte, len(pkts))
	for i, p := range pkts {
		frames[i] = p.Data
	}
	track := &media.Track{ID: 1, Codec: media.AAC{Config: enc.Extradata(), SampleRate: 48000, Channels: 2}}
	return track, frames
}

// TestAACToOpusGap: AAC frames with gaps between them become about one
// Opus packet per frame's worth of audio, not silence for the gaps. A
// publisher stamping its 21 ms frames 990 ms apart once had every one of
// them followed by 0.97 s of encoded silence: 46 times the packets (and
// about 33 times the CPU), sent to every viewer. Now a gap longer than a
// short one is a discontinuity: the Opus timeline restarts at the frame,
// no packet falls inside the gap, and the unit's error says so.
func TestAACToOpusGap(t *testing.T) {
	needAV(t)
	track, frames := aacTrack(t, 1)
	const frameDur = 1024 * time.Second / 48000
	for _, tc := range []struct {
		name string
		step time.Duration // between two frames' PTS
	}{
		{"contiguous", frameDur},
		{"60 ms gaps, filled", frameDur + 60*time.Millisecond},
		{"990 ms apart", 990 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewAACToOpus(track, 0)
			defer p.(*aacToOpus).Close()
			gap := tc.step - frameDur
			filled := gap <= 100*time.Millisecond
			packets, discontinuities := 0, 0
			for i, f := range frames {
				u := &media.Unit{Track: track, PTS: time.Duration(i) * tc.step, Key: true, Data: f}
				u.DTS = u.PTS
				err := p.Process(u)
				switch {
				case errors.Is(err, errDiscontinuity):
					discontinuities++
				case err != nil:
					t.Fatalf("frame %d: %v", i, err)
				}
				packets += len(u.RTP)
				if filled || i == 0 {
					continue
				}
				// Packets holding silence for the gap would be stamped
				// inside it, well clear of both frames' audio.
				gapStart := media.ClockTicks(time.Duration(i-1)*tc.step+frameDur, 48000) + 960
				gapEnd := media.ClockTicks(u.PTS, 48000) - 2*960
				for _, pk := range u.RTP {
					if ts := int64(pk.Timestamp); ts > gapStart && ts < gapEnd {
						t.Fatalf("frame %d: Opus packet at %d inside the gap %d..%d", i, ts, gapStart, gapEnd)
					}
				}
			}
			// The audio sent is what the frames hold (1024 samples each)
			// plus, where filled, the gaps: in 20 ms packets of 960.
			audio := len(frames) * 1024
			if filled {
				audio += (len(frames) - 1) * int(media.ClockTicks(gap, 48000))
			}
			perFrame := float64(packets) / float64(len(frames))
			t.Logf("%d AAC frames, %d Opus packets (%.2f per frame), %d discontinuities", len(frames), packets, perFrame, discontinuities)
			if limit := 3 * (audio/960 + 1); packets > limit {
				t.Errorf("%d Opus packets for %d AAC frames (%.1f per frame) holding %d samples of audio, expected at most %d",
					packets, len(frames), perFrame, audio, limit)
			}
			wantDisc := 0 // gaps filled
			if !filled {
				wantDisc = len(frames) - 1 // one per gap
			}
			if discontinuities != wantDisc {
				t.Errorf("%d discontinuities reported, want %d", discontinuities, wantDisc)
			}
		})
	}
}
