package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/config"
)

// publicHost is the name clients use for the proxy (httptest's certificate
// covers it); proxyClient resolves it to the proxy.
const publicHost = "example.com"

// startProxy runs a TLS reverse proxy in front of b, as nginx or Caddy
// would be, that tells the bridge who its client is with setHeaders.
func startProxy(t *testing.T, b *Bridge, setHeaders func(*httputil.ProxyRequest)) *httptest.Server {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: b.HTTPAddr().String()}
	srv := httptest.NewTLSServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target) // the upstream request's Host is the bridge's own address
		setHeaders(pr)
	}})
	t.Cleanup(srv.Close)
	return srv
}

// xForwarded sets X-Forwarded-For (the client's connection address),
// -Host and -Proto, as Caddy does and nginx is told to in docs/deploy.md.
func xForwarded(pr *httputil.ProxyRequest) { pr.SetXForwarded() }

// rfc7239 sets Forwarded (RFC 7239) with the same facts.
func rfc7239(pr *httputil.ProxyRequest) {
	ip, _, _ := net.SplitHostPort(pr.In.RemoteAddr)
	pr.Out.Header.Set("Forwarded", `for="`+ip+`";proto=https;host="`+pr.In.Host+`"`)
}

// proxyClient is a client whose connections leave from ip and reach the
// proxy whatever host they name (publicHost resolving to it).
func proxyClient(px *httptest.Server, ip string) *http.Client {
	tr := px.Client().Transport.(*http.Transport).Clone()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", px.Listener.Addr().String())
	}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// publicBase is the proxy's URL as its clients know it.
func publicBase(px *httptest.Server) string {
	return "https://" + net.JoinHostPort(publicHost, strconv.Itoa(px.Listener.Addr().(*net.TCPAddr).Port))
}

// offerTo POSTs a fresh viewer's offer to whepURL with client and returns
// the answer's status, Location and body, and the viewer.
func offerTo(t *testing.T, client *http.Client, whepURL string, hdr map[string]string) (status int, location, body string, pc *webrtc.PeerConnection) {
	t.Helper()
	pc, sdp := newOffer(t, newViewerAPI(t))
	t.Cleanup(func() { _ = pc.Close() })
	resp := postWith(t, client, whepURL, "application/sdp", sdp, hdr)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location"), string(b), pc
}

