package whep

import (
	"bytes"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// A Constrained Baseline 320x240 SPS and its PPS, as x264 writes them.
var (
	testSPS  = []byte{0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x20}
	testSPS2 = []byte{0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x3d, 0xa1, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48}
	testPPS  = []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}
)

// frame is a video unit tagged with its frame number n: an IDR (with SPS
// and PPS) or a P slice, whose last payload byte is n.
func frame(tr *media.Track, n int, key bool, sps []byte) *media.Unit {
	pts := time.Duration(n) * time.Second / 30
	if key {
		return &media.Unit{Track: tr, PTS: pts, DTS: pts, Key: true, NALUs: [][]byte{sps, testPPS, {0x65, 0x88, byte(n)}}}
	}
	return &media.Unit{Track: tr, PTS: pts, DTS: pts, NALUs: [][]byte{{0x41, 0x9a, byte(n)}}}
}

// bench is a WHEP handler on a loopback UDP port over a registry.
type bench struct {
	reg      *media.Registry
	sessions *rtc.Sessions
	handler  *Handler
	url      string
	logs     *syncBuf
	// editOffer, if set, rewrites the offers of offerOnly's viewers
	// before they are POSTed (their local description stays pion's).
	editOffer func(string) string
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newBench(t *testing.T) *bench { t.Helper(); return newBenchWith(t, rtc.Limits{}) }

// newBenchWith is newBench with the sessions table's limits lim (zero
// fields: the defaults).
func newBenchWith(t *testing.T, lim rtc.Limits) *bench {
	t.Helper()
	logs := &syncBuf{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	engine, err := rtc.New(rtc.Settings{UDP: udp, IncludeLoopback: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	sessions := rtc.NewSessions(lim, log)
	reg := media.NewRegistry(log)
	mux := http.NewServeMux()
	sessions.Register(mux)
	h := NewHandler(Config{
		Registry:  reg,
		Engine:    engine,
		Sessions:  sessions,
		Authorize: testkit.AllowAll,
		Log:       log,
	})
	h.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		sessions.CloseAll("test over")
		_ = engine.Close()
	})
	return &bench{reg: reg, sessions: sessions, handler: h, url: srv.URL, logs: logs}
}

// viewer is a pion WHEP client that records the video it receives.
type viewer struct {
	pc   *webrtc.PeerConnection
	ssrc chan uint32

	mu      sync.Mutex
	packets []rtpInfo
	aus     []au
	got     chan struct{}
}

type rtpInfo struct {
	seq uint16
	ts  uint32
}

// au is one received access unit: its timestamp, the NAL unit types and
// the frame number (the last byte of its last NAL unit).
type au struct {
	ts    uint32
	types []byte
	n     byte
}

func (a au) key() bool { return len(a.types) > 0 && a.types[len(a.types)-1] == 5 }

func watch(t *testing.T, b *bench, path string) *viewer {
	t.Helper()
	v, answer := offerOnly(t, b, path)
	if err := v.pc.SetRemoteDescription(answer); err != nil {
		t.Fatal(err)
	}
	return v
}

// offerOnly is watch up to the answer, which it returns unused: until the
// viewer sets it, ICE and DTLS cannot complete. With extra kinds, the
// viewer receives those too (it records video only).
func offerOnly(t *testing.T, b *bench, path string, extra ...webrtc.RTPCodecType) (*viewer, webrtc.SessionDescription) {
	t.Helper()
	v := newViewer(t)
	offer := v.offer(t, extra...)
	if b.editOffer != nil {
		offer = b.editOffer(offer)
	}
	return v, webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: postOffer(t, b, path, offer)}
}

// offer receives video and the extra kinds and returns the viewer's offer,
// with every candidate gathered.
func (v *viewer) offer(t *testing.T, extra ...webrtc.RTPCodecType) string {
	t.Helper()
	for _, kind := range append([]webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo}, extra...) {
		if _, err := v.pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	off, err := v.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(v.pc)
	if err := v.pc.SetLocalDescription(off); err != nil {
		t.Fatal(err)
	}
	<-gathered
	return v.pc.LocalDescription().SDP
}

// newViewer returns a pion viewer (default codecs and interceptors, UDP4
// loopback candidates) that records the video it receives; it has no
// transceivers yet.
func newViewer(t *testing.T) *viewer {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	v := &viewer{pc: pc, ssrc: make(chan uint32, 1), got: make(chan struct{}, 1)}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() != webrtc.RTPCodecTypeVideo {
			return
		}
		v.ssrc <- uint32(tr.SSRC())
		var depack codecs.H264Packet
		var cur au
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			v.mu.Lock()
			v.packets = append(v.packets, rtpInfo{seq: p.SequenceNumber, ts: p.Timestamp})
			v.mu.Unlock()
			annexb, err := depack.Unmarshal(p.Payload)
			if err == nil {
				for _, n := range bytes.Split(annexb, []byte{0, 0, 0, 1}) {
					if len(n) > 0 {
						cur.types = append(cur.types, n[0]&0x1f)
						cur.n = n[len(n)-1]
					}
				}
			}
			if p.Marker {
				cur.ts = p.Timestamp
				v.mu.Lock()
				v.aus = append(v.aus, cur)
				v.mu.Unlock()
				cur = au{}
				select {
				case v.got <- struct{}{}:
				default:
				}
			}
		}
	})
	return v
}

