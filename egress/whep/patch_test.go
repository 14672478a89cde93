package whep

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// patchClient is a pion WHEP player that trickles its candidates and
// restarts ICE over PATCH, as RFC 9725 section 4.3 and
// draft-ietf-wish-whep describe.
type patchClient struct {
	pc       *webrtc.PeerConnection
	location string
	etag     string
	answer   string // the current remote description

	ssrc chan webrtc.SSRC // of the video track, once it arrives

	mu      sync.Mutex
	packets int
	states  []webrtc.ICEConnectionState
}

func newPatchClient(t *testing.T) *patchClient {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	c := &patchClient{pc: pc, ssrc: make(chan webrtc.SSRC, 1)}
	pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		c.mu.Lock()
		c.states = append(c.states, s)
		c.mu.Unlock()
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		c.ssrc <- tr.SSRC()
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			c.mu.Lock()
			c.packets++
			c.mu.Unlock()
		}
	})
	return c
}

func (c *patchClient) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.packets
}

// localFrag gathers the client's candidates for its current local offer
// and returns them as a PATCH body.
func (c *patchClient) localFrag(t *testing.T) string {
	t.Helper()
	d, err := c.pc.LocalDescription().Unmarshal()
	if err != nil {
		t.Fatal(err)
	}
	m := d.MediaDescriptions[0]
	f := &rtc.Sdpfrag{Media: []rtc.SdpfragMedia{{Kind: "video", Port: "9", Proto: "RTP/AVP", Formats: []string{"0"}}}}
	f.ICEUfrag, _ = m.Attribute("ice-ufrag")
	f.ICEPwd, _ = m.Attribute("ice-pwd")
	f.Media[0].Mid, _ = m.Attribute("mid")
	for _, a := range m.Attributes {
		switch a.Key {
		case "candidate":
			f.Media[0].Candidates = append(f.Media[0].Candidates, a.Value)
		case "end-of-candidates":
			f.Media[0].EndOfCandidates = true
		}
	}
	return f.Marshal()
}