func getPage(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// TestBehindReverseProxy: with the proxy's address in http.trusted_proxies,
// viewers that come through a TLS reverse proxy (X-Forwarded-* or
// Forwarded) get session URLs and page links on the proxy's https://
// host, and each client address counts against its own per-address limit;
// the same headers sent straight to the bridge by anyone else change
// nothing.
func TestBehindReverseProxy(t *testing.T) {
	cfg := config.Default()
	cfg.HTTP.TrustedProxies = []string{"127.0.0.1"} // the proxies connect from there
	cfg.Limits.WebRTCSessionsPerAddress = 1
	cfg.Limits.WebRTCPendingPerAddress = 1
	b := startBridge(t, cfg)
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/test")
	waitStream(t, b, "live/test")

	for _, tc := range []struct {
		name       string
		setHeaders func(*httputil.ProxyRequest)
		a, b       string // the two clients' addresses
	}{
		{"X-Forwarded", xForwarded, "127.0.0.2", "127.0.0.3"},
		{"Forwarded", rfc7239, "127.0.0.5", "127.0.0.6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			px := startProxy(t, b, tc.setHeaders)
			base := publicBase(px)
			clientA, clientB := proxyClient(px, tc.a), proxyClient(px, tc.b)

			status, loc, body, pc := offerTo(t, clientA, base+"/whep/live/test", nil)
			if status != http.StatusCreated {
				t.Fatalf("POST through the proxy: %d %s", status, body)
			}
			if !strings.HasPrefix(loc, base+"/sessions/") {
				t.Errorf("Location %q, want it on the proxy: %s/sessions/...", loc, base)
			}
			// The viewer plays: signalling went through the proxy, media
			// straight to the bridge's UDP port.
			video := make(chan struct{}, 1)
			pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
				if _, _, err := tr.ReadRTP(); err == nil && tr.Kind() == webrtc.RTPCodecTypeVideo {
					video <- struct{}{}
				}
			})
			if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-video:
			case <-time.After(10 * time.Second):
				t.Fatal("the viewer behind the proxy got no video within 10 s")
			}

			// Its address holds its one session; the other client's does not.
			if status, _, body, _ := offerTo(t, clientA, base+"/whep/live/test", nil); status != http.StatusTooManyRequests || !strings.Contains(body, "your address") {
				t.Errorf("second viewer from %s: %d %q, want 429 (its address is at its limit)", tc.a, status, body)
			}
			if status, _, body, _ := offerTo(t, clientB, base+"/whep/live/test", nil); status != http.StatusCreated {
				t.Errorf("viewer from %s, another client behind the same proxy: %d %q, want 201 (its own quota)", tc.b, status, body)
			}

			// The Location works through the proxy: DELETE frees the slot.
			req, _ := http.NewRequest(http.MethodDelete, loc, nil)
			resp, err := clientA.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("DELETE %s: %d", loc, resp.StatusCode)
			}
			if status, _, body, _ := offerTo(t, clientA, base+"/whep/live/test", nil); status != http.StatusCreated {
				t.Errorf("viewer from %s after its session was deleted: %d %q", tc.a, status, body)
			}

			// The pages link to the proxy's scheme and host.
			watch := getPage(t, clientA, base+"/watch/live/test")
			if !strings.Contains(watch, "<code>"+base+"/whep/live/test</code>") {
				t.Errorf("watch page does not show %s/whep/live/test:\n%s", base, watch)
			}
			index := getPage(t, clientA, base+"/")
			if !strings.Contains(index, "<code>"+base+"/whep/live/test</code>") {
				t.Errorf("index does not list %s/whep/live/test:\n%s", base, index)
			}
			publishPage := getPage(t, clientA, base+"/publish/live/cam")
			if !strings.Contains(publishPage, "<code>"+base+"/whip/live/cam</code>") {
				t.Errorf("publish page does not show %s/whip/live/cam:\n%s", base, publishPage)
			}
		})
	}

	// Straight to the bridge from an untrusted address, the same headers
	// are ignored: 127.0.0.3 (at its limit) is not believed, the session
	// counts against 127.0.0.4 itself, and its Location is the bridge's.
	direct := clientFrom("127.0.0.4")
	own := "http://" + b.HTTPAddr().String()
	spoof := map[string]string{"X-Forwarded-For": "127.0.0.3", "X-Forwarded-Proto": "https", "X-Forwarded-Host": publicHost,
		"Forwarded": `for=127.0.0.3;proto=https;host=` + publicHost}
	status, loc, body, _ := offerTo(t, direct, own+"/whep/live/test", spoof)
	if status != http.StatusCreated {
		t.Fatalf("direct POST claiming to be 127.0.0.3: %d %q, want 201 (the claim ignored)", status, body)
	}
	if !strings.HasPrefix(loc, own+"/sessions/") {
		t.Errorf("direct POST: Location %q, want %s/sessions/...", loc, own)
	}
	spoof = map[string]string{"X-Forwarded-For": "127.0.0.77", "Forwarded": "for=127.0.0.77"}
	if status, _, body, _ := offerTo(t, direct, own+"/whep/live/test", spoof); status != http.StatusTooManyRequests {
		t.Errorf("second direct POST from 127.0.0.4 claiming to be 127.0.0.77: %d %q, want 429 (counted as 127.0.0.4)", status, body)
	}

	// A reload that drops the proxy from http.trusted_proxies applies to
	// the next request: its headers are ignored.
	next := *b.node.Config()
	next.HTTP.TrustedProxies = nil
	b.Reload(&next)
	px := startProxy(t, b, xForwarded)
	status, loc, body, _ = offerTo(t, proxyClient(px, "127.0.0.8"), publicBase(px)+"/whep/live/test", nil)
	if status != http.StatusCreated || !strings.HasPrefix(loc, own+"/sessions/") {
		t.Errorf("through a proxy no longer trusted: %d, Location %q (%s), want 201 with the bridge's own %s/sessions/...", status, loc, body, own)
	}
}
