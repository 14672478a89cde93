package testkit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/wishbridge/bridge/media"
)

// ReadAll reads units until the stream ends or timeout.
func ReadAll(t testing.TB, r *media.Reader, timeout time.Duration) []*media.Unit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []*media.Unit
	for {
		u, err := r.Read(ctx)
		if err != nil {
			if !errors.Is(err, media.ErrStreamEnded) {
				t.Fatalf("Read after %d units: %v", len(out), err)
			}
			return out
		}
		out = append(out, u)
	}
}

// ReadFor reads units for d (the stream must not end meanwhile).
func ReadFor(t testing.TB, r *media.Reader, d time.Duration) []*media.Unit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out []*media.Unit
	for {
		u, err := r.Read(ctx)
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Read after %d units: %v", len(out), err)
			}
			return out
		}
		out = append(out, u)
	}
}

// SplitUnits separates video and audio units.
func SplitUnits(units []*media.Unit) (video, audio []*media.Unit) {
	for _, u := range units {
		if u.Track.IsVideo() {
			video = append(video, u)
		} else {
			audio = append(audio, u)
		}
	}
	return video, audio
}

// MediaCheck accumulates what a reader of H.264 + AAC received.
type MediaCheck struct {
	Video, Audio, Keys int
	SPS                []byte
	AAC                media.AAC
	LastDTS            [2]time.Duration
}

// Add checks u (IDRs start with SPS and PPS, audio is non-empty AAC, DTS
// do not go back) and counts it.
func (m *MediaCheck) Add(t testing.TB, u *media.Unit) {
	t.Helper()
	k := 1
	if u.Track.IsVideo() {
		k = 0
		m.Video++
		if u.Key {
			m.Keys++
			if len(u.NALUs) < 2 || h264.NALUType(u.NALUs[0][0]&0x1f) != h264.NALUTypeSPS {
				t.Fatalf("IDR unit does not start with SPS and PPS")
			}
			m.SPS = u.NALUs[0]
		}
	} else {
		m.Audio++
		aac, ok := u.Track.Codec.(media.AAC)
		if !ok {
			t.Fatalf("audio track is %s, want AAC", u.Track.Codec.Name())
		}
		m.AAC = aac
		if len(u.Data) == 0 {
			t.Fatal("empty audio unit")
		}
	}
	if m.LastDTS[k] != 0 && u.DTS < m.LastDTS[k] {
		t.Errorf("%s DTS went back from %v to %v", u.Track, m.LastDTS[k], u.DTS)
	}
	m.LastDTS[k] = u.DTS
}

// ReadUntil reads into m until cond holds (the stream must not end
// meanwhile).
func ReadUntil(t testing.TB, r *media.Reader, m *MediaCheck, timeout time.Duration, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		u, err := r.Read(ctx)
		if err != nil {
			t.Fatalf("Read after %d video and %d audio units: %v", m.Video, m.Audio, err)
		}
		m.Add(t, u)
	}
}

// CheckH264AAC checks m saw H.264 640x360 and AAC 48 kHz stereo.
func CheckH264AAC(t testing.TB, m *MediaCheck) {
	t.Helper()
	var sps h264.SPS
	if err := sps.Unmarshal(m.SPS); err != nil {
		t.Fatalf("SPS: %v", err)
	}
	if w, h := sps.Width(), sps.Height(); w != 640 || h != 360 {
		t.Errorf("SPS says %dx%d, want 640x360", w, h)
	}
	if m.AAC.SampleRate != 48000 || m.AAC.Channels != 2 {
		t.Errorf("AAC %d Hz %d channels, want 48000 Hz stereo", m.AAC.SampleRate, m.AAC.Channels)
	}
}