func (c *patchClient) patch(t *testing.T, ifMatch, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPatch, c.location, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", rtc.SdpfragType)
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func (c *patchClient) waitPackets(t *testing.T, more int, what string) {
	t.Helper()
	n := c.count()
	deadline := time.Now().Add(10 * time.Second)
	for c.count() < n+more {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d packets, waited for %d more", what, c.count()-n, more)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPatchTrickleAndRestart: a viewer offers without candidates, trickles
// them (204) and is watching; it restarts ICE (200 with the bridge's new
// credentials and candidates, a new ETag), applies the answer, and the
// video keeps coming. Stale and missing preconditions are refused.
func TestPatchTrickleAndRestart(t *testing.T) {
	b := newBench(t)
	pub, err := b.reg.Publish("live/cam", "encoder")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	video := &media.Track{Codec: media.H264{SPS: testSPS, PPS: testPPS}}
	if err := pub.SetTracks(video); err != nil {
		t.Fatal(err)
	}
	pub.Write(frame(video, 0, true, testSPS))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for n := 1; ; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			pub.Write(frame(video, n, n%50 == 0, testSPS))
		}
	}()
	defer func() { close(stop); <-done }()

	c := newPatchClient(t)
	offer, err := c.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	// The offer goes as created: no candidates (OBS, whip-whep.js).
	resp, err := http.Post(b.url+"/whep/live/cam", "application/sdp", strings.NewReader(offer.SDP))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d %s", resp.StatusCode, body)
	}
	c.location, c.etag, c.answer = resp.Header.Get("Location"), resp.Header.Get("ETag"), string(body)
	if len(c.etag) < 3 || c.etag[0] != '"' || c.etag == `"1"` || resp.Header.Get("Accept-Patch") != rtc.SdpfragType {
		t.Fatalf("201 headers: %v", resp.Header)
	}
	if !strings.Contains(c.answer, "a=end-of-candidates\r\n") || strings.Contains(strings.ReplaceAll(c.answer, "\r\n", ""), "\n") {
		t.Fatalf("answer without end-of-candidates or not CRLF:\n%q", c.answer)
	}
	// Media flows below with an answer that says a=rtcp-mux-only.
	if !strings.Contains(c.answer, "a=rtcp-mux-only\r\n") || rtc.MuxOnly(c.answer) != c.answer {
		t.Fatalf("a bundled section of the answer lacks a=rtcp-mux or a=rtcp-mux-only:\n%s", c.answer)
	}
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: c.answer}); err != nil {
		t.Fatal(err)
	}
	<-gathered

	// Trickle: one aggregated PATCH with the current ETag.
	frag := c.localFrag(t)
	if !strings.Contains(frag, "a=candidate:") {
		t.Fatalf("no candidates to trickle: %q", frag)
	}
	resp, body2 := c.patch(t, c.etag, frag)
	if resp.StatusCode != http.StatusNoContent || body2 != "" || resp.Header.Get("ETag") != "" {
		t.Fatalf("trickle: %d %v %q", resp.StatusCode, resp.Header, body2)
	}
	c.waitPackets(t, 50, "after trickle")

	// A candidate line that does not parse is the client's bug: 400 naming
	// it. One that parses but the bridge may not probe is dropped: 204.
	withCandidate := func(cand string) string {
		f, err := rtc.ParseSdpfrag(frag)
		if err != nil {
			t.Fatal(err)
		}
		f.Media[0].Candidates, f.Media[0].EndOfCandidates = []string{cand}, false
		return f.Marshal()
	}
	const garbled = "1 1 udp nine 192.0.2.1 5000 typ host"
	if resp, body := c.patch(t, c.etag, withCandidate(garbled)); resp.StatusCode != http.StatusBadRequest ||
		!regexp.MustCompile(`line \d+: a=candidate:`+garbled+" does not parse").MatchString(body) {
		t.Fatalf("trickle of a candidate that does not parse: %d %q, want 400 naming the line", resp.StatusCode, body)
	}
	if resp, body := c.patch(t, c.etag, withCandidate("1 1 udp 2122260223 0.0.0.0 5000 typ host")); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("trickle of an unprobeable candidate: %d %q, want 204 (dropped)", resp.StatusCode, body)
	}

	// Stale ETag: 412; the session is unharmed.
	if resp, _ := c.patch(t, `"stale"`, frag); resp.StatusCode != http.StatusPreconditionFailed {
		t.Fatalf("stale If-Match: %d", resp.StatusCode)
	}
	// An ICE restart must say If-Match: "*" (or at least have one).
	restart, err := c.pc.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
	if err != nil {
		t.Fatal(err)
	}
	gathered = webrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(restart); err != nil {
		t.Fatal(err)
	}
	<-gathered
	rfrag := c.localFrag(t)
	if resp, _ := c.patch(t, "", rfrag); resp.StatusCode != http.StatusPreconditionRequired {
		t.Fatalf("restart without If-Match: %d", resp.StatusCode)
	}
	c.mu.Lock()
	before := len(c.states)
	c.mu.Unlock()
	resp, answerFrag := c.patch(t, `"*"`, rfrag) // quoted, as RFC 9725's examples write it
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != rtc.SdpfragType {
		t.Fatalf("restart: %d %v %q", resp.StatusCode, resp.Header, answerFrag)
	}
	newETag := resp.Header.Get("ETag")
	if newETag == "" || newETag == c.etag {
		t.Fatalf("restart ETag %q (was %q)", newETag, c.etag)
	}
	af, err := rtc.ParseSdpfrag(answerFrag)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(c.answer, "a=ice-ufrag:"+af.ICEUfrag+"\r\n") || len(af.Media) != 1 || !af.Media[0].EndOfCandidates || len(af.Media[0].Candidates) == 0 {
		t.Fatalf("restart answer: %q", answerFrag)
	}
	full, err := rtc.ApplySdpfrag(c.answer, af)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: full}); err != nil {
		t.Fatal(err)
	}
	oldETag := c.etag
	c.answer, c.etag = full, newETag
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		states := append([]webrtc.ICEConnectionState(nil), c.states[before:]...)
		c.mu.Unlock()
		if n := len(states); n > 0 && states[n-1] == webrtc.ICEConnectionStateConnected {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ICE states after the restart: %v", states)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.waitPackets(t, 50, "after the ICE restart")
	// RTCP still gets through: a PLI reaches the publisher.
	requests := make(chan int, 10)
	pub.OnKeyframeRequest(func(track int) { requests <- track })
	if err := c.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(<-c.ssrc)}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-requests:
	case <-time.After(10 * time.Second):
		t.Fatal("a PLI sent after the ICE restart did not reach the publisher")
	}

	// The old ETag is stale now; the new one takes trickles.
	if resp, _ := c.patch(t, oldETag, rfrag); resp.StatusCode != http.StatusPreconditionFailed {
		t.Errorf("old ETag after the restart: %d", resp.StatusCode)
	}
	if resp, _ := c.patch(t, c.etag, rfrag); resp.StatusCode != http.StatusNoContent {
		t.Errorf("trickle after the restart: %d", resp.StatusCode)
	}
	if resp, _ := c.patch(t, c.etag, "not an sdpfrag"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("malformed: %d", resp.StatusCode)
	}
	// DELETE ends it, whatever If-Match says.
	req, _ := http.NewRequest(http.MethodDelete, c.location, nil)
	req.Header.Set("If-Match", `"whatever"`)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	if resp, _ := c.patch(t, c.etag, rfrag); resp.StatusCode != http.StatusNotFound {
		t.Errorf("PATCH after DELETE: %d", resp.StatusCode)
	}
}
