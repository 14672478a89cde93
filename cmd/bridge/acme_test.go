package main

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
)

// TestACME: with tls.acme and listen.http off, the bridge obtains its
// certificate from a real ACME CA (pebble, which checks TLS-ALPN-01 on the
// bridge's HTTPS port); Ready names the domain until then; a viewer's
// WHEP POST over HTTPS verifies the certificate against pebble's root and
// the stream plays.
func TestACME(t *testing.T) {
	const domain = "live.bridge.test"
	httpsPort := testkit.FreeTCPPort(t)
	pebble := testkit.StartPebble(t, testkit.FreeTCPPort(t), httpsPort)
	cfg := config.Default()
	cfg.TLS.ACME = config.ACME{Domains: []string{domain}, Email: "ops@bridge.test", CacheDir: t.TempDir(),
		Directory: pebble.Directory, CARoot: pebble.CARoot}
	cfg.Listen.HTTP, cfg.Listen.SRT = "", ""
	cfg.Listen.HTTPS = fmt.Sprintf("127.0.0.1:%d", httpsPort)
	cfg.Listen.RTMP, cfg.Listen.WebRTCUDP = "127.0.0.1:0", "127.0.0.1:0"
	b := startListening(t, cfg, testLog(t))
	if err := b.Certs().Ready(); err == nil || !strings.Contains(err.Error(), domain) {
		t.Errorf("Ready right after start = %v, want an error naming %s", err, domain)
	}
	testkit.WaitFor(t, 45*time.Second, "a certificate from pebble (Ready)", func() bool { return b.Certs().Ready() == nil })

	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/cam")
	waitStream(t, b, "live/cam")
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pebble.IssuerRoots(t), ServerName: domain},
	}}
	v := joinURL(t, client, newViewerAPI(t), "https://"+b.HTTPSAddr().String()+"/whep/live/cam", nil)
	t.Cleanup(func() { _ = v.pc.Close() })
	v.waitFrames(t, 30, 20*time.Second)
}
