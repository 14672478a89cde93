package main

import (
	"bytes"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// TestNACKRetransmit: the answer lets the viewer NACK and ask for
// keyframes, and a viewer that reports a lost video packet (RTCP generic
// NACK) gets it again: same sequence number, timestamp and payload as the
// first time, from the sender's history of the shared packets. (The
// viewer NACKs packets it did get, so its SRTP replay protection is off:
// a browser's would drop the copies of packets it already has.)
func TestNACKRetransmit(t *testing.T) {
	b := startBridge(t, nil)
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/nack")
	waitStream(t, b, "live/nack")

	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.DisableSRTPReplayProtection(true)
	pc, sdp := newOffer(t, webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)))
	t.Cleanup(func() { _ = pc.Close() })
	var (
		mu    sync.Mutex
		seen  = map[uint16][]rtp.Packet{} // every copy of each video packet
		ssrc  uint32
		count int
	)
	got := make(chan struct{}, 1)
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() != webrtc.RTPCodecTypeVideo {
			return
		}
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			mu.Lock()
			ssrc = p.SSRC
			p.Payload = bytes.Clone(p.Payload)
			seen[p.SequenceNumber] = append(seen[p.SequenceNumber], *p)
			count++
			mu.Unlock()
			select {
			case got <- struct{}{}:
			default:
			}
		}
	})
	resp := post(t, "http://"+b.HTTPAddr().String()+"/whep/live/nack", "application/sdp", sdp, nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d %s", resp.StatusCode, body)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	// A browser NACKs and asks for keyframes only if the answer says it may.
	for _, fb := range []string{" nack\r\n", " nack pli\r\n"} {
		if !regexp.MustCompile(`a=rtcp-fb:\d+` + fb).Match(body) {
			t.Errorf("answer has no a=rtcp-fb:<pt>%q line for the video:\n%s", strings.TrimSpace(fb), body)
		}
	}

	// Wait for 100 video packets, then NACK two of the last 50 (the
	// history holds 256).
	deadline := time.After(15 * time.Second)
	for {
		mu.Lock()
		n := count
		mu.Unlock()
		if n >= 100 {
			break
		}
		select {
		case <-got:
		case <-deadline:
			t.Fatalf("viewer got %d video packets, want 100", n)
		}
	}
	mu.Lock()
	var want []uint16
	for seq, copies := range seen {
		if len(copies) == 1 && len(want) < 2 {
			want = append(want, seq)
		}
	}
	media := ssrc
	mu.Unlock()
	nack := &rtcp.TransportLayerNack{MediaSSRC: media, Nacks: rtcp.NackPairsFromSequenceNumbers(want)}
	if err := pc.WriteRTCP([]rtcp.Packet{nack}); err != nil {
		t.Fatal(err)
	}

	deadline = time.After(5 * time.Second)
	for {
		mu.Lock()
		done := true
		for _, seq := range want {
			if len(seen[seq]) < 2 {
				done = false
			}
		}
		mu.Unlock()
		if done {
			break
		}
		select {
		case <-got:
		case <-deadline:
			t.Fatalf("NACKed packets %v were not resent within 5 s", want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, seq := range want {
		first, again := seen[seq][0], seen[seq][1]
		if again.Timestamp != first.Timestamp || !bytes.Equal(again.Payload, first.Payload) || again.Marker != first.Marker {
			t.Errorf("packet %d resent as ts %d marker %v %d bytes, first sent as ts %d marker %v %d bytes",
				seq, again.Timestamp, again.Marker, len(again.Payload), first.Timestamp, first.Marker, len(first.Payload))
		}
	}
}
