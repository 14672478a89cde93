package whip

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/h264reader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/testkit"
	hub "github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// Fixtures (see ../../../shared/media/README.md): 10 s of 640x360 30 fps
// H.264 (Constrained Baseline, IDR every 30 frames, SPS+PPS before each)
// and the matching 48 kHz stereo Opus in 20 ms Ogg pages.
const (
	mediaDir     = "../../../shared/media/"
	fixtureH264  = mediaDir + "h264-opus.h264"
	fixtureOgg   = mediaDir + "h264-opus.ogg"
	sdpDir       = "../../../shared/sdp/"
	testToken    = "s3cret"
	frameTime    = time.Second / 30
	opusFrame    = 20 * time.Millisecond
	connectLimit = 10 * time.Second
)

// testLogger logs to stderr with -v, else nowhere (pion goroutines may log
// after a test has ended, so t.Log cannot be used).
func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testAuthorize: live/... needs testToken; rtmp-only/... refuses WHIP;
// moved/... is published on another node;
// anything else has no route.
func testAuthorize(req access.Request) error {
	if req.Protocol != "whip" {
		return errors.New("unexpected protocol " + string(req.Protocol))
	}
	switch {
	case strings.HasPrefix(req.Path, "live/"):
		if req.Credential != testToken {
			return access.BadKey(access.Publish)
		}
		return nil
	case strings.HasPrefix(req.Path, "rtmp-only/"):
		return access.ErrProtocolNotAllowed
	case strings.HasPrefix(req.Path, "moved/"):
		return &access.Elsewhere{Location: "https://node2.example/whip/" + req.Path}
	}
	return access.ErrNoRoute
}

type testServer struct {
	reg      *hub.Registry
	sessions *rtc.Sessions
	engine   *rtc.Engine
	h        *Handler
	srv      *httptest.Server
	client   *http.Client
}

func newTestServer(t *testing.T) *testServer { return newTestServerWith(t, rtc.Limits{}) }

// newTestServerWith makes a server whose sessions table has the limits
// lim (zero fields: the defaults).
func newTestServerWith(t *testing.T, lim rtc.Limits) *testServer {
	t.Helper()
	log := testLogger()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	engine, err := rtc.New(rtc.Settings{UDP: udp, IncludeLoopback: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{
		reg:      hub.NewRegistry(log),
		sessions: rtc.NewSessions(lim, log),
		engine:   engine,
		// No keep-alive: idle connections would count as leaked goroutines.
		client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second},
	}
	ts.h = NewHandler(Config{Registry: ts.reg, Engine: engine, Sessions: ts.sessions, Authorize: testkit.Authorizer(testAuthorize), Log: log})
	mux := http.NewServeMux()
	ts.sessions.Register(mux)
	ts.h.Register(mux)
	ts.srv = httptest.NewServer(rtc.CORS(mux))
	t.Cleanup(func() {
		ts.srv.Close()
		ts.sessions.CloseAll("test over")
		_ = engine.Close()
	})
	return ts
}

// post sends body to /whip/path and returns the response and its body.
func (ts *testServer) post(t *testing.T, path, token, contentType, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.srv.URL+"/whip/"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return ts.do(t, req)
}

func (ts *testServer) delete(t *testing.T, location string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete, location, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ts.do(t, req)
}

func (ts *testServer) do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// waitStream returns the stream at path once its tracks are declared.
func (ts *testServer) waitStream(t *testing.T, path string, limit time.Duration) *hub.Stream {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if s, ok := ts.reg.Get(path); ok {
			select {
			case <-s.Ready():
				return s
			case <-time.After(time.Until(deadline)):
				t.Fatalf("stream %q has no tracks after %v", path, limit)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stream %q after %v", path, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// realOffer returns a captured offer from ../shared/sdp: the files end with
// the capturing tool's log after a blank line, which is cut off.
func realOffer(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(sdpDir + name)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if i := strings.Index(s, "\r\n\r\n"); i >= 0 {
		s = s[:i+2]
	}
	return s
}

// sentRecorder records every RTP packet a client sends, keyed by SSRC and
// sequence number: it is an interceptor on the client's API.
type sentRecorder struct {
	mu      sync.Mutex
	packets map[uint32]map[uint16]sentPacket
	firstTS map[uint32]uint32
}

type sentPacket struct {
	ts      uint32
	marker  bool
	payload []byte
}

func newSentRecorder() *sentRecorder {
	return &sentRecorder{packets: map[uint32]map[uint16]sentPacket{}, firstTS: map[uint32]uint32{}}
}

func (r *sentRecorder) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &recordingInterceptor{r: r}, nil
}

func (r *sentRecorder) record(h *rtp.Header, payload []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.packets[h.SSRC]
	if m == nil {
		m = map[uint16]sentPacket{}
		r.packets[h.SSRC] = m
		r.firstTS[h.SSRC] = h.Timestamp
	}
	if _, ok := m[h.SequenceNumber]; !ok {
		m[h.SequenceNumber] = sentPacket{ts: h.Timestamp, marker: h.Marker, payload: bytes.Clone(payload)}
	}
}

// lookup returns the packet sent with ssrc and seq, and its timestamp
// relative to the first one sent on ssrc.
func (r *sentRecorder) lookup(ssrc uint32, seq uint16) (sentPacket, uint32, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.packets[ssrc][seq]
	return p, p.ts - r.firstTS[ssrc], ok
}

// countTS returns how many packets were sent on ssrc with timestamp ts.
func (r *sentRecorder) countTS(ssrc, ts uint32) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.packets[ssrc] {
		if p.ts == ts {
			n++
		}
	}
	return n
}

type recordingInterceptor struct {
	interceptor.NoOp
	r *sentRecorder
}

func (i *recordingInterceptor) BindLocalStream(_ *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		i.r.record(h, payload)
		return w.Write(h, payload, a)
	})
}

