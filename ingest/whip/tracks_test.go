package whip

import (
	"net/http"
	"strings"
	"testing"

	"github.com/pion/webrtc/v4"
)

// TestOfferRefusals: a pion publisher whose offer the stream cannot take
// whole gets a refusal that says why, and no session: a second video track
// (422, naming the sections), audio and video in two MediaStreams (422),
// VP8 video beside Opus audio (400 with the formats the endpoint takes),
// where a session would carry half of what the client sends.
func TestOfferRefusals(t *testing.T) {
	ts := newTestServer(t)
	type track struct{ mime, stream string }
	h264, opus, vp8 := webrtc.MimeTypeH264, webrtc.MimeTypeOpus, webrtc.MimeTypeVP8
	cases := []struct {
		name   string
		tracks []track
		status int
		reason string
	}{
		{"second video track", []track{{h264, "s"}, {opus, "s"}, {h264, "s"}}, http.StatusUnprocessableEntity,
			"offer sends 2 video sections (mids 0, 2): a WHIP stream takes one video and one audio track"},
		{"two MediaStreams", []track{{h264, "s1"}, {opus, "s2"}}, http.StatusUnprocessableEntity,
			"offer sends 2 MediaStreams (a=msid s1, s2): a WHIP stream is one MediaStream"},
		{"VP8 video", []track{{vp8, "s"}, {opus, "s"}}, http.StatusBadRequest,
			"it takes H264 (packetization-mode=1; Baseline, Main or High profile) video and/or Opus audio in a sendonly or sendrecv section (offered video: VP8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Only the tracks' codecs: pion offers every registered one.
			m := &webrtc.MediaEngine{}
			for i, tr := range c.tracks {
				p := webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: tr.mime, ClockRate: 90000}, PayloadType: webrtc.PayloadType(96 + i)}
				kind := webrtc.RTPCodecTypeVideo
				if tr.mime == opus {
					p.ClockRate, p.Channels, kind = 48000, 2, webrtc.RTPCodecTypeAudio
				}
				if tr.mime == h264 {
					p.SDPFmtpLine = "packetization-mode=1;profile-level-id=42e01f"
				}
				if err := m.RegisterCodec(p, kind); err != nil {
					t.Fatal(err)
				}
			}
			pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m)).NewPeerConnection(webrtc.Configuration{})
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			for i, tr := range c.tracks {
				local, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: tr.mime}, strings.Repeat("t", i+1), tr.stream)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := pc.AddTransceiverFromTrack(local, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
					t.Fatal(err)
				}
			}
			offer, err := pc.CreateOffer(nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, body := ts.post(t, "live/"+strings.ReplaceAll(c.name, " ", "-"), testToken, "application/sdp", offer.SDP)
			if resp.StatusCode != c.status || !strings.Contains(body, c.reason) {
				t.Errorf("POST: %s %q, want %d with %q", resp.Status, body, c.status, c.reason)
			}
		})
	}
	if n := ts.sessions.Len(); n != 0 {
		t.Errorf("%d sessions after refusals", n)
	}
}
