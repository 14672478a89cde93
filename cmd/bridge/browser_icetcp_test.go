package main

import (
	"fmt"
	"net"
	"testing"

	"github.com/wishbridge/bridge/config"
)

// TestBrowserICETCP: headless Chromium behind a firewall that drops UDP to
// the bridge's media port (an nftables rule) plays a WHEP stream over the
// bridge's passive ICE-TCP candidate (listen.webrtc_tcp): its first frame
// is decoded and its selected candidate pair is TCP.
func TestBrowserICETCP(t *testing.T) {
	needBrowser(t)
	cfg := config.Default()
	cfg.Listen.WebRTCTCP = "127.0.0.1:0"
	b := startBridge(t, cfg)
	udp := b.UDPAddr().(*net.UDPAddr)
	nftDrop(t, fmt.Sprintf("bridge_test_icetcp_%d", udp.Port), fmt.Sprintf("udp dport %d", udp.Port))
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/tcp")
	waitStream(t, b, "live/tcp")

	port := b.HTTPAddr().(*net.TCPAddr).Port
	_, _, transports := chromiumViewers(t, 1, fmt.Sprintf("http://127.0.0.1:%d/whep/live/tcp", port))
	if transports[0] != "tcp" {
		t.Errorf("Chromium played over %q with UDP to the bridge dropped, want tcp", transports[0])
	}
}
