package whep

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"

	"github.com/wishbridge/bridge/media"
)

// sectionDirections returns the direction of each media section of an
// SDP that is not rejected (port 0): its direction attribute, sendrecv
// without one.
func sectionDirections(t *testing.T, raw string) []string {
	t.Helper()
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(raw); err != nil {
		t.Fatalf("answer: %v\n%s", err, raw)
	}
	var out []string
	for _, md := range sd.MediaDescriptions {
		if md.MediaName.Port.Value == 0 {
			continue
		}
		d := "sendrecv"
		for _, a := range []string{"sendonly", "recvonly", "inactive", "sendrecv"} {
			if _, ok := md.Attribute(a); ok {
				d = a
			}
		}
		out = append(out, d)
	}
	return out
}

// TestAnswerSendonly: a WHEP session only sends (draft-ietf-wish-whep:
// the answer is sendonly), also to an offer whose sections say sendrecv or
// no direction at all: every section that takes a track is answered
// sendonly, for Chromium's captured offer edited so, and for a pion viewer
// whose offer says so, which then plays.
func TestAnswerSendonly(t *testing.T) {
	b := newBench(t)
	video := &media.Track{Codec: media.H264{SPS: testSPS, PPS: testPPS}}
	audio := &media.Track{Codec: media.Opus{Channels: 2}}
	pub := b.publish(t, "live/cam", "encoder", video, audio)
	defer pub.Close()
	for n := range 10 {
		pub.Write(frame(video, n, n == 0, testSPS))
	}
	for _, edit := range []struct {
		name string
		fn   func(string) string
	}{
		{"sendrecv", func(s string) string { return strings.ReplaceAll(s, "a=recvonly\r\n", "a=sendrecv\r\n") }},
		{"no direction", func(s string) string { return strings.ReplaceAll(s, "a=recvonly\r\n", "") }},
	} {
		t.Run(edit.name, func(t *testing.T) {
			offer := edit.fn(realOfferSDP(t, "chromium156-whep-offer.sdp"))
			resp, err := http.Post(b.url+"/whep/live/cam", "application/sdp", strings.NewReader(offer))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("Chromium's offer, %s: %d %s", edit.name, resp.StatusCode, body)
			}
			if d := sectionDirections(t, string(body)); strings.Join(d, " ") != "sendonly sendonly" {
				t.Errorf("Chromium's offer, %s: answered %v, want sendonly in both sections", edit.name, d)
			}

			b.editOffer = edit.fn
			defer func() { b.editOffer = nil }()
			v, answer := offerOnly(t, b, "live/cam")
			if d := sectionDirections(t, answer.SDP); strings.Join(d, " ") != "sendonly" {
				t.Errorf("pion's offer, %s: answered %v, want sendonly", edit.name, d)
			}
			if err := v.pc.SetRemoteDescription(answer); err != nil {
				t.Fatal(err)
			}
			if got := numbers(v.wait(t, 10)); got[0] != 0 || got[9] != 9 {
				t.Errorf("viewer got frames %v, want the GOP 0..9", got)
			}
		})
	}
}
