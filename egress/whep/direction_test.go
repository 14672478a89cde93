package whep

import (
	"strings"
	"testing"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// checkSendonly fails the test unless every media section of answer that
// is not rejected is sendonly (rtc.AnswerMids counts sendrecv ones as both
// sending and receiving) and there are want of them.
func checkSendonly(t *testing.T, what, answer string, want int) {
	t.Helper()
	send, err := rtc.AnswerMids(answer, "sendonly")
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	recv, _ := rtc.AnswerMids(answer, "recvonly")
	if len(send) != want || len(recv) != 0 {
		t.Errorf("%s: answer sends in %v and receives in %v, want sendonly in %d sections:\n%s", what, send, recv, want, answer)
	}
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
			answer := postOffer(t, b, "live/cam", edit.fn(realOfferSDP(t, "chromium156-whep-offer.sdp")))
			checkSendonly(t, "Chromium's offer, "+edit.name, answer, 2)

			b.editOffer = edit.fn
			defer func() { b.editOffer = nil }()
			v, pionAnswer := offerOnly(t, b, "live/cam")
			checkSendonly(t, "pion's offer, "+edit.name, pionAnswer.SDP, 1)
			if err := v.pc.SetRemoteDescription(pionAnswer); err != nil {
				t.Fatal(err)
			}
			if got := numbers(v.wait(t, 10)); got[0] != 0 || got[9] != 9 {
				t.Errorf("viewer got frames %v, want the GOP 0..9", got)
			}
		})
	}
}
