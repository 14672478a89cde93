package whep

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// request sends method to url with body (none when "") as contentType
// (no Content-Type when "") and returns the response and its body.
func request(t *testing.T, c *http.Client, method, url, contentType, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// answerOffer has v answer the bridge's offer and returns the answer with
// every candidate.
func answerOffer(t *testing.T, v *viewer, offer string) string {
	t.Helper()
	if err := v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		t.Fatal(err)
	}
	answer, err := v.pc.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(v.pc)
	if err := v.pc.SetLocalDescription(answer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	return v.pc.LocalDescription().SDP
}

// TestServerOffer: WHEP's server-offer mode. A POST without body and
// Content-Type gets 201 with the bridge's offer (H.264 and Opus, each
// sendonly), Location and ETag; a trickle before the answer is refused
// with 409; a pion viewer that answers by PATCH (application/sdp) plays
// the stream from its keyframe; a second answer is refused with 409, a
// trickle after it is taken.
func TestServerOffer(t *testing.T) {
	b := newBench(t)
	video := &media.Track{Codec: media.H264{SPS: testSPS, PPS: testPPS}}
	audio := &media.Track{Codec: media.Opus{}}
	pub := b.publish(t, "live/cam", "encoder", video, audio)
	defer pub.Close()
	for n := range 10 {
		pub.Write(frame(video, n, n == 0, testSPS))
	}
	pub.Write(opusUnit(audio, 0))

	resp, offer := request(t, http.DefaultClient, http.MethodPost, b.url+"/whep/live/cam", "", "")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("empty POST: %s %s", resp.Status, offer)
	}
	loc, etag := resp.Header.Get("Location"), resp.Header.Get("ETag")
	if ct := resp.Header.Get("Content-Type"); ct != "application/sdp" || loc == "" || etag == "" {
		t.Fatalf("Content-Type %q, Location %q, ETag %q", ct, loc, etag)
	}
	for _, want := range []string{"a=rtpmap:", "H264/90000", "opus/48000/2", "a=rtcp-mux-only"} {
		if !strings.Contains(offer, want) {
			t.Errorf("offer lacks %q:\n%s", want, offer)
		}
	}
	checkSendonly(t, "the bridge's offer", offer, 2)

	v := newViewer(t)
	frag := "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n"
	if resp, body := request(t, http.DefaultClient, http.MethodPatch, loc, rtc.SdpfragType, frag); resp.StatusCode != http.StatusConflict {
		t.Fatalf("trickle before the answer: %s %s", resp.Status, body)
	}
	answer := answerOffer(t, v, offer)
	if resp, body := request(t, http.DefaultClient, http.MethodPatch, loc, "application/sdp", answer); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH answer: %s %s", resp.Status, body)
	}
	aus := v.wait(t, 10)
	if got := numbers(aus); got[0] != 0 || got[9] != 9 {
		t.Fatalf("frames %v, expected the GOP from frame 0", got)
	}
	if !aus[0].key() || !bytes.Equal(aus[0].types[:2], []byte{7, 8}) {
		t.Fatalf("first access unit has NAL unit types %v, expected SPS, PPS, IDR", aus[0].types)
	}

	resp, body := request(t, http.DefaultClient, http.MethodPatch, loc, "application/sdp", answer)
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("second answer: %s %s", resp.Status, body)
	}
	t.Logf("second answer: %s %s", resp.Status, body)
	frag = "a=ice-ufrag:" + iceUfrag(answer) + "\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n"
	if resp, body := request(t, http.DefaultClient, http.MethodPatch, loc, rtc.SdpfragType, frag); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("trickle after the answer: %s %s", resp.Status, body)
	}
	pub.Write(frame(video, 10, false, testSPS))
	v.wait(t, 11)
}

// iceUfrag returns the first a=ice-ufrag of desc.
func iceUfrag(desc string) string {
	for l := range strings.Lines(desc) {
		if v, ok := strings.CutPrefix(strings.TrimRight(l, "\r\n"), "a=ice-ufrag:"); ok {
			return v
		}
	}
	return ""
}

// TestServerOfferRefusals: an SDP answer PATCHed to a session that
// answered the viewer's offer is a 422; an empty POST with a Content-Type
// is a 400 that says how to ask for an offer; the server-offer POST is
// held to the pending limit per address like any other.
func TestServerOfferRefusals(t *testing.T) {
	b := newBenchWith(t, rtc.Limits{PendingPerAddress: 2})
	pub := publishVideo(t, b, "live/cam")
	defer pub.Close()
	c := testkit.ClientFrom("127.0.0.1")

	resp, _ := postSDP(t, c, b, "live/cam", realOfferSDP(t, "chromium156-whep-offer.sdp"))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("client offer: %s", resp.Status)
	}
	resp, body := request(t, c, http.MethodPatch, resp.Header.Get("Location"), "application/sdp", "v=0\r\n")
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("SDP answer to a session that answered: %s %s", resp.Status, body)
	}
	for _, ct := range []string{"application/sdp", "text/plain"} {
		resp, body := request(t, c, http.MethodPost, b.url+"/whep/live/cam", ct, "")
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "without Content-Type") {
			t.Fatalf("empty POST with Content-Type %s: %s %s", ct, resp.Status, body)
		}
	}
	if resp, body := request(t, c, http.MethodPost, b.url+"/whep/live/cam", "", ""); resp.StatusCode != http.StatusCreated {
		t.Fatalf("server-offer POST: %s %s", resp.Status, body)
	}
	resp, body = request(t, c, http.MethodPost, b.url+"/whep/live/cam", "", "")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("server-offer POST over the pending limit: %s %s", resp.Status, body)
	}
}

// TestServerOfferUnauthorized: a server-offer POST is authorized as any
// other: without the stream's key it is a 401 before any offer is made (no
// SDP in the body, no session in the table); with it, the offer.
func TestServerOfferUnauthorized(t *testing.T) {
	b := newBench(t)
	pub := publishVideo(t, b, "live/cam")
	defer pub.Close()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	engine, err := rtc.New(rtc.Settings{UDP: udp, IncludeLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	authorize := func(r access.Request) error {
		if r.Credential != "k" {
			return access.BadKey(access.Read)
		}
		return nil
	}
	mux := http.NewServeMux()
	NewHandler(Config{Registry: b.reg, Engine: engine, Sessions: b.sessions, Authorize: testkit.Authorizer(authorize)}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, body := request(t, http.DefaultClient, http.MethodPost, srv.URL+"/whep/live/cam", "", "")
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" || strings.Contains(body, "v=0") || b.sessions.Len() != 0 {
		t.Fatalf("without the key: %s %s (%d sessions)", resp.Status, body, b.sessions.Len())
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/whep/live/cam", nil)
	req.Header.Set("Authorization", "Bearer k")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Content-Type") != "application/sdp" {
		t.Fatalf("with the key: %s", resp.Status)
	}
}