// testClient is a pion WHIP publisher: H.264 and Opus tracks fed from the
// fixtures in real time.
type testClient struct {
	pc         *webrtc.PeerConnection
	video      *webrtc.TrackLocalStaticSample
	audio      *webrtc.TrackLocalStaticSample
	rec        *sentRecorder
	connected  chan struct{}
	location   string
	answer     string
	resp       *http.Response
	sendCancel context.CancelFunc
	sendWG     sync.WaitGroup

	mu   sync.Mutex
	plis []time.Time // guarded by mu
}

func newTestClient(t *testing.T) *testClient { return newTestClientWith(t, nil) }

// newTestClientWith makes a client whose packets go through wire (if not
// nil) after every other interceptor, as if it were the network.
func newTestClientWith(t *testing.T, wire interceptor.Factory) *testClient {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	rec := newSentRecorder()
	ir := &interceptor.Registry{}
	if wire != nil {
		ir.Add(wire) // first added is innermost: closest to the network
	}
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		t.Fatal(err)
	}
	ir.Add(rec)
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	c := &testClient{pc: pc, rec: rec, connected: make(chan struct{})}
	t.Cleanup(c.close)
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(c.connected) })
		}
	})
	c.video, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264}, "video", "test")
	if err != nil {
		t.Fatal(err)
	}
	c.audio, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "audio", "test")
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range []webrtc.TrackLocal{c.video, c.audio} {
		if _, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tr := range pc.GetTransceivers() {
		go func() { // the NACK responder and reports need the RTCP read
			for {
				pkts, _, err := tr.Sender().ReadRTCP()
				if err != nil {
					return
				}
				for _, p := range pkts {
					if _, ok := p.(*rtcp.PictureLossIndication); ok {
						c.mu.Lock()
						c.plis = append(c.plis, time.Now())
						c.mu.Unlock()
					}
				}
			}
		}()
	}
	return c
}

// pliTimes returns when the client received keyframe requests.
func (c *testClient) pliTimes() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.plis)
}

// offer returns the client's offer with all its candidates.
func (c *testClient) offer(t *testing.T) string {
	t.Helper()
	offer, err := c.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	return c.pc.LocalDescription().SDP
}

// publish POSTs the offer to path and applies the answer; it fails the
// test unless the answer is a 201.
func (c *testClient) publish(t *testing.T, ts *testServer, path string) {
	t.Helper()
	resp, body := ts.post(t, path, testToken, "application/sdp", c.offer(t))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /whip/%s: %s: %s", path, resp.Status, body)
	}
	c.resp, c.answer, c.location = resp, body, resp.Header.Get("Location")
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
		t.Fatalf("apply answer: %v", err)
	}
	select {
	case <-c.connected:
	case <-time.After(connectLimit):
		t.Fatalf("not connected after %v", connectLimit)
	}
}

