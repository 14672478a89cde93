package rtc

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// TestAnswerCandidateLimit: in WHEP's server-offer mode the client's
// answer carries its candidates; they count toward the session's
// candidate limit as an offer's do (those over it dropped and counted),
// and trickled ones after it share the same limit. A second answer is a
// 409, an answer to a session that answered the client's offer a 422.
func TestAnswerCandidateLimit(t *testing.T) {
	e := testEngine(t, slog.New(slog.DiscardHandler))
	log := slog.New(slog.DiscardHandler)
	server, track := vp8Server(t, e)
	if _, err := server.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	offer, err := Offer(context.Background(), server, 5*time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	ice, err := e.NewOfferSession(server, log)
	if err != nil {
		t.Fatal(err)
	}

	client := testClient(t)
	if err := client.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		t.Fatal(err)
	}
	answer, err := client.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	const limit = DefaultICECandidates
	sinks := newSinks(t, limit+6)
	var b strings.Builder
	for l := range strings.Lines(answer.SDP) {
		if !strings.HasPrefix(l, "a=candidate:") && !strings.HasPrefix(l, "a=end-of-candidates") {
			b.WriteString(l)
		}
	}
	for i, s := range sinks[:limit+5] { // the answer's one media section is last
		b.WriteString("a=candidate:" + s.candidate(i) + "\r\n")
	}
	if err := ice.SetAnswer(b.String()); err != nil {
		t.Fatal(err)
	}
	if got := e.ICEStats().CandidatesDropped; got != 5 {
		t.Errorf("%d of the answer's %d candidates dropped, want 5 (limit %d)", got, limit+5, limit)
	}
	frag, err := ParseSdpfrag(trickleBody(ice.RemoteICEUfrag(), []string{sinks[limit+5].candidate(99)}))
	if err != nil {
		t.Fatal(err)
	}
	if err := ice.Trickle(frag); err != nil {
		t.Fatal(err)
	}
	if got := e.ICEStats().CandidatesDropped; got != 6 {
		t.Errorf("%d candidates dropped after a trickle over the limit, want 6", got)
	}

	var he *Error
	if err := ice.SetAnswer(b.String()); !errors.As(err, &he) || he.Status != http.StatusConflict {
		t.Errorf("second answer: %v, want 409", err)
	}
	_, clientOffer := recvClient(t)
	other, _, _ := vp8Session(t, e, clientOffer)
	if err := other.SetAnswer(b.String()); !errors.As(err, &he) || he.Status != http.StatusUnprocessableEntity {
		t.Errorf("answer to a session that answered: %v, want 422", err)
	}
}
