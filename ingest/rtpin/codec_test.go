package rtpin

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/pion/webrtc/v4"
)

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

func TestSpropParameterSets(t *testing.T) {
	sps, pps := spropParameterSets("packetization-mode=1;sprop-parameter-sets=Z0LAH9kA,aM48gA==;profile-level-id=42c01f")
	if !bytes.Equal(sps, []byte{0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00}) || !bytes.Equal(pps, []byte{0x68, 0xce, 0x3c, 0x80}) {
		t.Errorf("sps %x pps %x", sps, pps)
	}
	if sps, pps := spropParameterSets("packetization-mode=1;sprop-parameter-sets=!!!,aM48gA=="); sps != nil || pps == nil {
		t.Errorf("bad base64: sps %x pps %x", sps, pps)
	}
	if sps, pps := spropParameterSets("packetization-mode=1"); sps != nil || pps != nil {
		t.Errorf("none: sps %x pps %x", sps, pps)
	}
}

// FuzzSpropParameterSets: any fmtp line (or whole offer) gives parameter
// sets or nil, never a panic.
func FuzzSpropParameterSets(f *testing.F) {
	f.Add("packetization-mode=1;sprop-parameter-sets=Z0LAH9kA,aM48gA==;profile-level-id=42c01f")
	f.Add("v=0\r\nm=video 0 RTP/AVP 96\r\na=fmtp:96 ;;=;packetization-mode\r\n")
	f.Add("sprop-parameter-sets=,,;sprop-parameter-sets")
	f.Fuzz(func(t *testing.T, fmtp string) {
		spropParameterSets(fmtp)
		AcceptableH264(fmtp)
	})
}
