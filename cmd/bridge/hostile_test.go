package main

import (
	"crypto/rand"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
)

// clientFrom returns an HTTP client whose connections leave from ip, so a
// test can be a second client address on one host (every 127.0.0.0/8
// address is loopback on Linux).
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// frameWatch follows a viewer's frames in the background and keeps the
// longest time without one: what a user sees as a freeze.
type frameWatch struct {
	v    *viewer
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	maxGap time.Duration // guarded by mu
}

func watchFrames(v *viewer) *frameWatch {
	w := &frameWatch{v: v, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case now := <-tick.C:
				f := v.frames()
				if len(f) == 0 {
					continue
				}
				gap := now.Sub(f[len(f)-1].at)
				w.mu.Lock()
				w.maxGap = max(w.maxGap, gap)
				w.mu.Unlock()
			}
		}
	}()
	return w
}

func (w *frameWatch) end() time.Duration {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.maxGap
}

// maxFreeze is the longest pause in a viewer's frames the suites accept:
// the source sends 30 frames a second, and a user notices a frozen picture
// long before 2 s.
const maxFreeze = 2 * time.Second

// TestHostileInput plays one stream to one viewer while the bridge's every
// port is attacked: garbage and stalled handshakes on RTMP, an oversized
// RTMP message, random datagrams on SRT and ICE, 1,000 malformed or
// unauthorized WHIP/WHEP/PATCH requests, and more sessions from one
// address than it may hold, while a second address still gets in. The
// viewer must never freeze, and the bridge must give back what the attack
// took.
func TestHostileInput(t *testing.T) {
	cfg := config.Default()
	cfg.Limits = config.Limits{
		WebRTCPendingPerAddress:   4,
		WebRTCSessionsPerAddress:  8,
		RTMPConnectionsPerAddress: 16,
		SRTConnectionsPerAddress:  16,
	}.WithDefaults()
	cfg.Routes = append([]config.Route{{Path: "private/{name}", PublishKey: "s3cret-pub", ReadKey: "s3cret-read"}}, cfg.Routes...)
	cfg.Metrics.Enabled = true
	// The bridge's log goes to the test's and to logs, which the suite
	// reads to check that floods are not logged line by line.
	var logs testkit.LogBuf
	b := startBridgeLog(t, cfg, slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, &logs), nil)))
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/main")
	waitStream(t, b, "live/main")
	v := watch(t, b, "live/main", nil)
	v.waitFrames(t, 30, 10*time.Second)
	base := measure(t)
	t.Logf("baseline: %v", base)
	fw := watchFrames(v)

	var hold []net.Conn // attackers' connections, closed at the end
	defer func() {
		for _, c := range hold {
			c.Close()
		}
	}()
	t.Run("RTMP garbage and stalled handshakes", func(t *testing.T) {
		defer func() {
			// A scanner's garbage is logged once per address and interval.
			if n := logs.Count("rtmp connection failed", "not an RTMP handshake"); n > 1 {
				t.Errorf("%d log lines for 20 garbage connections from one address, want 1", n)
			}
		}()
		for i := range 40 {
			c, err := net.Dial("tcp", b.RTMPAddr().String())
			if err != nil {
				continue // refused at accept: fine
			}
			if i%2 == 0 {
				junk := make([]byte, 4096)
				_, _ = rand.Read(junk)
				_, _ = c.Write(junk)
				c.Close()
				continue
			}
			hold = append(hold, c) // says nothing: a stalled handshake
		}
		// 20 stalled connections and the publisher's from one address,
		// which may hold 16: the rest were closed at accept, and counted.
		// The server accepts from the kernel's backlog on its own time:
		// poll until it has seen the connections.
		refused := false
		for deadline := time.Now().Add(5 * time.Second); !refused && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			_, _, body := getMetrics(t, "http://"+b.HTTPAddr().String()+"/metrics", "")
			v, _ := sampleValue(body, `bridge_refused_total{protocol="rtmp",reason="rtmp_connections_per_address"}`)
			refused = v >= 1
		}
		if !refused {
			t.Errorf("no RTMP connection refused over rtmp_connections_per_address")
		}
	})
	t.Run("oversized RTMP message", func(t *testing.T) {
		// From another address: this one's RTMP slots are held by the
		// stalled handshakes above.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", b.RTMPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		c1 := make([]byte, 1537)
		c1[0] = 3
		if _, err := c.Write(c1); err != nil {
			t.Fatal(err)
		}
		s := make([]byte, 3073)
		if _, err := io.ReadFull(c, s); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		if _, err := c.Write(s[1:1537]); err != nil { // C2 echoes S1
			t.Fatal(err)
		}
		// A command message (type 20) declaring 16 MiB on chunk stream 3.
		hdr := []byte{0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0}
		body := make([]byte, 128)
		_, _ = c.Write(append(hdr, body...))
		for {
			if _, err := c.Write(append([]byte{0xc3}, body...)); err != nil {
				break // the bridge closed the connection: what we want
			}
		}
		// What the server sent before closing may still be buffered: read
		// it all; a timeout means the connection was left open.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Error("connection still open after an oversized message")
			}
		}
	})
	t.Run("random datagrams on SRT and ICE", func(t *testing.T) {
		for _, addr := range []net.Addr{b.SRTAddr(), b.UDPAddr()} {
			c, err := net.Dial("udp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			p := make([]byte, 1400)
			for i := range 2000 {
				n := 1 + i%len(p)
				_, _ = rand.Read(p[:n])
				if i%4 == 0 && n >= 20 {
					// Looks like STUN (type, length, magic cookie), so it
					// goes deeper than the first byte check.
					binary.BigEndian.PutUint16(p[0:], 0x0001)
					binary.BigEndian.PutUint16(p[2:], uint16(n-20))
					binary.BigEndian.PutUint32(p[4:], 0x2112A442)
				}
				_, _ = c.Write(p[:n])
			}
			c.Close()
		}
	})
	t.Run("1000 malformed or unauthorized HTTP requests", func(t *testing.T) {
		pc, offer := newOffer(t, newViewerAPI(t))
		_ = pc.Close() // only its offer is used
		base := "http://" + b.HTTPAddr().String()
		type req struct {
			method, path, ctype, body string
			hdr                       map[string]string
			want                      int
		}
		reqs := []req{
			{"POST", "/whep/live/main", "application/sdp", "v=0 garbage", nil, 400},
			{"POST", "/whep/live/main", "text/plain", offer, nil, 415},
			{"POST", "/whep/live/main", "application/sdp", strings.Repeat("a=x\r\n", 20000), nil, 413},
			{"POST", "/whep/private/cam", "application/sdp", offer, map[string]string{"Authorization": "Bearer wrong"}, 401},
			{"POST", "/whip/private/cam", "application/sdp", offer, nil, 401},
			{"POST", "/whip/live/a%20b", "application/sdp", offer, nil, 400},
			{"POST", "/whep/live/%2e%2e/x", "application/sdp", offer, nil, 400},
			{"POST", "/whep/" + strings.Repeat("a", 300), "application/sdp", offer, nil, 400},
			{"POST", "/whep/no/such/stream", "application/sdp", offer, nil, 404},
			{"PATCH", "/sessions/00112233445566778899aabbccddeeff", "application/trickle-ice-sdpfrag", "a=ice-ufrag:x\r\n", nil, 404},
			{"DELETE", "/sessions/nope", "", "", nil, 404},
			{"PUT", "/whep/live/main", "application/sdp", offer, nil, 405},
		}
		statuses := map[string]map[int]int{}
		for i := range 1000 {
			r := reqs[i%len(reqs)]
			hr, err := http.NewRequest(r.method, base+r.path, strings.NewReader(r.body))
			if err != nil {
				t.Fatal(err)
			}
			if r.ctype != "" {
				hr.Header.Set("Content-Type", r.ctype)
			}
			for k, v := range r.hdr {
				hr.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(hr)
			if err != nil {
				t.Fatalf("%s %s: %v", r.method, r.path, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			key := r.method + " " + r.path[:min(len(r.path), 40)]
			if statuses[key] == nil {
				statuses[key] = map[int]int{}
			}
			statuses[key][resp.StatusCode]++
			if resp.StatusCode != r.want && resp.StatusCode != http.StatusTooManyRequests {
				t.Errorf("%s: %d, want %d", key, resp.StatusCode, r.want)
				break
			}
		}
		t.Logf("statuses: %v", statuses)
	})
	t.Run("over-limit sessions from one address, a second address gets in", func(t *testing.T) {
		api := newViewerAPI(t)
		refused := false
		for i := 0; i < 20 && !refused; i++ {
			pc, offer := newOffer(t, api)
			pc.Close() // the session will never connect: it stays pending
			resp := post(t, "http://"+b.HTTPAddr().String()+"/whep/live/main", "application/sdp", offer, nil)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusCreated:
			case http.StatusTooManyRequests:
				refused = true
				if resp.Header.Get("Retry-After") == "" {
					t.Error("429 without Retry-After")
				}
			default:
				t.Fatalf("offer %d: %d", i, resp.StatusCode)
			}
		}
		if !refused {
			t.Fatal("20 never-connecting sessions from one address were all accepted")
		}
		_, _, body := getMetrics(t, "http://"+b.HTTPAddr().String()+"/metrics", "")
		if v, _ := sampleValue(body, `bridge_refused_total{protocol="webrtc",reason="webrtc_pending_per_address"}`); v < 1 {
			t.Errorf("the refusal is not counted in bridge_refused_total")
		}
		other := clientFrom("127.0.0.2")
		defer other.CloseIdleConnections()
		v2 := watchWith(t, other, b, "live/main", nil)
		v2.waitFrames(t, 10, 10*time.Second)
		_ = v2.pc.Close()
	})

	for _, c := range hold {
		c.Close()
	}
	hold = nil
	n := len(v.frames())
	v.waitFrames(t, n+30, 5*time.Second)
	if gap := fw.end(); gap > maxFreeze {
		t.Errorf("the viewer froze for %v during the attack (at most %v)", gap, maxFreeze)
	}
	end := waitResources(t, base, 30*time.Second)
	t.Logf("after the attack: %v (baseline %v)", end, base)
}
