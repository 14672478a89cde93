package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/config"
)

// connectEnv holds the number of viewers per client kind for
// TestConnectTimes; connectURLEnv, set for the copy of the test binary
// that runs in a network namespace, the WHEP URL it joins.
const (
	connectEnv    = "BENCH_CONNECT"
	connectURLEnv = "BENCH_CONNECT_URL"
)

// TestConnectTimes is a benchmark, run by `make bench` (BENCH_CONNECT=N)
// and skipped in `make test`: N pion viewers one after another join a
// stream published from the 4 s GOP fixture, and the log gets ICE
// connected and time to first frame (first whole video frame received),
// p50/p95 from the WHEP POST, for a client that offers only loopback
// candidates (the bridge's UDP on the wildcard address, as by default) and
// for one in another network namespace over a veth pair; each for server
// sessions with full ICE (the default) and with ICE-lite.
func TestConnectTimes(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv(connectEnv))
	if n <= 0 {
		t.Skip("a benchmark: set " + connectEnv + "=N viewers per client kind (make bench does)")
	}
	hostIP, ns := vethNamespace(t)
	for _, lite := range []bool{false, true} {
		ice := "full ICE"
		if lite {
			ice = "ICE-lite"
		}
		b := startConnectBridge(t, lite)
		publish(t, "long-gop.flv", "rtmp://"+b.RTMPAddr().String()+"/live/connect")
		waitStream(t, b, "live/connect")
		port := b.HTTPAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()
		loopback := interfaceViewerAPI(t, true)
		var ices, ttffs []time.Duration
		for range n {
			i, f := connectOnce(t, loopback, fmt.Sprintf("http://127.0.0.1:%d/whep/live/connect", port))
			ices, ttffs = append(ices, i), append(ttffs, f)
		}
		logConnect(t, "pion loopback", ice, ices, ttffs)
		if ns != "" {
			ices, ttffs = namespaceViewers(t, ns, n, fmt.Sprintf("http://%s:%d/whep/live/connect", hostIP, port))
			logConnect(t, "pion veth namespace", ice, ices, ttffs)
		}
		ices, ttffs, _ = chromiumViewers(t, n, fmt.Sprintf("http://127.0.0.1:%d/whep/live/connect", port))
		logConnect(t, "headless Chromium", ice, ices, ttffs)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = b.Close(ctx)
		cancel()
	}
}

// TestConnectTimesClient is TestConnectTimes's viewer in the network
// namespace: a copy of the test binary run there with connectURLEnv set;
// it prints one "connect: ICE_NS TTFF_NS" line per viewer.
func TestConnectTimesClient(t *testing.T) {
	url := os.Getenv(connectURLEnv)
	if url == "" {
		t.Skip("run by TestConnectTimes in a network namespace")
	}
	n, _ := strconv.Atoi(os.Getenv(connectEnv))
	api := interfaceViewerAPI(t, false)
	for range n {
		i, f := connectOnce(t, api, url)
		fmt.Printf("connect: %d %d\n", i, f)
	}
}

// startConnectBridge runs a bridge with WebRTC UDP and HTTP on the
// wildcard address (so that a client in another namespace reaches both),
// server sessions ICE-lite if lite.
func startConnectBridge(t *testing.T, lite bool) *Bridge {
	cfg := config.Default()
	cfg.Listen.HTTP = ":0"
	cfg.Listen.RTMP = "127.0.0.1:0"
	cfg.Listen.WebRTCUDP = ":0"
	cfg.Listen.SRT = "127.0.0.1:0"
	b, err := Start(cfg, Options{IncludeLoopback: true, ICELite: lite}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// interfaceViewerAPI is a viewer that gathers only on loopback interfaces
// if loopback, else only on the others: the namespace's viewer offers no
// loopback candidate, as a client on another host offers none (pion pairs
// an unreachable loopback candidate first, among pairs of equal priority,
// and then nominates one check interval, 200 ms, late).
func interfaceViewerAPI(t *testing.T, loopback bool) *webrtc.API {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(loopback)
	se.SetInterfaceFilter(func(name string) bool { return strings.HasPrefix(name, "lo") == loopback })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se))
}

// connectOnce joins url with a viewer of api and returns the times from
// the POST to ICE connected and to the first whole video frame, then
// ends the session (DELETE).
func connectOnce(t *testing.T, api *webrtc.API, url string) (ice, ttff time.Duration) {
	t.Helper()
	pc, sdp := newOffer(t, api)
	defer pc.Close()
	connected := make(chan time.Time, 1)
	pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		if s == webrtc.ICEConnectionStateConnected {
			connected <- time.Now()
		}
	})
	v := &viewer{pc: pc, gotAU: make(chan struct{}, 1)}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			go v.readVideo(tr)
		}
	})
	start := time.Now()
	resp := post(t, url, "application/sdp", sdp, nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, body)
	}
	defer deleteSession(resp.Header.Get("Location"))
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatalf("answer rejected: %v", err)
	}
	select {
	case at := <-connected:
		ice = at.Sub(start)
	case <-time.After(10 * time.Second):
		t.Fatal("ICE did not connect within 10 s")
	}
	return ice, v.waitFrames(t, 1, 10*time.Second)[0].at.Sub(start)
}

