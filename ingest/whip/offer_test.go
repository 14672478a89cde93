package whip

import (
	"cmp"
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
	const takes = "it takes H264 (packetization-mode=1; Baseline, Main or High profile) video and/or Opus audio"
	withMsid := func(section, stream string) string { return section + "|a=msid:" + stream + " track-" + section[2:7] }
	cases := []struct {
		name         string
		sdp          string
		video, audio string // mids expected; "" for none
		err          string // substring of the refusal's message
		status       int    // of the refusal: 400 if 0
	}{
		{name: "H264 and Opus", sdp: sdpOffer(opusSection, h264Section("1", "|a=sendonly", "packetization-mode=1;profile-level-id=42e01f")), video: "1", audio: "0"},
		{name: "Main profile", sdp: sdpOffer(h264Section("v", "|a=sendonly", "profile-level-id=4d001f;packetization-mode=1")), video: "v"},
		{name: "Constrained High", sdp: sdpOffer(h264Section("v", "|a=sendonly", "packetization-mode=1;profile-level-id=640c1f")), video: "v"},
		{name: "no profile-level-id is Baseline", sdp: sdpOffer(h264Section("v", "|a=sendonly", "packetization-mode=1")), video: "v"},
		{name: "sendrecv by default", sdp: sdpOffer(h264Section("v", "", "packetization-mode=1")), video: "v"},
		{name: "simulcast in one section", sdp: sdpOffer(opusSection, h264Section("1", "|a=sendonly|a=rid:h send|a=rid:l send|a=simulcast:send h;l", "packetization-mode=1")), video: "1", audio: "0"},
		{name: "one MediaStream", sdp: sdpOffer(withMsid(opusSection, "s1"), withMsid(h264Section("1", "|a=sendonly", "packetization-mode=1"), "s1")), video: "1", audio: "0"},
		{name: "no MediaStream (msid -)", sdp: sdpOffer(withMsid(opusSection, "-"), withMsid(h264Section("1", "|a=sendonly", "packetization-mode=1"), "s1")), video: "1", audio: "0"},
		{name: "recvonly sections do not count", sdp: sdpOffer(opusSection, h264Section("1", "|a=sendonly", "packetization-mode=1"), h264Section("2", "|a=recvonly", "packetization-mode=1")), video: "1", audio: "0"},

		{name: "Opus and VP8-only video (half a session)", sdp: sdpOffer(opusSection, vp8Section), err: takes + " in a sendonly or sendrecv section (offered video: VP8; audio: opus)"},
		{name: "two video sections", sdp: sdpOffer(h264Section("1", "|a=sendonly", "packetization-mode=1"), h264Section("2", "|a=sendonly", "packetization-mode=1")),
			status: 422, err: "offer sends 2 video sections (mids 1, 2): a WHIP stream takes one video and one audio track"},
		{name: "a usable and an unusable video section", sdp: sdpOffer(vp8Section, h264Section("2", "|a=sendonly", "packetization-mode=1")), status: 422, err: "2 video sections (mids 1, 2)"},
		{name: "two audio sections", sdp: sdpOffer(opusSection, strings.Replace(opusSection, "mid:0", "mid:a2", 1)), status: 422, err: "2 audio sections (mids 0, a2)"},
		{name: "two MediaStreams", sdp: sdpOffer(withMsid(opusSection, "s1"), withMsid(h264Section("1", "|a=sendonly", "packetization-mode=1"), "s2")),
			status: 422, err: "offer sends 2 MediaStreams (a=msid s1, s2): a WHIP stream is one MediaStream"},
		{name: "two MediaStreams in a=ssrc msid", sdp: sdpOffer(opusSection+"|a=ssrc:1 msid:s1 t1", h264Section("1", "|a=sendonly|a=ssrc:2 msid:s2 t2", "packetization-mode=1")), status: 422, err: "2 MediaStreams"},
		{name: "bundle-only section at port 0 counts", sdp: sdpOffer(opusSection, strings.Replace(h264Section("1", "|a=sendonly|a=bundle-only", "packetization-mode=1"), " 9 ", " 0 ", 1)), video: "1", audio: "0"},
		{name: "port 0 without bundle-only is disabled", sdp: sdpOffer(opusSection, strings.Replace(h264Section("1", "|a=sendonly", "packetization-mode=1"), " 9 ", " 0 ", 1)), audio: "0"},

		{name: "packetization-mode 0 only", sdp: sdpOffer(h264Section("v", "|a=sendonly", "packetization-mode=0;profile-level-id=42e01f")),
			err: "offered video: H264 (packetization-mode=0, profile-level-id=42e01f); audio: none"},
		{name: "High 10", sdp: sdpOffer(h264Section("v", "|a=sendonly", "packetization-mode=1;profile-level-id=6e001f")), err: "profile-level-id=6e001f"},
		{name: "VP8 only", sdp: sdpOffer(vp8Section), err: takes + " in a sendonly or sendrecv section (offered video: VP8; audio: none)"},
		{name: "recvonly (a WHEP offer)", sdp: sdpOffer(strings.Replace(opusSection, "sendonly", "recvonly", 1)), err: "audio: none"},
		{name: "inactive", sdp: sdpOffer(strings.Replace(opusSection, "sendonly", "inactive", 1)), err: "audio: none"},
		{name: "no media", sdp: sdpOffer(), err: "no media sections"},
		{name: "not SDP", sdp: "hello", err: "cannot be parsed"},
		{name: "Chromium WHEP offer", sdp: realOffer(t, "chromium156-whep-offer.sdp"), err: "in a sendonly or sendrecv section"},
	}
	for _, tc := range cases {
		off, err := checkOffer(tc.sdp)
		if tc.err != "" {
			status := cmp.Or(tc.status, 400)
			var he *rtc.Error
			if !errors.As(err, &he) || he.Status != status || !strings.Contains(he.Msg, tc.err) {
				t.Errorf("%s: %v, expected a %d with %q", tc.name, err, status, tc.err)
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
			if !errors.As(err, &he) || he.Status != 400 && he.Status != 422 {
				t.Fatalf("error %v is not a 400 or 422", err)
			}
			return
		}
		if !off.hasVideo && !off.hasAudio {
			t.Fatal("accepted an offer with nothing to receive")
		}
	})
}
