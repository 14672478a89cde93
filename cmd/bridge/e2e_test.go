package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/config"
)

// mediaDir holds the shared fixtures (../shared/media beside the repo).
const mediaDir = "../../../shared/media"

func fixture(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(mediaDir, name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("fixture %s missing (the shared media folder must sit beside the repo): %v", name, err)
	}
	return p
}

func needFFmpeg(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Fatal("ffmpeg not found: install it with `apt-get install ffmpeg` (.ci/run does)")
	}
	return p
}

// testLog sends the bridge's logs to the test log.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startBridge runs a bridge on free loopback ports with cfg (nil: defaults).
func startBridge(t *testing.T, cfg *config.Config) *Bridge {
	t.Helper()
	return startBridgeLog(t, cfg, testLog(t))
}

// startBridgeLog is startBridge logging to log.
func startBridgeLog(t *testing.T, cfg *config.Config, log *slog.Logger) *Bridge {
	t.Helper()
	if cfg == nil {
		cfg = config.Default()
	}
	cfg.Listen.HTTP = "127.0.0.1:0"
	cfg.Listen.RTMP = "127.0.0.1:0"
	cfg.Listen.WebRTCUDP = "127.0.0.1:0"
	cfg.Listen.SRT = "127.0.0.1:0"
	return startListening(t, cfg, log)
}

// publish runs ffmpeg publishing a looped fixture to rtmpURL until the
// test ends or the returned stop is called.
func publish(t *testing.T, file, rtmpURL string) (cmd *exec.Cmd, stop func()) {
	t.Helper()
	ff := needFFmpeg(t)
	cmd = exec.Command(ff, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
		"-i", fixture(t, file), "-c", "copy", "-f", "flv", rtmpURL)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			if s := stderr.String(); s != "" {
				t.Logf("ffmpeg publisher: %s", s)
			}
		})
	}
	t.Cleanup(stop)
	return cmd, stop
}

// waitStream polls until path is live on b.
func waitStream(t *testing.T, b *Bridge, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s, ok := b.registry.Get(path); ok && s.Tracks() != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("stream %q did not become live within 10 s", path)
}

// accessUnit is one H.264 frame as a viewer reassembled it.
type accessUnit struct {
	ts    uint32
	nalus [][]byte
	at    time.Time
}

// viewer is a pion WHEP client that reassembles the H.264 it receives.
type viewer struct {
	pc       *webrtc.PeerConnection
	location string
	mu       sync.Mutex
	aus      []accessUnit      // guarded by mu
	audio    []audioPacket     // guarded by mu
	reports  []senderReport    // guarded by mu
	kinds    map[uint32]string // guarded by mu: SSRC -> "audio"/"video"
	gotAU    chan struct{}
}

// audioPacket is one received Opus packet.
type audioPacket struct {
	ts      uint32
	payload []byte
}

// senderReport is the NTP/RTP mapping of one RTCP sender report.
type senderReport struct {
	kind string
	ntp  uint64
	rtp  uint32
}

func newViewerAPI(t *testing.T) *webrtc.API {
	t.Helper()
	return newViewerAPIOn(t, webrtc.NetworkTypeUDP4)
}

// newViewerAPIOn is newViewerAPI gathering on network (e.g. TCP only, for a
// client behind a firewall that drops UDP).
func newViewerAPIOn(t *testing.T, network webrtc.NetworkType) *webrtc.API {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{network})
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
}

// newOffer builds a recvonly audio+video offer with all candidates.
func newOffer(t *testing.T, api *webrtc.API) (*webrtc.PeerConnection, string) {
	t.Helper()
	return newOfferWith(t, api, webrtc.Configuration{})
}

