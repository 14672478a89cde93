package whip

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	hub "github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// TestICERestart: a publisher whose offer has a section the bridge answers
// inactive (a recvonly video section: a publisher with two video tracks is
// refused) restarts ICE over PATCH mid-stream: 200
// with the bridge's new credentials and candidates and a new ETag, the
// publisher applies them, and its media keeps reaching the hub.
func TestICERestart(t *testing.T) {
	ts := newTestServer(t)
	c := newTestClient(t)
	if _, err := c.pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	c.publish(t, ts, "live/cam")
	if n := strings.Count(c.answer, "a=inactive\r\n"); n != 1 {
		t.Fatalf("answer has %d inactive sections, want the recvonly one:\n%s", n, c.answer)
	}
	etag := c.resp.Header.Get("ETag")
	if len(etag) != 34 || c.resp.Header.Get("Accept-Patch") != rtc.SdpfragType {
		t.Fatalf("201 headers: %v", c.resp.Header)
	}
	c.send(t, 10*time.Second)
	stream := ts.waitStream(t, "live/cam", 5*time.Second)
	reader, err := stream.NewReader(hub.ReaderOptions{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if n := len(readFor(t, reader, 500*time.Millisecond)); n < 20 {
		t.Fatalf("%d units before the restart", n)
	}

	restart, err := c.pc.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(restart); err != nil {
		t.Fatal(err)
	}
	<-gathered
	local, err := c.pc.LocalDescription().Unmarshal()
	if err != nil {
		t.Fatal(err)
	}
	m := local.MediaDescriptions[0]
	frag := &rtc.Sdpfrag{Media: []rtc.SdpfragMedia{{Kind: m.MediaName.Media, Port: "9", Proto: "UDP/TLS/RTP/SAVPF", Formats: []string{"0"}}}}
	frag.ICEUfrag, _ = m.Attribute("ice-ufrag")
	frag.ICEPwd, _ = m.Attribute("ice-pwd")
	frag.Media[0].Mid, _ = m.Attribute("mid")
	for _, a := range m.Attributes {
		if a.Key == "candidate" {
			frag.Media[0].Candidates = append(frag.Media[0].Candidates, a.Value)
		}
	}
	req, err := http.NewRequest(http.MethodPatch, c.location, strings.NewReader(frag.Marshal()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", rtc.SdpfragType)
	req.Header.Set("If-Match", "*")
	resp, body := ts.do(t, req)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != rtc.SdpfragType {
		t.Fatalf("restart: %s %v %q", resp.Status, resp.Header, body)
	}
	if e := resp.Header.Get("ETag"); e == "" || e == etag {
		t.Errorf("ETag after the restart %q (was %q)", e, etag)
	}
	af, err := rtc.ParseSdpfrag(body)
	if err != nil {
		t.Fatal(err)
	}
	full, err := rtc.ApplySdpfrag(c.answer, af)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: full}); err != nil {
		t.Fatal(err)
	}
	// The hub goes on getting the publisher's media (and the session was
	// not ended: no "publish ended").
	readFor(t, reader, 300*time.Millisecond) // what was queued
	units := readFor(t, reader, 1500*time.Millisecond)
	var video, audio int
	for _, u := range units {
		if u.Track.IsVideo() {
			video++
		} else {
			audio++
		}
	}
	if video < 20 || audio < 30 {
		t.Fatalf("after the restart: %d video and %d audio units in 1.5 s", video, audio)
	}
	if n := ts.sessions.Len(); n != 1 {
		t.Errorf("%d sessions after the restart", n)
	}
}