// send starts feeding the fixtures in real time, for at most d (the
// fixtures last 10 s).
func (c *testClient) send(t *testing.T, d time.Duration) {
	t.Helper()
	aus := readFixtureAUs(t)
	pages := readFixturePages(t)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	c.sendCancel = cancel
	start := time.Now()
	c.sendWG.Add(2)
	go func() {
		defer c.sendWG.Done()
		for i, au := range aus {
			if !sleepUntil(ctx, start.Add(time.Duration(i)*frameTime)) {
				return
			}
			_ = c.video.WriteSample(media.Sample{Data: annexB(au), Duration: frameTime})
		}
	}()
	go func() {
		defer c.sendWG.Done()
		for i, p := range pages {
			if !sleepUntil(ctx, start.Add(time.Duration(i)*opusFrame)) {
				return
			}
			_ = c.audio.WriteSample(media.Sample{Data: p, Duration: opusFrame})
		}
	}()
}

// stopSending stops the senders and waits for them.
func (c *testClient) stopSending() {
	if c.sendCancel != nil {
		c.sendCancel()
	}
	c.sendWG.Wait()
}

func (c *testClient) close() {
	c.stopSending()
	_ = c.pc.Close()
}

func sleepUntil(ctx context.Context, at time.Time) bool {
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// readFixtureAUs returns the access units of the H.264 fixture as pion's
// h264reader gives them (SEI skipped), grouped by frame: the file has one
// slice per frame, so an access unit ends with each slice.
func readFixtureAUs(t testing.TB) [][][]byte {
	t.Helper()
	f, err := os.Open(fixtureH264)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := h264reader.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var aus [][][]byte
	var cur [][]byte
	for {
		nal, err := r.NextNAL()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		cur = append(cur, nal.Data)
		if nal.UnitType == h264reader.NalUnitTypeCodedSliceIdr || nal.UnitType == h264reader.NalUnitTypeCodedSliceNonIdr {
			aus = append(aus, cur)
			cur = nil
		}
	}
	if len(aus) != 300 {
		t.Fatalf("fixture has %d access units, expected 300", len(aus))
	}
	return aus
}

func annexB(au [][]byte) []byte {
	var b []byte
	for _, n := range au {
		b = append(b, 0, 0, 0, 1)
		b = append(b, n...)
	}
	return b
}

// readFixturePages returns the Opus packets of the Ogg fixture (one per
// page after the two header pages).
func readFixturePages(t testing.TB) [][]byte {
	t.Helper()
	f, err := os.Open(fixtureOgg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, _, err := oggreader.NewWith(f)
	if err != nil {
		t.Fatal(err)
	}
	var pages [][]byte
	for {
		p, _, err := r.ParseNextPage()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if bytes.HasPrefix(p, []byte("OpusTags")) {
			continue
		}
		pages = append(pages, p)
	}
	if len(pages) < 490 {
		t.Fatalf("fixture has %d Opus pages, expected about 500", len(pages))
	}
	return pages
}

func mediaSample(opus []byte) media.Sample { return media.Sample{Data: opus, Duration: opusFrame} }

// idrDropper is a client interceptor that loses one packet on the way: a
// middle FU-A fragment of the IDR after skip IDRs.
type idrDropper struct {
	skip int

	mu      sync.Mutex
	idrs    int    // IDR starts seen
	done    bool   // the packet was dropped
	dropped uint16 // its sequence number
}

func (d *idrDropper) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &dropInterceptor{d: d}, nil
}

// drop reports whether to lose the packet.
func (d *idrDropper) drop(h *rtp.Header, payload []byte) bool {
	if len(payload) < 2 || h264.NALUType(payload[0]&0x1f) != h264.NALUTypeFUA || payload[1]&0x1f != 5 {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if payload[1]&0x80 != 0 {
		d.idrs++
		return false
	}
	if d.done || d.idrs <= d.skip || payload[1]&0x40 != 0 {
		return false
	}
	d.done, d.dropped = true, h.SequenceNumber
	return true
}

func (d *idrDropper) droppedSeq() (uint16, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dropped, d.done
}

type dropInterceptor struct {
	interceptor.NoOp
	d *idrDropper
}

func (i *dropInterceptor) BindLocalStream(_ *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if i.d.drop(h, payload) {
			return len(payload), nil
		}
		return w.Write(h, payload, a)
	})
}
