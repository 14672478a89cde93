package srt

import (
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	gosrt "github.com/datarhei/gosrt"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

// dial connects a gosrt caller to the test server.
func dial(t *testing.T, ts *testServer, streamid, passphrase string) (gosrt.Conn, error) {
	t.Helper()
	cfg := gosrt.DefaultConfig()
	cfg.StreamId = streamid
	cfg.Passphrase = passphrase
	cfg.PayloadSize = payloadSize
	cfg.Latency = 200 * time.Millisecond
	c, err := gosrt.Dial("srt", ts.addr, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// tsPackets reads a fixture and splits it into 188-byte packets.
func tsPackets(t *testing.T, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(testkit.Fixture(name))
	if err != nil {
		t.Fatal(err)
	}
	if len(b)%tsPacketSize != 0 {
		t.Fatalf("%s: %d bytes is not a whole number of TS packets", name, len(b))
	}
	var out [][]byte
	for len(b) > 0 {
		out = append(out, b[:tsPacketSize:tsPacketSize])
		b = b[tsPacketSize:]
	}
	return out
}

// sender writes TS packets over SRT, 7 to a payload, pacing them at speed
// times the real rate of a stream of total packets lasting dur.
type sender struct {
	t    *testing.T
	c    gosrt.Conn
	buf  []byte
	gap  time.Duration // per payload
	sent int
}

func newSender(t *testing.T, c gosrt.Conn, total int, dur time.Duration, speed float64) *sender {
	payloads := float64(total) / 7
	return &sender{t: t, c: c, gap: time.Duration(float64(dur) / payloads / speed)}
}

// add queues bytes (whole packets or not) and sends full payloads.
func (s *sender) add(b []byte) {
	s.buf = append(s.buf, b...)
	for len(s.buf) >= payloadSize {
		s.send(s.buf[:payloadSize])
		s.buf = s.buf[payloadSize:]
	}
}

func (s *sender) flush() {
	if len(s.buf) > 0 {
		s.send(s.buf)
		s.buf = nil
	}
}

func (s *sender) send(p []byte) {
	s.t.Helper()
	if _, err := s.c.Write(p); err != nil {
		s.t.Fatalf("write after %d payloads: %v", s.sent, err)
	}
	s.sent++
	time.Sleep(s.gap)
}

// rejectCode extracts the rejection reason from a gosrt Dial error
// ("connection rejected: REJECT (1c1)", the code in base 32).
func rejectCode(err error) int {
	if err == nil {
		return 0
	}
	s := err.Error()
	i := strings.Index(s, "REJECT (")
	if i < 0 {
		return -1
	}
	s = s[i+len("REJECT ("):]
	s, _, _ = strings.Cut(s, ")")
	n, perr := strconv.ParseUint(s, 32, 32)
	if perr != nil {
		return -1
	}
	return int(n)
}

// TestRejectCodesOnTheWire checks the reason a caller receives.
func TestRejectCodesOnTheWire(t *testing.T) {
	checkGoroutines := testkit.GoroutineBaseline(t, 8*time.Second, gosrtDialer)
	ts := startServer(t, Config{Authorize: testkit.Authorizer(keyAuth), Passphrase: func(path string) string {
		if path == "live/other" {
			return "0123456789"
		}
		return ""
	}}, nil)

	// A publisher holds live/test.
	c, err := dial(t, ts, "publish:live/test?key=secret", "")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	ts.nextReader(t, 5*time.Second)

	for _, tc := range []struct {
		sid, pass string
		want      int
	}{
		{"", "", 1400},
		{"publish:live/a b", "", 1400},
		{"publish:live/test?key=bad", "", 1401},
		{"publish:live/nope?key=secret", "", 1404},
		{"read:live/test?key=secret", "", 1405},
		{"#!::r=live/test,m=bidirectional", "", 1405},
		{"publish:live/test?key=secret", "", 1409},
		{"publish:live/other?key=secret", "", 1011},
		{"publish:live/other?key=secret", "9876543210", 1010},
		{"publish:live/test?key=secret", "0123456789", 1011},
	} {
		_, err := dial(t, ts, tc.sid, tc.pass)
		if got := rejectCode(err); got != tc.want {
			t.Errorf("streamid %q, passphrase %q: %v (code %d), want code %d", tc.sid, tc.pass, err, got, tc.want)
		}
	}
	// The right passphrase is accepted.
	if c2, err := dial(t, ts, "publish:live/other?key=secret", "0123456789"); err != nil {
		t.Errorf("right passphrase: %v", err)
	} else {
		ts.nextReader(t, 5*time.Second)
		c2.Close()
	}
	c.Close()
	ts.close(t)
	checkGoroutines()
}

// TestCorruptInput sends a fixture through a gosrt caller with packets
// dropped, bytes flipped and garbage inserted in its middle: the errors are
// counted and logged, video resumes at a keyframe, audio carries on, and
// nothing panics.
func TestCorruptInput(t *testing.T) {
	checkGoroutines := testkit.GoroutineBaseline(t, 8*time.Second, gosrtDialer)
	ts := startServer(t, Config{}, nil)
	pkts := tsPackets(t, "h264-aac.ts")
	pkts = pkts[:len(pkts)*45/100] // 4.5 s
	c, err := dial(t, ts, "publish:live/test", "")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	r := ts.nextReader(t, 5*time.Second)

	rng := rand.New(rand.NewPCG(1, 2))
	s := newSender(t, c, len(pkts), 4500*time.Millisecond, 3)
	from, to := len(pkts)*35/100, len(pkts)*60/100 // about 1.6 s to 2.7 s
	dropped, flipped, garbage := 0, 0, 0
	var statsSeen Stats
	for i, p := range pkts {
		if i < from || i >= to || i%4 != 0 {
			s.add(p)
			continue
		}
		switch rng.IntN(4) {
		case 0: // lost
			dropped++
		case 1: // a flipped byte, the sync byte and the header included
			q := append([]byte(nil), p...)
			q[rng.IntN(8)] ^= byte(1 + rng.IntN(255))
			flipped++
			s.add(q)
		case 2: // garbage in front
			g := make([]byte, 1+rng.IntN(300))
			for j := range g {
				g[j] = byte(rng.IntN(256))
			}
			garbage++
			s.add(g)
			s.add(p)
		default: // a flipped payload byte
			q := append([]byte(nil), p...)
			q[4+rng.IntN(184)] ^= 0xff
			flipped++
			s.add(q)
		}
		if i == to-1 {
			statsSeen, _ = ts.Stats("live/test")
		}
	}
	s.flush()
	time.Sleep(500 * time.Millisecond) // let the receiver deliver (latency)
	final, ok := ts.Stats("live/test")
	if !ok {
		t.Fatalf("no stats for live/test while connected")
	}
	c.Close()
	units := testkit.ReadAll(t, r, 10*time.Second)
	t.Logf("%d packets dropped, %d flipped, %d with garbage; %d units; stats %+v", dropped, flipped, garbage, len(units), final)

	if final.DemuxErrors == 0 {
		t.Errorf("no demux error counted")
	}
	if final.PacketsReceived < uint64(s.sent)*9/10 || final.BytesReceived == 0 || final.Peer == "" || final.RTT <= 0 {
		t.Errorf("stats: %+v after %d payloads sent", final, s.sent)
	}
	if statsSeen.PacketsReceived == 0 {
		t.Errorf("no stats mid-stream: %+v", statsSeen)
	}
	ts.logs.WaitLog(t, 2*time.Second, "srt demux errors", "stream=live/test", "errors=", "total=")
	line := ts.logs.WaitLog(t, 2*time.Second, "srt publish ended", "stream=live/test")
	if strings.Contains(line, "demux_errors=0 ") {
		t.Errorf("summary has no errors: %s", line)
	}
	if n := len(ts.logs.Lines("srt demux errors")); n > 6 {
		t.Errorf("%d demux error log lines for about 2 s of errors; want at most one a second", n)
	}

	video, audio := testkit.SplitUnits(units)
	if len(video) == 0 || len(audio) == 0 {
		t.Fatalf("%d video, %d audio units", len(video), len(audio))
	}
	if !video[0].Key {
		t.Errorf("video does not start at a keyframe")
	}
	// Whenever video frames are missing, the next one is a keyframe.
	const frame = time.Second / 30
	gaps := 0
	for i := 1; i < len(video); i++ {
		d := video[i].DTS - video[i-1].DTS
		if d <= 0 {
			t.Errorf("video DTS does not increase at unit %d", i)
		}
		if d > frame*3/2 {
			gaps++
			if !video[i].Key {
				t.Errorf("video resumes after a %v gap at unit %d with a non-key frame", d, i)
			}
		}
	}
	if gaps == 0 {
		t.Errorf("no video frame was dropped: the corruption went unnoticed")
	}
	last := video[len(video)-1].DTS
	if span := last - video[0].DTS; span < 4*time.Second {
		t.Errorf("video spans %v of 4.5 s: it did not resume", span)
	}
	// Audio carries on through the corruption: no hole longer than what
	// the damaged packets held.
	lastAudio := audio[len(audio)-1].PTS
	if lastAudio < 4*time.Second {
		t.Errorf("audio stops at %v", lastAudio)
	}
	for i := 1; i < len(audio); i++ {
		if d := audio[i].PTS - audio[i-1].PTS; d <= 0 {
			t.Errorf("audio PTS does not increase at unit %d", i)
		}
	}
	ts.close(t)
	checkGoroutines()
}

// TestGarbage sends things that are not MPEG-TS: the connection is closed
// with a reason, never a panic, and nothing is left behind.
func TestGarbage(t *testing.T) {
	checkGoroutines := testkit.GoroutineBaseline(t, 8*time.Second, gosrtDialer)
	ts := startServer(t, Config{}, func(s *Server) { s.setupTimeout = 2 * time.Second })

	t.Run("random bytes", func(t *testing.T) {
		c, err := dial(t, ts, "publish:live/random", "")
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		r := ts.nextReader(t, 5*time.Second)
		rng := rand.New(rand.NewPCG(3, 4))
		b := make([]byte, 1200<<10)
		for i := range b {
			b[i] = byte(rng.IntN(256))
			if b[i] == 0x47 && rng.IntN(2) == 0 {
				b[i] = 0
			}
		}
		// Until the server gives up on it.
		for len(b) > 0 {
			n := min(len(b), payloadSize)
			if _, err := c.Write(b[:n]); err != nil {
				break
			}
			b = b[n:]
			time.Sleep(200 * time.Microsecond)
		}
		ts.logs.WaitLog(t, 10*time.Second, "srt publish ended", "stream=live/random", "MPEG-TS program")
		if units := testkit.ReadAll(t, r, 5*time.Second); len(units) != 0 {
			t.Errorf("%d units from random bytes", len(units))
		}
	})

	t.Run("truncated", func(t *testing.T) {
		c, err := dial(t, ts, "publish:live/truncated", "")
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		r := ts.nextReader(t, 5*time.Second)
		pkts := tsPackets(t, "h264-opus.ts")
		pkts = pkts[:len(pkts)/10] // 1 s
		s := newSender(t, c, len(pkts), time.Second, 4)
		for _, p := range pkts[:len(pkts)-1] {
			s.add(p)
		}
		s.add(pkts[len(pkts)-1][:100])
		s.flush()
		time.Sleep(300 * time.Millisecond)
		c.Close()
		units := testkit.ReadAll(t, r, 5*time.Second)
		video, audio := testkit.SplitUnits(units)
		if len(video) < 15 || len(audio) < 20 {
			t.Errorf("%d video and %d audio units from 1 s", len(video), len(audio))
		}
		ts.logs.WaitLog(t, 5*time.Second, "srt publish ended", "stream=live/truncated")
	})

	t.Run("no supported track", func(t *testing.T) {
		// A TS with MPEG-2 video and MP3 audio only.
		out := filepath.Join(t.TempDir(), "mpeg2.ts")
		ff := testkit.StartFFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-f", "lavfi", "-i", "sine=sample_rate=44100",
			"-t", "1", "-c:v", "mpeg2video", "-c:a", "mp2", "-f", "mpegts", out)
		if err := ff.Wait(t, 30*time.Second); err != nil {
			t.Fatalf("ffmpeg: %v\n%s", err, ff.Stderr.String())
		}
		c, err := dial(t, ts, "publish:live/mpeg2", "")
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		r := ts.nextReader(t, 5*time.Second)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		s := &sender{t: t, c: c, gap: time.Millisecond}
		s.add(b[:min(len(b), 50*payloadSize)])
		ts.logs.WaitLog(t, 10*time.Second, "srt publish ended", "stream=live/mpeg2", "no supported track")
		testkit.ReadAll(t, r, 5*time.Second)
	})

	ts.close(t)
	checkGoroutines()
}

// TestIdleTimeout: a publisher that stops sending is closed.
func TestIdleTimeout(t *testing.T) {
	checkGoroutines := testkit.GoroutineBaseline(t, 8*time.Second, gosrtDialer)
	ts := startServer(t, Config{}, func(s *Server) { s.idleTimeout = time.Second })
	c, err := dial(t, ts, "publish:live/test", "")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	r := ts.nextReader(t, 5*time.Second)
	pkts := tsPackets(t, "h264-aac.ts")
	pkts = pkts[:len(pkts)/10]
	s := newSender(t, c, len(pkts), time.Second, 1)
	for _, p := range pkts {
		s.add(p)
	}
	s.flush()
	start := time.Now()
	units := testkit.ReadAll(t, r, 10*time.Second)
	if d := time.Since(start); d < 900*time.Millisecond || d > 4*time.Second {
		t.Errorf("stream ended %v after the last payload, want about 1 s", d)
	}
	if len(units) == 0 {
		t.Errorf("no units before the idle timeout")
	}
	ts.logs.WaitLog(t, 2*time.Second, "srt publish ended", "stream=live/test", "reason=\"no MPEG-TS packet for 1s\"")
	c.Close()
	ts.close(t)
	checkGoroutines()
}

// TestPublishH265 publishes an H.265 + AAC TS made by ffmpeg (libx265).
func TestPublishH265(t *testing.T) {
	testkit.FFmpegBin(t, "ffmpeg")
	checkGoroutines := testkit.GoroutineBaseline(t, 8*time.Second, gosrtDialer)
	out := filepath.Join(t.TempDir(), "h265.ts")
	ff := testkit.StartFFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "3", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=30:min-keyint=30:log-level=error",
		"-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", "-f", "mpegts", out)
	if err := ff.Wait(t, 60*time.Second); err != nil {
		if strings.Contains(ff.Stderr.String(), "libx265") {
			t.Fatalf("this ffmpeg cannot encode H.265 (%v): apt-get install ffmpeg (Debian's has libx265)\n%s", err, ff.Stderr.String())
		}
		t.Fatalf("ffmpeg: %v\n%s", err, ff.Stderr.String())
	}
	ts := startServer(t, Config{}, nil)
	pub := publish(t, out, 3, ts.url("publish:live/hevc"))
	r := ts.nextReader(t, 10*time.Second)
	units := testkit.ReadAll(t, r, 20*time.Second)
	if err := pub.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, pub.Stderr.String())
	}
	video, audio := testkit.SplitUnits(units)
	if len(video) < 60 || len(audio) < 90 {
		t.Fatalf("%d video and %d audio units for 3 s", len(video), len(audio))
	}
	c, ok := video[0].Track.Codec.(media.H265)
	if !ok {
		t.Fatalf("video codec is %T, want media.H265", video[0].Track.Codec)
	}
	if len(c.VPS) == 0 || len(c.SPS) == 0 || len(c.PPS) == 0 {
		t.Errorf("H265 track without parameter sets: %d/%d/%d bytes", len(c.VPS), len(c.SPS), len(c.PPS))
	}
	if !video[0].Track.IsVideo() {
		t.Errorf("H265 track is not video")
	}
	if !video[0].Key {
		t.Errorf("first video unit is not a keyframe")
	}
	keys := 0
	for i, u := range video {
		if u.Key {
			keys++
			var types []h265.NALUType
			for _, n := range u.NALUs {
				types = append(types, h265.NALUType(n[0]>>1&0x3f))
			}
			if len(types) < 4 || types[0] != h265.NALUType_VPS_NUT || types[1] != h265.NALUType_SPS_NUT || types[2] != h265.NALUType_PPS_NUT {
				t.Errorf("key unit %d: NALU types %v, want VPS, SPS, PPS first", i, types)
			}
		}
		for _, n := range u.NALUs {
			if h265.NALUType(n[0]>>1&0x3f) == h265.NALUType_AUD_NUT {
				t.Errorf("unit %d holds an access unit delimiter", i)
			}
		}
		if i > 0 && u.DTS <= video[i-1].DTS {
			t.Errorf("video DTS does not increase at unit %d", i)
		}
	}
	if keys < 2 {
		t.Errorf("%d keyframes in 3 s with keyint 30", keys)
	}
	ts.logs.WaitLog(t, 2*time.Second, "stream ready", "H265")
	ts.close(t)
	checkGoroutines()
}