// newOfferWith is newOffer from a PeerConnection with cfg (ICE servers, an
// ICE transport policy).
func newOfferWith(t *testing.T, api *webrtc.API, cfg webrtc.Configuration) (*webrtc.PeerConnection, string) {
	t.Helper()
	pc, err := api.NewPeerConnection(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	off, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(off); err != nil {
		t.Fatal(err)
	}
	<-gathered
	return pc, pc.LocalDescription().SDP
}

func post(t *testing.T, url, contentType, body string, hdr map[string]string) *http.Response {
	t.Helper()
	return postWith(t, http.DefaultClient, url, contentType, body, hdr)
}

// postWith POSTs with client (e.g. one bound to another source address).
func postWith(t *testing.T, client *http.Client, url, contentType, body string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func watch(t *testing.T, b *Bridge, path string, hdr map[string]string) *viewer {
	t.Helper()
	return watchWith(t, http.DefaultClient, b, path, hdr)
}

// watchWith is watch with the WHEP POST sent by client.
func watchWith(t *testing.T, client *http.Client, b *Bridge, path string, hdr map[string]string) *viewer {
	t.Helper()
	v := join(t, client, b, path, hdr)
	t.Cleanup(func() { _ = v.pc.Close() })
	return v
}

// join is watchWith for a caller that closes v.pc itself: the soak's
// viewers come and go, and a closed PeerConnection kept by a test cleanup
// would count as heap the bridge did not give back.
func join(t *testing.T, client *http.Client, b *Bridge, path string, hdr map[string]string) *viewer {
	t.Helper()
	return joinAPI(t, client, newViewerAPI(t), b, path, hdr)
}

// joinAPI is join with a viewer made by api (e.g. one restricted to TCP
// candidates).
func joinAPI(t *testing.T, client *http.Client, api *webrtc.API, b *Bridge, path string, hdr map[string]string) *viewer {
	t.Helper()
	return joinURL(t, client, api, "http://"+b.HTTPAddr().String()+"/whep/"+path, hdr)
}

// joinURL is joinAPI POSTing to the WHEP endpoint url (e.g. of a bridge
// run as a process).
func joinURL(t *testing.T, client *http.Client, api *webrtc.API, url string, hdr map[string]string) *viewer {
	t.Helper()
	pc, sdp := newOffer(t, api)
	v := &viewer{pc: pc, gotAU: make(chan struct{}, 1)}
	pc.OnTrack(func(tr *webrtc.TrackRemote, rcv *webrtc.RTPReceiver) {
		go v.readRTCP(rcv, tr.Kind().String())
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			go v.readVideo(tr)
		} else {
			go v.readAudio(tr)
		}
	})
	resp := postWith(t, client, url, "application/sdp", sdp, hdr)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/sdp" {
		t.Errorf("answer Content-Type = %q, want application/sdp", ct)
	}
	v.location = resp.Header.Get("Location")
	if !strings.HasPrefix(v.location, "http://") && !strings.HasPrefix(v.location, "https://") {
		t.Errorf("Location %q is not an absolute URL", v.location)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatalf("answer rejected: %v\n%s", err, body)
	}
	return v
}

func (v *viewer) readVideo(tr *webrtc.TrackRemote) {
	var depack codecs.H264Packet
	var cur [][]byte
	for {
		p, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		annexb, err := depack.Unmarshal(p.Payload)
		if err == nil && len(annexb) > 0 {
			var nalus h264.AnnexB
			if nalus.Unmarshal(annexb) == nil {
				cur = append(cur, nalus...)
			}
		}
		if p.Marker && len(cur) > 0 {
			v.mu.Lock()
			v.aus = append(v.aus, accessUnit{ts: p.Timestamp, nalus: cur, at: time.Now()})
			v.mu.Unlock()
			cur = nil
			select {
			case v.gotAU <- struct{}{}:
			default:
			}
		}
	}
}

func (v *viewer) readAudio(tr *webrtc.TrackRemote) {
	for {
		p, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		v.mu.Lock()
		v.audio = append(v.audio, audioPacket{ts: p.Timestamp, payload: append([]byte(nil), p.Payload...)})
		v.mu.Unlock()
	}
}

func (v *viewer) readRTCP(rcv *webrtc.RTPReceiver, kind string) {
	for {
		pkts, _, err := rcv.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			if sr, ok := p.(*rtcp.SenderReport); ok {
				v.mu.Lock()
				v.reports = append(v.reports, senderReport{kind: kind, ntp: sr.NTPTime, rtp: sr.RTPTime})
				v.mu.Unlock()
			}
		}
	}
}