func deleteSession(location string) {
	req, err := http.NewRequest(http.MethodDelete, location, nil)
	if err != nil {
		return
	}
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
}

// logConnect logs p50 and p95 of the ICE and first-frame times.
func logConnect(t *testing.T, client, ice string, ices, ttffs []time.Duration) {
	pct := func(d []time.Duration, p int) time.Duration {
		s := slices.Sorted(slices.Values(d))
		return s[len(s)*p/100].Round(100 * time.Microsecond)
	}
	t.Logf("connect: %-20s %-8s n=%d  ICE connected p50 %v p95 %v  first frame p50 %v p95 %v",
		client, ice, len(ices), pct(ices, 50), pct(ices, 95), pct(ttffs, 50), pct(ttffs, 95))
}

// vethNamespace creates a network namespace joined to this one by a veth
// pair (removed when the test ends) and returns the host side's address
// and the namespace's name. Where the kernel refuses, it returns no name
// (the namespace client is left out, with the reason logged); with
// CI=true that fails the test.
func vethNamespace(t *testing.T) (hostIP, ns string) {
	id := os.Getpid() % 10000
	ns = fmt.Sprintf("bconn%d", id)
	host, peer := fmt.Sprintf("bch%d", id), fmt.Sprintf("bcp%d", id)
	hostIP = fmt.Sprintf("10.231.%d.1", id%256)
	steps := [][]string{
		{"netns", "add", ns},
		{"link", "add", host, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", ns},
		{"addr", "add", hostIP + "/30", "dev", host},
		{"link", "set", host, "up"},
		{"-n", ns, "addr", "add", fmt.Sprintf("10.231.%d.2/30", id%256), "dev", peer},
		{"-n", ns, "link", "set", peer, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", host).Run()
		_ = exec.Command("ip", "netns", "del", ns).Run()
	})
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			msg := fmt.Sprintf("network namespace: ip %s: %v: %s", strings.Join(s, " "), err, bytes.TrimSpace(out))
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Log(msg + ": the namespace client is left out")
			return "", ""
		}
	}
	return hostIP, ns
}

// chromiumViewers runs n headless Chromium viewers of url, one after
// another (test/browser/connect.js, which measures in the page), and
// returns their times and the transport each played over (udp, tcp).
func chromiumViewers(t *testing.T, n int, url string) (ices, ttffs []time.Duration, transports []string) {
	t.Helper()
	node, watch := needBrowser(t)
	script := filepath.Join(filepath.Dir(watch), "connect.js")
	np := startNode(t, "connect", node, script, []string{url, strconv.Itoa(n)}, "CONNECT_TIMEOUT_MS=10000",
		time.Duration(n)*15*time.Second+30*time.Second, 10*time.Second)
	<-np.logDone
	err := np.cmd.Wait()
	np.cancel()
	ices, ttffs, transports = connectLines(np.stdout)
	if err != nil || len(ices) != n {
		t.Fatalf("Chromium viewers of %s (connect.js): %v: %d played, want %d", url, err, len(ices), n)
	}
	return ices, ttffs, transports
}

// connectLines reads the "connect: ICE_NS TTFF_NS [TRANSPORT]" lines a
// viewer process prints.
func connectLines(out *bytes.Buffer) (ices, ttffs []time.Duration, transports []string) {
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var i, f int64
		if _, err := fmt.Sscanf(sc.Text(), "connect: %d %d", &i, &f); err == nil {
			ices, ttffs = append(ices, time.Duration(i)), append(ttffs, time.Duration(f))
			fields := strings.Fields(sc.Text())
			transports = append(transports, strings.Join(fields[3:], ""))
		}
	}
	return ices, ttffs, transports
}

// namespaceViewers runs n viewers of url in ns (TestConnectTimesClient in
// a copy of this test binary) and returns their times.
func namespaceViewers(t *testing.T, ns string, n int, url string) (ices, ttffs []time.Duration) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe, "-test.run", "^TestConnectTimesClient$", "-test.count", "1")
	cmd.Env = append(os.Environ(), connectURLEnv+"="+url, fmt.Sprintf("%s=%d", connectEnv, n))
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stdout
	if err := cmd.Run(); err != nil {
		t.Fatalf("viewers in namespace %s: %v\n%s", ns, err, stdout.String())
	}
	ices, ttffs, _ = connectLines(&stdout)
	if len(ices) != n {
		t.Fatalf("viewers in namespace %s: %d results, want %d\n%s", ns, len(ices), n, stdout.String())
	}
	return ices, ttffs
}