// wait returns the access units once there are n.
func (v *viewer) wait(t *testing.T, n int) []au {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		v.mu.Lock()
		if len(v.aus) >= n {
			out := append([]au(nil), v.aus...)
			v.mu.Unlock()
			return out
		}
		have := len(v.aus)
		v.mu.Unlock()
		select {
		case <-v.got:
		case <-deadline:
			t.Fatalf("viewer has %d access units, waited for %d", have, n)
		}
	}
}

func (v *viewer) pli(t *testing.T, ssrc uint32) {
	t.Helper()
	if err := v.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
		t.Fatal(err)
	}
}

func numbers(aus []au) []int {
	out := make([]int, len(aus))
	for i, a := range aus {
		out[i] = int(a.n)
	}
	return out
}

// TestWHEPViewerLifecycle follows one viewer through the GOP join, keyframe
// requests answered from the cache and forwarded upstream, a compatible
// publisher reconnect and an incompatible one.
func TestWHEPViewerLifecycle(t *testing.T) {
	b := newBench(t)
	b.reg.SetGrace(func(string) time.Duration { return time.Minute })
	video := &media.Track{Codec: media.H264{SPS: testSPS, PPS: testPPS}}
	pub := b.publish(t, "live/cam", "encoder 1", video)
	defer func() { pub.Close() }()
	// A GOP in progress before the viewer comes.
	pub.Write(frame(video, 0, true, testSPS)) // an older GOP
	pub.Write(frame(video, 1, false, testSPS))
	for n := 10; n < 20; n++ {
		pub.Write(frame(video, n, n == 10, testSPS))
	}

	// Join: the viewer gets the cached GOP at once, from its IDR with the
	// parameter sets, one tick apart, then live with the source spacing.
	v := watch(t, b, "live/cam")
	aus := v.wait(t, 10)
	if got := numbers(aus); got[0] != 10 || got[9] != 19 {
		t.Fatalf("first frames %v, expected the GOP from frame 10", got)
	}
	if !aus[0].key() || !bytes.Equal(aus[0].types[:2], []byte{7, 8}) {
		t.Fatalf("first access unit has NAL unit types %v, expected SPS, PPS, IDR", aus[0].types)
	}
	for i := 1; i < 10; i++ {
		if d := aus[i].ts - aus[i-1].ts; d != 1 {
			t.Fatalf("cached frame %d sent %d ticks after the previous one, expected 1", i, d)
		}
	}
	pub.Write(frame(video, 20, false, testSPS))
	pub.Write(frame(video, 21, false, testSPS))
	aus = v.wait(t, 12)
	if d := aus[10].ts - aus[9].ts; d != 3000 {
		t.Fatalf("first live frame %d ticks after the last cached one, expected 3000", d)
	}

	// PLI with no publisher to ask: the GOP again, squeezed after the last
	// frame sent, then live keeps its timing.
	ssrc := <-v.ssrc
	v.pli(t, ssrc)
	aus = v.wait(t, 12+12)
	if got := numbers(aus[12:24]); got[0] != 10 || got[11] != 21 || !aus[12].key() {
		t.Fatalf("after PLI got frames %v, expected 10..21 from the IDR", got)
	}
	for i := 12; i < 24; i++ {
		if d := aus[i].ts - aus[i-1].ts; d != 1 {
			t.Fatalf("replayed frame %d: %d ticks after the previous, expected 1", i, d)
		}
	}
	pub.Write(frame(video, 22, false, testSPS))
	aus = v.wait(t, 25)
	if d := aus[24].ts - aus[11].ts; d != 3000 {
		t.Fatalf("live frame 22 at %d ticks after frame 21, expected 3000 (the live clock unchanged)", d)
	}
	v.pli(t, ssrc) // the same GOP: not replayed again
	time.Sleep(100 * time.Millisecond)
	if n := len(v.wait(t, 25)); n != 25 {
		t.Fatalf("a second PLI on the same GOP replayed it again (%d access units)", n)
	}

	// PLI with a publisher that takes requests: forwarded.
	requests := make(chan int, 10)
	pub.OnKeyframeRequest(func(track int) { requests <- track })
	v.pli(t, ssrc)
	select {
	case track := <-requests:
		if track != video.ID {
			t.Fatalf("keyframe request for track %d", track)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("PLI not forwarded to the publisher")
	}

	// The publisher reconnects with another resolution; its clock starts
	// again at 0 and it starts with a P frame.
	pub.Close()
	time.Sleep(50 * time.Millisecond)
	video2 := &media.Track{Codec: media.H264{SPS: testSPS2, PPS: testPPS}}
	pub = b.publish(t, "live/cam", "encoder 2", video2)
	for n := 99; n < 105; n++ { // 99 is skipped: the viewer waits for the IDR
		f := frame(video2, n, n == 100, testSPS2)
		f.PTS -= 100 * time.Second / 30
		f.DTS = f.PTS
		pub.Write(f)
	}
	aus = v.wait(t, 30)
	after := aus[25:30]
	if got := numbers(after); got[0] != 100 || got[4] != 104 {
		t.Fatalf("after the reconnect got frames %v, expected 100..104", got)
	}
	if !after[0].key() || after[0].types[0] != 7 {
		t.Fatalf("first frame after the reconnect has types %v, expected SPS, PPS, IDR", after[0].types)
	}
	if gap := int32(after[0].ts - aus[24].ts); gap <= 0 {
		t.Fatalf("timestamps continue %d ticks after the old publisher's last frame", gap)
	}
	v.mu.Lock()
	packets := append([]rtpInfo(nil), v.packets...)
	v.mu.Unlock()
	for i := 1; i < len(packets); i++ {
		if d := packets[i].seq - packets[i-1].seq; d != 1 {
			t.Fatalf("packet %d: sequence number %d after %d", i, packets[i].seq, packets[i-1].seq)
		}
		if int32(packets[i].ts-packets[i-1].ts) < 0 {
			t.Fatalf("packet %d: timestamp %d after %d went back", i, packets[i].ts, packets[i-1].ts)
		}
	}

	// A publisher with another codec ends the viewer, saying why.
	pub.Close()
	pub = b.publish(t, "live/cam", "encoder 3", &media.Track{Codec: media.Opus{Channels: 2}})
	b.waitLog(t, "viewer session ended", "viewer session not ended by an incompatible republish",
		"republished with incompatible codecs", "new publisher encoder 3 sends [Opus], readers expected [H264]")
}

// publish publishes tracks at path as who.
func (b *bench) publish(t *testing.T, path, who string, tracks ...*media.Track) *media.Publication {
	t.Helper()
	pub, err := b.reg.Publish(path, who)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.SetTracks(tracks...); err != nil {
		t.Fatal(err)
	}
	return pub
}

// waitLog waits up to 10 s for the log to say end (failing with what if
// it does not), then checks that it also says each of also.
func (b *bench) waitLog(t *testing.T, end, what string, also ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.logs.String(), end) {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, want := range also {
		if !strings.Contains(b.logs.String(), want) {
			t.Errorf("log does not say %q", want)
		}
	}
}