func TestTimestamps(t *testing.T) {
	if got := ticksToDuration(90000); got != time.Second {
		t.Errorf("90000 ticks = %v", got)
	}
	if got := ticksToDuration(3000); got != time.Second/30 {
		t.Errorf("3000 ticks = %v", got)
	}
	if got := ticksToDuration(-90000); got != -time.Second {
		t.Errorf("-90000 ticks = %v", got)
	}
	// 2^45 ticks (12 years) do not overflow.
	if got, want := ticksToDuration(1<<45), time.Duration(1<<45/9*100000+(1<<45)%9*100000/9); got != want || got <= 0 {
		t.Errorf("2^45 ticks = %v, want %v", got, want)
	}
	// The 33-bit wrap: timestamps keep increasing across it.
	p := &publisher{}
	const wrap = 1 << 33
	var prev time.Duration
	for i, raw := range []int64{wrap - 6000, wrap - 3000, 0, 3000, 6000} {
		d := p.ts(raw)
		if want := ticksToDuration(int64(i) * 3000); d != want {
			t.Errorf("timestamp %d (%d): %v after %v, want %v", i, raw, d, prev, want)
		}
		prev = d
	}
}

// TestTimestampJumps (defect 13 for SRT): a sender stepping its PES clock
// by 2^32 ticks (13 hours) per timestamp, the largest step mediacommon's
// decoder took as forward, must not carry the stream clock off.
func TestTimestampJumps(t *testing.T) {
	p := &publisher{log: slog.New(slog.DiscardHandler)}
	var prev time.Duration
	for i := range 10000 {
		raw := (int64(i)<<32 + int64(i)*3000) & (1<<33 - 1)
		d := p.ts(raw)
		if d < prev || d > time.Hour {
			t.Fatalf("timestamp %d: %v after %v: the stream clock ran off", i, d, prev)
		}
		prev = d
	}
	if p.jumps == 0 {
		t.Error("no jump counted")
	}
}