func (v *viewer) frames() []accessUnit {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]accessUnit(nil), v.aus...)
}

// waitFrames waits until the viewer has n access units.
func (v *viewer) waitFrames(t *testing.T, n int, within time.Duration) []accessUnit {
	t.Helper()
	deadline := time.After(within)
	for {
		if f := v.frames(); len(f) >= n {
			return f
		}
		select {
		case <-v.gotAU:
		case <-deadline:
			t.Fatalf("viewer got %d frames, want %d within %v", len(v.frames()), n, within)
		}
	}
}

func naluTypes(au accessUnit) []h264.NALUType {
	var out []h264.NALUType
	for _, n := range au.nalus {
		out = append(out, h264.NALUType(n[0]&0x1f))
	}
	return out
}

// TestRTMPToWHEP is the core path: ffmpeg publishes over RTMP, a pion
// viewer plays over WHEP and sees decodable H.264 at the source's rate.
func TestRTMPToWHEP(t *testing.T) {
	b := startBridge(t, nil)
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/test")
	waitStream(t, b, "live/test")

	http.DefaultClient.CloseIdleConnections()
	baseline := runtime.NumGoroutine()
	v := watch(t, b, "live/test", nil)
	// 6 s at 30 fps; the first IDR may take up to a GOP (1 s) to arrive.
	aus := v.waitFrames(t, 180, 15*time.Second)

	first := aus[0]
	types := naluTypes(first)
	if len(types) < 3 || types[0] != h264.NALUTypeSPS || types[1] != h264.NALUTypePPS || !slices.Contains(types, h264.NALUTypeIDR) {
		t.Fatalf("first frame NAL types = %v, want SPS, PPS, then an IDR", types)
	}
	var sps h264.SPS
	if err := sps.Unmarshal(first.nalus[0]); err != nil {
		t.Fatalf("SPS: %v", err)
	}
	if sps.Width() != 640 || sps.Height() != 360 {
		t.Errorf("SPS says %dx%d, want 640x360", sps.Width(), sps.Height())
	}
	// A viewer joins from the cached GOP, sent at once with timestamps one
	// tick apart; the pacing checks start at the live edge.
	live := 1
	for live < len(aus) && aus[live].ts-aus[live-1].ts < 1000 {
		live++
	}
	t.Logf("joined with %d cached frames", live)
	aus = aus[live-1:]
	first = aus[0]
	idrs := 0
	for _, au := range aus {
		for _, nt := range naluTypes(au) {
			if nt == h264.NALUTypeIDR {
				idrs++
			}
		}
	}
	if idrs < 5 {
		t.Errorf("got %d IDRs in %d frames, want one per second (GOP 30)", idrs, len(aus))
	}

	last := aus[len(aus)-1]
	rtpSecs := float64(last.ts-first.ts) / 90000
	wallSecs := last.at.Sub(first.at).Seconds()
	fps := float64(len(aus)-1) / rtpSecs
	t.Logf("%d frames, RTP span %.2f s, wall span %.2f s, %.1f fps", len(aus), rtpSecs, wallSecs, fps)
	if fps < 28 || fps > 32 {
		t.Errorf("frame rate by RTP timestamps = %.1f, want about 30", fps)
	}
	if rtpSecs < wallSecs*0.9 || rtpSecs > wallSecs*1.1 {
		t.Errorf("RTP timestamps advanced %.2f s in %.2f s of wall time: not a 90 kHz clock in step with the source", rtpSecs, wallSecs)
	}
	for i := 1; i < len(aus); i++ {
		if d := int32(aus[i].ts - aus[i-1].ts); d <= 0 || d > 9000 {
			t.Fatalf("frame %d: RTP timestamp step %d, want 3000 (1/30 s at 90 kHz)", i, d)
		}
	}

	// DELETE ends the session and its goroutines.
	req, _ := http.NewRequest(http.MethodDelete, v.location, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE session: %d, want 200", resp.StatusCode)
	}
	_ = v.pc.Close()
	if n := b.sessions.Len(); n != 0 {
		t.Errorf("%d sessions left after DELETE", n)
	}
	waitGoroutines(t, baseline)

	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("second DELETE: %d, want 404", resp.StatusCode)
	}
}

