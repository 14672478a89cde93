package webrtccodec

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/rtc"
)

// SPS prefixes (NAL header, profile_idc, constraint flags, level).
var (
	spsConstrainedBaseline = []byte{0x67, 0x42, 0xc0, 0x1f}
	spsMain                = []byte{0x67, 0x4d, 0x40, 0x1f}
	spsHigh                = []byte{0x67, 0x64, 0x00, 0x1f}
)

func h264(plid string) Offered {
	return Offered{Name: "H264", Fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + plid}
}

func TestChooseH264(t *testing.T) {
	chrome := []Offered{{Name: "VP8"}, h264("42001f"), h264("42e01f"), h264("4d001f"), h264("64001f"),
		{Name: "H264", Fmtp: "packetization-mode=0;profile-level-id=42e01f"}}
	cases := []struct {
		name   string
		codecs []Offered
		sps    []byte
		want   string // profile-level-id chosen
	}{
		{"exact constrained baseline", chrome, spsConstrainedBaseline, "42e01f"},
		{"exact main", chrome, spsMain, "4d001f"},
		{"exact high", chrome, spsHigh, "64001f"},
		{"CB source, only high offered", []Offered{h264("64001f")}, spsConstrainedBaseline, "64001f"},
		{"main source prefers high over baseline", []Offered{h264("42001f"), h264("64001f")}, spsMain, "64001f"},
		{"high source, only baseline offered: still H264", []Offered{h264("42001f")}, spsHigh, "42001f"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fmtp, err := ChooseH264(c.codecs, c.sps)
			if err != nil {
				t.Fatal(err)
			}
			if got := FmtpParam(fmtp, "profile-level-id"); got != c.want {
				t.Errorf("chose %s (%s), want %s", got, fmtp, c.want)
			}
			if FmtpParam(fmtp, "packetization-mode") != "1" {
				t.Errorf("chose packetization-mode %q", FmtpParam(fmtp, "packetization-mode"))
			}
		})
	}
}

func TestChooseH264NoH264(t *testing.T) {
	for _, codecs := range [][]Offered{
		{{Name: "VP8"}, {Name: "VP9"}},
		{{Name: "H264", Fmtp: "packetization-mode=0;profile-level-id=42e01f"}},
		nil,
	} {
		_, err := ChooseH264(codecs, spsConstrainedBaseline)
		he, ok := err.(*rtc.Error)
		if !ok || he.Status != http.StatusBadRequest || !strings.Contains(he.Msg, "H264") {
			t.Errorf("%v: got %v, want 400 naming H264", codecs, err)
		}
	}
}

func TestKeepCodecs(t *testing.T) {
	h264 := func(pt webrtc.PayloadType, fmtp string) webrtc.RTPCodecParameters {
		return webrtc.RTPCodecParameters{PayloadType: pt, RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, SDPFmtpLine: fmtp}}
	}
	rtx := func(pt webrtc.PayloadType, apt string) webrtc.RTPCodecParameters {
		return webrtc.RTPCodecParameters{PayloadType: pt, RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeRTX, SDPFmtpLine: "apt=" + apt}}
	}
	vp8 := webrtc.RTPCodecParameters{PayloadType: 96, RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}}
	in := []webrtc.RTPCodecParameters{vp8, rtx(97, "96"), h264(102, "packetization-mode=1;profile-level-id=42001f"), rtx(103, "102"),
		h264(104, "packetization-mode=0;profile-level-id=42001f"), rtx(105, "104")}
	var got []webrtc.PayloadType
	for _, c := range KeepCodecs(in) {
		got = append(got, c.PayloadType)
	}
	if len(got) != 2 || got[0] != 102 || got[1] != 103 {
		t.Errorf("kept %v, expected [102 103]", got)
	}
}

// TestKeepCodecsProfiles: High is kept next to Baseline, High 4:4:4 is
// not, and the RTX formats come after the codecs they repair.
func TestKeepCodecsProfiles(t *testing.T) {
	h := func(pt uint8, fmtp string) webrtc.RTPCodecParameters {
		return webrtc.RTPCodecParameters{PayloadType: webrtc.PayloadType(pt), RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: fmtp}}
	}
	rtx := func(pt uint8, apt int) webrtc.RTPCodecParameters {
		return webrtc.RTPCodecParameters{PayloadType: webrtc.PayloadType(pt), RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeRTX, ClockRate: 90000, SDPFmtpLine: "apt=" + strconv.Itoa(apt)}}
	}
	vp8 := webrtc.RTPCodecParameters{PayloadType: 96, RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}}
	in := []webrtc.RTPCodecParameters{
		vp8, rtx(97, 96),
		h(102, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"), rtx(103, 102),
		h(104, "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f"), rtx(105, 104),
		h(112, "packetization-mode=1;profile-level-id=64001f"),
		h(113, "packetization-mode=1;profile-level-id=f4001f"), // High 4:4:4
	}
	var got []uint8
	for _, c := range KeepCodecs(in) {
		got = append(got, uint8(c.PayloadType))
	}
	if want := []uint8{102, 112, 103}; string(got) != string(want) {
		t.Errorf("kept %v, expected %v", got, want)
	}
}
