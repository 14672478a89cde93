package whip

import (
	"errors"
	"strings"
	"testing"

	"github.com/wishbridge/bridge/rtc"
)

// sdpOffer builds an offer with the given media sections (each given
// from its m= line on, lines separated by "|").
func sdpOffer(sections ...string) string {
	s := "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
	for _, sec := range sections {
		s += strings.ReplaceAll(sec, "|", "\r\n") + "\r\n"
	}
	return s
}

const (
	opusSection = "m=audio 9 UDP/TLS/RTP/SAVPF 111|a=mid:0|a=sendonly|a=rtpmap:111 opus/48000/2"
	vp8Section  = "m=video 9 UDP/TLS/RTP/SAVPF 96|a=mid:1|a=sendonly|a=rtpmap:96 VP8/90000"
)

func h264Section(mid, dir, fmtp string) string {
	return "m=video 9 UDP/TLS/RTP/SAVPF 102|a=mid:" + mid + dir + "|a=rtpmap:102 H264/90000|a=fmtp:102 " + fmtp
}

func TestCheckOffer(t *testing.T) {
	cases := []struct {
		name         string
		sdp          string
		video, audio string // mids expected; "" for none
		err          string // substring of the 400's message
	}{
		{name: "H264 and Opus", sdp: sdpOffer(opusSection, h264Section("1", "|a=sendonly", "packetization-mode=1;profile-level-id=42e01f")), video: "1", audio: "0"},
		{name: "Main profile", sdp: sdpOffer(h264Section("v", "|a=sendonly", "profile-level-id=4d001f;packetization-mode=1")), video: "v"},
		{name: "Constrained High", sdp: sdpOffer(h264Section("v", "|a=sendonly", "packetization-mode=1;profile-level-id=640c1f")), video: "v"},
		{name: "no profile-level-id is Baseline", sdp: sdpOffer(h264Section("v", "|a=sendonly", "packetization-mode=1")), video: "v"},
		{name: "sendrecv by default", sdp: sdpOffer(h264Section("v", "", "packetization-mode=1")), video: "v"},
		{name: "Opus alone, VP8 ignored", sdp: sdpOffer(opusSection, vp8Section), audio: "0"},
		{name: "bundle-only section at port 0 counts", sdp: sdpOffer(opusSection, strings.Replace(h264Section("1", "|a=sendonly|a=bundle-only", "packetization-mode=1"), " 9 ", " 0 ", 1)), video: "1", audio: "0"},
		{name: "port 0 without bundle-only is disabled", sdp: sdpOffer(opusSection, strings.Replace(h264Section("1", "|a=sendonly", "packetization-mode=1"), " 9 ", " 0 ", 1)), audio: "0"},
		{name: "first usable video section", sdp: sdpOffer(vp8Section, h264Section("2", "|a=sendonly", "packetization-mode=1"), h264Section("3", "|a=sendonly", "packetization-mode=1")), video: "2"},

		{name: "packetization-mode 0 only", sdp: sdpOffer(h264Section("v", "|a=sendonly", "packetization-mode=0;profile-level-id=42e01f")),
			err: "offered video: H264 (packetization-mode=0, profile-level-id=42e01f); audio: none"},
		{name: "High 10", sdp: sdpOffer(h264Section("v", "|a=sendonly", "packetization-mode=1;profile-level-id=6e001f")), err: "profile-level-id=6e001f"},
		{name: "VP8 only", sdp: sdpOffer(vp8Section), err: "offered video: VP8; audio: none"},
		{name: "recvonly (a WHEP offer)", sdp: sdpOffer(strings.Replace(opusSection, "sendonly", "recvonly", 1)), err: "audio: none"},
		{name: "inactive", sdp: sdpOffer(strings.Replace(opusSection, "sendonly", "inactive", 1)), err: "audio: none"},
		{name: "no media", sdp: sdpOffer(), err: "no media sections"},
		{name: "not SDP", sdp: "hello", err: "cannot be parsed"},
		{name: "Chromium WHEP offer", sdp: realOffer(t, "chromium156-whep-offer.sdp"), err: "in a sendonly or sendrecv section"},
	}
	for _, tc := range cases {
		off, err := checkOffer(tc.sdp)
		if tc.err != "" {
			var he *rtc.Error
			if !errors.As(err, &he) || he.Status != 400 || !strings.Contains(he.Msg, tc.err) {
				t.Errorf("%s: %v, expected a 400 with %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if off.videoMid != tc.video || off.audioMid != tc.audio || off.hasVideo != (tc.video != "") || off.hasAudio != (tc.audio != "") {
			t.Errorf("%s: video %v %q audio %v %q, expected %q %q", tc.name, off.hasVideo, off.videoMid, off.hasAudio, off.audioMid, tc.video, tc.audio)
		}
	}
}

// FuzzCheckOffer: any body gives an offer with a section or a 400, never
// a panic.
func FuzzCheckOffer(f *testing.F) {
	f.Add(sdpOffer(opusSection, h264Section("1", "|a=sendonly", "packetization-mode=1;profile-level-id=42e01f")))
	f.Add(sdpOffer(vp8Section))
	f.Add("v=0\r\nm=video 0 RTP/AVP 96\r\na=fmtp:96 ;;=;packetization-mode\r\n")
	f.Fuzz(func(t *testing.T, raw string) {
		off, err := checkOffer(raw)
		if err != nil {
			var he *rtc.Error
			if !errors.As(err, &he) || he.Status != 400 {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		if !off.hasVideo && !off.hasAudio {
			t.Fatal("accepted an offer with nothing to receive")
		}
	})
}
