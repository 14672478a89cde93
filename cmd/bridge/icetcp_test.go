package main

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/wishbridge/bridge/config"
)

// tcpCandidates returns the answer's passive TCP candidates.
func tcpCandidates(answer string) []string {
	var out []string
	for _, l := range strings.Split(answer, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "a=candidate:") && strings.Contains(strings.ToLower(l), " tcp ") {
			out = append(out, l)
		}
	}
	return out
}

// selectedNetwork is the transport of v's selected ICE candidate pair
// ("udp", "tcp"), "" before there is one.
func selectedNetwork(v *viewer) string {
	for _, r := range v.pc.GetReceivers() {
		tr := r.Transport()
		if tr == nil {
			continue
		}
		pair, err := tr.ICETransport().GetSelectedCandidatePair()
		if err == nil && pair != nil {
			return pair.Local.Protocol.String()
		}
	}
	return ""
}

// playsH264 checks that v decodes the stream: frames arrive and the first
// is a keyframe with its parameter sets.
func playsH264(t *testing.T, v *viewer) {
	t.Helper()
	aus := v.waitFrames(t, 30, 15*time.Second)
	types := naluTypes(aus[0])
	if len(types) < 3 || types[0] != h264.NALUTypeSPS || types[1] != h264.NALUTypePPS {
		t.Fatalf("first frame NAL types = %v, want SPS, PPS, then an IDR", types)
	}
	var sps h264.SPS
	if err := sps.Unmarshal(aus[0].nalus[0]); err != nil {
		t.Fatalf("SPS: %v", err)
	}
}

// TestICETCP: with listen.webrtc_tcp set, a WHEP viewer that can only use
// TCP (a client behind a firewall that drops UDP) plays the stream over
// the bridge's passive ICE-TCP candidate, and a UDP viewer still plays over
// UDP.
func TestICETCP(t *testing.T) {
	cfg := config.Default()
	cfg.Listen.WebRTCTCP = "127.0.0.1:0"
	b := startBridge(t, cfg)
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/tcp")
	waitStream(t, b, "live/tcp")

	tcp := joinAPI(t, http.DefaultClient, newViewerAPIOn(t, webrtc.NetworkTypeTCP4), b, "live/tcp", nil)
	t.Cleanup(func() { _ = tcp.pc.Close() })
	cands := tcpCandidates(tcp.pc.RemoteDescription().SDP)
	_, port, _ := net.SplitHostPort(b.TCPAddr().String())
	if len(cands) == 0 || !strings.Contains(cands[0], " "+port+" typ host tcptype passive") {
		t.Fatalf("answer's TCP candidates %q, want a passive one on %s", cands, b.TCPAddr())
	}
	playsH264(t, tcp)
	if n := selectedNetwork(tcp); n != "tcp" {
		t.Errorf("TCP-only viewer plays over %q, want tcp", n)
	}

	udp := watch(t, b, "live/tcp", nil)
	playsH264(t, udp)
	if n := selectedNetwork(udp); n != "udp" {
		t.Errorf("UDP viewer plays over %q, want udp", n)
	}
}

// TestICETCPOff: without listen.webrtc_tcp (the default) the answer has
// no TCP candidate, and a TCP-only viewer has nothing to connect to.
func TestICETCPOff(t *testing.T) {
	b := startBridge(t, nil)
	if b.TCPAddr() != nil {
		t.Fatalf("ICE-TCP listening on %s by default", b.TCPAddr())
	}
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/tcp")
	waitStream(t, b, "live/tcp")
	v := joinAPI(t, http.DefaultClient, newViewerAPIOn(t, webrtc.NetworkTypeTCP4), b, "live/tcp", nil)
	t.Cleanup(func() { _ = v.pc.Close() })
	if c := tcpCandidates(v.pc.RemoteDescription().SDP); len(c) != 0 {
		t.Errorf("answer has TCP candidates %q with ICE-TCP off", c)
	}
}