// waitGoroutines waits for the goroutine count to come back to baseline.
func waitGoroutines(t *testing.T, baseline int) {
	t.Helper()
	// Keep-alive connections are not the session's.
	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	n := 0
	for time.Now().Before(deadline) {
		if n = runtime.NumGoroutine(); n <= baseline {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	t.Errorf("goroutines: %d, baseline %d\n%s", n, baseline, buf)
}

// TestWHEPRefusals: every bad request gets its status and message, and a
// viewer of the live stream keeps receiving frames meanwhile.
func TestWHEPRefusals(t *testing.T) {
	cfg := config.Default()
	cfg.Routes = append([]config.Route{{Path: "private/{name}", Ingest: []string{"rtmp"}, WHEP: config.WHEP{Token: "s3cret"}}}, cfg.Routes...)
	b := startBridge(t, cfg)
	base := "http://" + b.HTTPAddr().String()
	rtmpBase := "rtmp://" + b.RTMPAddr().String()
	publish(t, "h264-aac.flv", rtmpBase+"/live/test")
	publish(t, "h264-aac.flv", rtmpBase+"/private/cam")
	waitStream(t, b, "live/test")
	waitStream(t, b, "private/cam")

	v := watch(t, b, "live/test", nil)
	v.waitFrames(t, 10, 10*time.Second)

	_, goodOffer := newOffer(t, newViewerAPI(t))
	cases := []struct {
		name, path, ctype, body string
		hdr                     map[string]string
		status                  int
		msg                     string
	}{
		{"malformed SDP", "live/test", "application/sdp", "this is not SDP", nil, 400, "SDP"},
		{"wrong content type", "live/test", "application/json", goodOffer, nil, 415, "application/sdp"},
		{"unknown path", "live/nothing", "application/sdp", goodOffer, nil, 404, "no stream"},
		{"too large", "live/test", "application/sdp", strings.Repeat("a=x\r\n", 20000), nil, 413, "larger"},
		{"no H264", "live/test", "application/sdp", strings.ReplaceAll(goodOffer, "H264", "XXXX"), nil, 400, "H264"},
		{"missing token", "private/cam", "application/sdp", goodOffer, nil, 401, "token"},
		{"wrong token", "private/cam", "application/sdp", goodOffer, map[string]string{"Authorization": "Bearer nope"}, 401, "token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := post(t, base+"/whep/"+c.path, c.ctype, c.body, c.hdr)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status || !strings.Contains(string(body), c.msg) {
				t.Errorf("got %d %q, want %d containing %q", resp.StatusCode, body, c.status, c.msg)
			}
			if c.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer")
			}
		})
	}
	// The right token plays.
	watch(t, b, "private/cam", map[string]string{"Authorization": "Bearer s3cret"}).waitFrames(t, 10, 10*time.Second)

	// A second publisher on a live path is refused; the first keeps going.
	second, _ := publish(t, "h264-aac.flv", rtmpBase+"/live/test")
	done := make(chan error, 1)
	go func() { done <- second.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("second publisher exited 0, want a refusal")
		}
	case <-time.After(15 * time.Second):
		t.Error("second publisher was not refused within 15 s")
	}

	// CORS preflight, no auth needed.
	req, _ := http.NewRequest(http.MethodOptions, base+"/whep/private/cam", nil)
	req.Header.Set("Origin", "https://player.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") == "" ||
		!strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Location") ||
		resp.Header.Get("Accept-Post") != "application/sdp" {
		t.Errorf("OPTIONS: %d %v", resp.StatusCode, resp.Header)
	}
	req, _ = http.NewRequest(http.MethodDelete, base+"/sessions/0123456789abcdef", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE unknown session: %d, want 404", resp.StatusCode)
	}

	// The first viewer never stopped.
	n := len(v.frames())
	v.waitFrames(t, n+30, 5*time.Second)
}
