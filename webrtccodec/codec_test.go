package webrtccodec

import (
	"errors"
	"testing"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/media"
)

// TestPlan: a hub codec the table lacks is refused with ErrNoCodec; H.264
// without B-frames is packetized as it is and offered with its own
// profile; Opus passes through.
func TestPlan(t *testing.T) {
	pub, err := media.NewRegistry(nil).Publish("live/plan", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	video := &media.Track{Codec: media.H264{SPS: spsMain, PPS: []byte{0x68}}}
	audio := &media.Track{Codec: media.Opus{}}
	h265 := &media.Track{Codec: media.H265{}}
	if err := pub.SetTracks(video, audio, h265); err != nil {
		t.Fatal(err)
	}
	if _, err := Plan(pub.Stream, h265, Options{}); !errors.Is(err, ErrNoCodec) {
		t.Errorf("H265: %v, want ErrNoCodec", err)
	}
	if _, err := KindOf(h265); !errors.Is(err, ErrNoCodec) {
		t.Errorf("KindOf(H265): %v, want ErrNoCodec", err)
	}
	v, err := Plan(pub.Stream, video, Options{})
	if err != nil || v.Processor != PacketizeRTP || v.Kind != webrtc.RTPCodecTypeVideo || v.BFrames.Reason != "" {
		t.Fatalf("H264: %+v, %v", v, err)
	}
	if c := v.Capability(); c.MimeType != webrtc.MimeTypeH264 || FmtpParam(c.SDPFmtpLine, "profile-level-id") != "4d001f" {
		t.Errorf("H264 offered as %+v, want Main 4d001f", c)
	}
	a, err := Plan(pub.Stream, audio, Options{})
	if err != nil || a.Processor != PacketizeRTP || a.Kind != webrtc.RTPCodecTypeAudio {
		t.Fatalf("Opus: %+v, %v", a, err)
	}
	if _, err := a.Answer([]Offered{{Name: "PCMU"}}); err == nil {
		t.Error("Opus answered to an offer without Opus")
	}
}
