package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
)

// tlsFiles writes a certificate for 127.0.0.1 and live.bridge.test from
// ca, valid until notAfter, into dir (renamed into place, as certbot
// does) and returns the files.
func tlsFiles(t *testing.T, ca *testkit.CA, dir string, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM := ca.Issue(t, notAfter, "127.0.0.1", "live.bridge.test")
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for name, b := range map[string][]byte{certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(name+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(name+".new", name); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// startListening starts a bridge logging to log on cfg's listen
// addresses as they are (startBridge sets them to loopback ports first),
// closed when the test ends.
func startListening(t *testing.T, cfg *config.Config, log *slog.Logger) *Bridge {
	t.Helper()
	return startListeningWith(t, cfg, Options{IncludeLoopback: true}, log)
}

// startListeningWith is startListening with opts.
func startListeningWith(t *testing.T, cfg *config.Config, opts Options, log *slog.Logger) *Bridge {
	t.Helper()
	b, err := Start(cfg, opts, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b
}

// httpsClient trusts roots only and follows no redirect.
func httpsClient(roots *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout:       10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func get(t *testing.T, c *http.Client, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, string(body)
}

// TestHTTPS: with tls.cert_file/key_file the pages and metrics are served
// over HTTPS with that certificate; with redirect_http, a page asked over
// HTTP gets a 308 to HTTPS while WHEP stays on HTTP; the expiry metric
// names the certificate's domains; replacing the files changes the
// certificate of the next connection, without a restart.
func TestHTTPS(t *testing.T) {
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	notAfter := time.Now().Add(30 * 24 * time.Hour).Truncate(time.Second)
	cfg := config.Default()
	cfg.TLS.CertFile, cfg.TLS.KeyFile = tlsFiles(t, ca, dir, notAfter)
	cfg.TLS.RedirectHTTP = true
	cfg.Listen.HTTPS = "127.0.0.1:0"
	cfg.Metrics.Enabled, cfg.Metrics.Token = true, "metrics-token-for-https"
	b := startBridge(t, cfg)
	base := "https://" + b.HTTPSAddr().String()
	client := httpsClient(ca.Pool())

	resp, body := get(t, client, base+"/watch/live/cam")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "/whep/live/cam") {
		t.Fatalf("GET %s/watch/live/cam: %d %.200s", base, resp.StatusCode, body)
	}
	if leaf := resp.TLS.PeerCertificates[0]; !leaf.NotAfter.Equal(notAfter) {
		t.Errorf("served certificate expires %v, want %v", leaf.NotAfter, notAfter)
	}

	resp, _ = get(t, client, "http://"+b.HTTPAddr().String()+"/watch/live/cam?x=1")
	if want := base + "/watch/live/cam?x=1"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Errorf("GET /watch over HTTP: %d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	// WHEP is not redirected: a viewer POSTs over HTTP and gets its answer.
	resp, _ = get(t, client, "http://"+b.HTTPAddr().String()+"/whep/live/cam")
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("GET /whep over HTTP: %d, want 204 (not redirected)", resp.StatusCode)
	}
	pc, sdp := newOffer(t, newViewerAPI(t))
	defer pc.Close()
	resp = postWith(t, client, "http://"+b.HTTPAddr().String()+"/whep/nobody/here", "application/sdp", sdp, nil)
	resp.Body.Close()
	if resp.StatusCode == http.StatusPermanentRedirect {
		t.Errorf("WHEP POST over HTTP redirected to %q", resp.Header.Get("Location"))
	}

	// The expiry as Prometheus reads it: a Unix time.
	expiry := func() time.Time {
		_, body := get(t, client, base+"/metrics", "Authorization", "Bearer metrics-token-for-https")
		const name = `bridge_tls_certificate_expiry_seconds{domain="live.bridge.test"} `
		for _, l := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(l, name); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("metric line %q: %v", l, err)
				}
				return time.Unix(int64(f), 0)
			}
		}
		t.Fatalf("no %s line in the metrics:\n%s", name, body)
		return time.Time{}
	}
	if got := expiry(); !got.Equal(notAfter) {
		t.Errorf("expiry metric %v, want %v", got, notAfter)
	}

	renewed := notAfter.Add(60 * 24 * time.Hour)
	tlsFiles(t, ca, dir, renewed)
	testkit.WaitFor(t, 15*time.Second, "the replaced certificate served to a new connection", func() bool {
		resp, _ := get(t, client, base+"/")
		return resp.TLS.PeerCertificates[0].NotAfter.Equal(renewed)
	})
	if got := expiry(); !got.Equal(renewed) {
		t.Errorf("expiry metric after the reload %v, want %v", got, renewed)
	}
}

// TestHTTPSOnly: with listen.http, rtmp and srt "" (off), the bridge
// serves HTTPS and RTMPS only: ffmpeg publishes over rtmps:// with the
// certificate verified against the test CA, and a viewer plays the stream
// over a WHEP POST to https://.
func TestHTTPSOnly(t *testing.T) {
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	cfg := config.Default()
	cfg.TLS.CertFile, cfg.TLS.KeyFile = tlsFiles(t, ca, dir, time.Now().Add(24*time.Hour))
	cfg.Listen.HTTP, cfg.Listen.RTMP, cfg.Listen.SRT = "", "", ""
	cfg.Listen.HTTPS, cfg.Listen.RTMPS, cfg.Listen.WebRTCUDP = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	b := startListening(t, cfg, testLog(t))
	if b.HTTPAddr() != nil || b.RTMPAddr() != nil || b.SRTAddr() != nil {
		t.Errorf("listeners that are off: http %v, rtmp %v, srt %v", b.HTTPAddr(), b.RTMPAddr(), b.SRTAddr())
	}

	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.StartFFmpeg(t, "-re", "-stream_loop", "-1", "-i", fixture(t, "h264-aac.flv"), "-c", "copy",
		"-tls_verify", "1", "-ca_file", caFile, "-f", "flv", "rtmps://"+b.RTMPSAddr().String()+"/live/cam")
	waitStream(t, b, "live/cam")
	v := joinURL(t, httpsClient(ca.Pool()), newViewerAPI(t), "https://"+b.HTTPSAddr().String()+"/whep/live/cam", nil)
	t.Cleanup(func() { _ = v.pc.Close() })
	v.waitFrames(t, 30, 20*time.Second)
}