func TestServerLifecycle(t *testing.T) {
	checkGoroutines := testkit.GoroutineBaseline(t, 8*time.Second, gosrtDialer)
	s := NewServer(Config{Registry: media.NewRegistry(nil)})
	if err := s.Serve(); err == nil {
		t.Errorf("Serve before Listen succeeded")
	}
	if s.Addr() != nil {
		t.Errorf("Addr before Listen: %v", s.Addr())
	}
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	if err := s.Listen("127.0.0.1:0"); err == nil {
		t.Errorf("second Listen succeeded")
	}
	// The port is taken: a second server says so from Listen.
	s2 := NewServer(Config{Registry: media.NewRegistry(nil)})
	if err := s2.Listen(addr); err == nil {
		t.Errorf("Listen on %s, which is in use, succeeded", addr)
		s2.Close()
	} else if !strings.Contains(err.Error(), addr) {
		t.Errorf("Listen error does not name the address: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve() }()
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := <-errc; err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Listen("127.0.0.1:0"); err == nil {
		t.Errorf("Listen after Close succeeded")
	}
	// Close without Serve.
	s3 := NewServer(Config{Registry: media.NewRegistry(nil)})
	if err := s3.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	s3.Close()
	checkGoroutines()
}

// sendPackets dials a caller publishing path and, on a goroutine, sends
// pkts (all, or those keep accepts) at 1x, 7 to a payload, then closes it.
// The returned channel gives the first write error (or nil) at the end.
func sendPackets(t *testing.T, ts *testServer, path string, pkts [][]byte, dur time.Duration, keep func([]byte) bool) <-chan error {
	t.Helper()
	c, err := dial(t, ts, "publish:"+path, "")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	var payload []byte
	for _, p := range pkts {
		if keep == nil || keep(p) {
			payload = append(payload, p...)
		}
	}
	gap := time.Duration(float64(dur) / (float64(len(payload)) / payloadSize))
	errc := make(chan error, 1)
	go func() {
		defer c.Close()
		for len(payload) > 0 {
			n := min(len(payload), payloadSize)
			if _, err := c.Write(payload[:n]); err != nil {
				errc <- err
				return
			}
			payload = payload[n:]
			time.Sleep(gap)
		}
		time.Sleep(300 * time.Millisecond)
		errc <- nil
	}()
	return errc
}

func pid(p []byte) uint16 { return uint16(p[1]&0x1f)<<8 | uint16(p[2]) }

// TestJoinMidGOP: a publisher that starts in the middle of a GOP is
// declared at the next keyframe, and audio starts with it.
func TestJoinMidGOP(t *testing.T) {
	checkGoroutines := testkit.GoroutineBaseline(t, 8*time.Second, gosrtDialer)
	ts := startServer(t, Config{}, nil)
	pkts := tsPackets(t, "h264-aac.ts")
	// From 1.5 s to 3.5 s of the 10 s file: the next IDR is at 2 s.
	pkts = pkts[len(pkts)*15/100 : len(pkts)*35/100]
	sent := sendPackets(t, ts, "live/mid", pkts, 2*time.Second, nil)
	r := ts.nextReader(t, 5*time.Second)
	units := testkit.ReadAll(t, r, 10*time.Second)
	if err := <-sent; err != nil {
		t.Fatalf("send: %v", err)
	}
	video, audio := testkit.SplitUnits(units)
	if len(video) < 30 || len(audio) < 40 {
		t.Fatalf("%d video and %d audio units", len(video), len(audio))
	}
	if !video[0].Key {
		t.Errorf("video starts with a non-key unit")
	}
	if d := audio[0].PTS - video[0].PTS; d < 0 || d > 100*time.Millisecond {
		t.Errorf("audio starts %v after video; want it to start with the keyframe", d)
	}
	ts.logs.WaitLog(t, 2*time.Second, "srt publish ended", "stream=live/mid", "video_skipped=")
	ts.close(t)
	checkGoroutines()
}

// TestTrackWaits: a PMT track that sends nothing, or video without a
// keyframe for too long, is left out of the declaration.
func TestTrackWaits(t *testing.T) {
	checkGoroutines := testkit.GoroutineBaseline(t, 8*time.Second, gosrtDialer)
	ts := startServer(t, Config{}, func(s *Server) {
		s.trackWait = 300 * time.Millisecond
		s.keyframeWait = 300 * time.Millisecond
	})
	all := tsPackets(t, "h264-aac.ts")

	t.Run("silent video PID", func(t *testing.T) {
		pkts := all[:len(all)*15/100]
		sent := sendPackets(t, ts, "live/novideo", pkts, 1500*time.Millisecond, func(p []byte) bool { return pid(p) != 256 })
		r := ts.nextReader(t, 5*time.Second)
		units := testkit.ReadAll(t, r, 10*time.Second)
		if err := <-sent; err != nil {
			t.Fatalf("send: %v", err)
		}
		video, audio := testkit.SplitUnits(units)
		if len(video) != 0 || len(audio) < 50 {
			t.Errorf("%d video and %d audio units, want audio only", len(video), len(audio))
		}
		if len(audio) > 0 {
			if _, ok := audio[0].Track.Codec.(media.AAC); !ok || audio[0].Track.ID != 0 {
				t.Errorf("audio track %v", audio[0].Track)
			}
		}
		ts.logs.WaitLog(t, 2*time.Second, "srt declaring tracks without H264", "stream=live/novideo", "sent nothing within 300ms")
	})

	t.Run("no keyframe in time", func(t *testing.T) {
		// From 1.5 s: the next IDR is at 2 s, later than keyframeWait.
		pkts := all[len(all)*15/100 : len(all)*30/100]
		sent := sendPackets(t, ts, "live/late", pkts, 1500*time.Millisecond, nil)
		r := ts.nextReader(t, 5*time.Second)
		units := testkit.ReadAll(t, r, 10*time.Second)
		if err := <-sent; err != nil {
			t.Fatalf("send: %v", err)
		}
		video, audio := testkit.SplitUnits(units)
		if len(video) != 0 || len(audio) < 50 {
			t.Errorf("%d video and %d audio units, want audio only", len(video), len(audio))
		}
		ts.logs.WaitLog(t, 2*time.Second, "srt declaring tracks without H264", "stream=live/late", "no H264 keyframe with parameter sets within 300ms")
		ts.logs.WaitLog(t, 2*time.Second, "srt track ignored", "stream=live/late", "H264 started after the tracks were declared")
	})

	ts.close(t)
	checkGoroutines()
}
