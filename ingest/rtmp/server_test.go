package rtmp

import (
	"context"
	cryptorand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/yutopp/go-rtmp/handshake"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

func TestPublishFFmpeg(t *testing.T) {
	testkit.FFmpegBin(t, "ffmpeg")
	checkGoroutines := testkit.GoroutineBaseline(t, 5*time.Second)
	ts := startServer(t, allowAll, nil)

	ff := publish(t, "h264-aac.flv", 4, ts.url("live/test"))
	r := ts.nextReader(t, 10*time.Second)
	units := testkit.ReadAll(t, r, 20*time.Second)
	if err := ff.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, ff.Stderr.String())
	}

	st, ok := ts.reg.Get("live/test")
	if ok {
		t.Fatalf("stream %q still registered after the publisher left", st.Path())
	}
	tracks := unitsTracks(units)
	if len(tracks) != 2 {
		t.Fatalf("units reference %d tracks, want 2", len(tracks))
	}
	var video, audio []*media.Unit
	for _, u := range units {
		if u.Track.IsVideo() {
			video = append(video, u)
		} else {
			audio = append(audio, u)
		}
	}
	if len(video) == 0 || len(audio) == 0 {
		t.Fatalf("got %d video and %d audio units", len(video), len(audio))
	}
	vc, ok := video[0].Track.Codec.(media.H264)
	if !ok {
		t.Fatalf("video codec is %T", video[0].Track.Codec)
	}
	var sps h264.SPS
	if err := sps.Unmarshal(vc.SPS); err != nil {
		t.Fatalf("SPS: %v", err)
	}
	if sps.Width() != 640 || sps.Height() != 360 {
		t.Errorf("SPS says %dx%d, want 640x360", sps.Width(), sps.Height())
	}
	ac, ok := audio[0].Track.Codec.(media.AAC)
	if !ok {
		t.Fatalf("audio codec is %T", audio[0].Track.Codec)
	}
	if ac.SampleRate != 48000 || ac.Channels != 2 || len(ac.Config) == 0 {
		t.Errorf("AAC track is %d Hz, %d channels, config %x; want 48000 Hz stereo", ac.SampleRate, ac.Channels, ac.Config)
	}

	if !video[0].Key {
		t.Errorf("first video unit is not an IDR")
	}
	idrs := 0
	for i, u := range video {
		if u.Key {
			idrs++
			if len(u.NALUs) < 3 || h264.NALUType(u.NALUs[0][0]&0x1f) != h264.NALUTypeSPS || h264.NALUType(u.NALUs[1][0]&0x1f) != h264.NALUTypePPS {
				t.Errorf("IDR unit %d does not start with SPS, PPS: %d NALUs", i, len(u.NALUs))
			}
		}
		if i > 0 && u.DTS <= video[i-1].DTS {
			t.Errorf("video DTS does not increase at unit %d: %v after %v", i, u.DTS, video[i-1].DTS)
		}
		if u.PTS != u.DTS {
			t.Errorf("video unit %d: PTS %v != DTS %v in a stream without B-frames", i, u.PTS, u.DTS)
		}
	}
	span := (video[len(video)-1].DTS - video[0].DTS).Seconds()
	if rate := float64(len(video)-1) / span; rate < 28 || rate > 32 {
		t.Errorf("%d video units over %.2f s: %.1f/s, want about 30", len(video), span, rate)
	}
	if len(video) < 100 || len(video) > 130 {
		t.Errorf("%d video units for 4 s of 30 fps", len(video))
	}
	if idrs < 3 {
		t.Errorf("%d IDRs in 4 s with a 1 s GOP", idrs)
	}
	for i, u := range audio {
		if len(u.Data) == 0 || !u.Key || u.PTS != u.DTS {
			t.Errorf("audio unit %d: %d bytes, key %v, pts %v dts %v", i, len(u.Data), u.Key, u.PTS, u.DTS)
		}
		if i > 0 && u.DTS <= audio[i-1].DTS {
			t.Errorf("audio DTS does not increase at unit %d", i)
		}
	}
	// 48 kHz AAC: 1024 samples per frame, 46.875 frames/s.
	if n := len(audio); n < 170 || n > 200 {
		t.Errorf("%d audio units for 4 s of 48 kHz AAC", n)
	}

	ts.logs.WaitLog(t, 2*time.Second, "rtmp publish ended", "stream=live/test", "peer=127.0.0.1:", "video_frames=", "duration=")
	ts.close(t)
	checkGoroutines()
}

func unitsTracks(units []*media.Unit) map[*media.Track]bool {
	m := map[*media.Track]bool{}
	for _, u := range units {
		m[u.Track] = true
	}
	return m
}

// readN reads n units within timeout.
func readN(t *testing.T, r *media.Reader, n int, timeout time.Duration) []*media.Unit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []*media.Unit
	for len(out) < n {
		u, err := r.Read(ctx)
		if err != nil {
			t.Fatalf("read %d of %d units: %v", len(out), n, err)
		}
		out = append(out, u)
	}
	return out
}

func videoUnits(units []*media.Unit) []*media.Unit {
	var out []*media.Unit
	for _, u := range units {
		if u.Track.IsVideo() {
			out = append(out, u)
		}
	}
	return out
}

func TestPublishBFrames(t *testing.T) {
	testkit.FFmpegBin(t, "ffmpeg")
	ts := startServer(t, allowAll, nil)
	ff := publish(t, "h264-bframes-aac.flv", 3, ts.url("live/bframes"))
	r := ts.nextReader(t, 10*time.Second)
	units := testkit.ReadAll(t, r, 20*time.Second)
	if err := ff.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, ff.Stderr.String())
	}
	video := videoUnits(units)
	if len(video) < 80 {
		t.Fatalf("%d video units", len(video))
	}
	first := video[0]
	if !first.Key {
		t.Error("first video unit is not an IDR")
	}
	if d := first.PTS - first.DTS; d < 66*time.Millisecond || d > 68*time.Millisecond {
		t.Errorf("first video unit: PTS %v, DTS %v; want PTS 67ms after DTS", first.PTS, first.DTS)
	}
	reordered := 0
	for i, u := range video {
		if u.PTS != u.DTS {
			reordered++
		}
		if u.PTS < u.DTS {
			t.Errorf("unit %d: PTS %v before DTS %v", i, u.PTS, u.DTS)
		}
		if i > 0 && u.DTS <= video[i-1].DTS {
			t.Errorf("unit %d: DTS %v not after %v", i, u.DTS, video[i-1].DTS)
		}
	}
	if reordered < len(video)/3 {
		t.Errorf("only %d of %d units have PTS != DTS", reordered, len(video))
	}
}

// TestPublishExtendedTimestamps publishes a stream whose timestamps start
// past 0xffffff ms (4h39m), where ffmpeg repeats the extended timestamp on
// continuation chunks (see guard.go).
func TestPublishExtendedTimestamps(t *testing.T) {
	testkit.FFmpegBin(t, "ffmpeg")
	ts := startServer(t, allowAll, nil)
	ff := testkit.StartFFmpeg(t, "-re", "-i", testkit.Fixture("h264-aac.flv"), "-t", "3", "-c", "copy", "-output_ts_offset", "16780", "-f", "flv", ts.url("live/late"))
	r := ts.nextReader(t, 10*time.Second)
	units := testkit.ReadAll(t, r, 20*time.Second)
	if err := ff.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, ff.Stderr.String())
	}
	video := videoUnits(units)
	if len(video) < 80 {
		t.Fatalf("%d video units; log:\n%s", len(video), ts.logs.String())
	}
	if video[0].DTS < 16780*time.Second {
		t.Errorf("first DTS %v, want after 4h39m40s", video[0].DTS)
	}
	for i := 1; i < len(video); i++ {
		if d := video[i].DTS - video[i-1].DTS; d < 30*time.Millisecond || d > 37*time.Millisecond {
			t.Fatalf("unit %d: DTS step %v", i, d)
		}
	}
	ts.logs.WaitLog(t, 2*time.Second, "rtmp publish ended", "reason=\"unpublished by the peer\"")
}

// TestSecondPublisherRefused: a second publisher on the same path is
// refused while the first goes on; then Close ends the first.
func TestSecondPublisherRefused(t *testing.T) {
	testkit.FFmpegBin(t, "ffmpeg")
	checkGoroutines := testkit.GoroutineBaseline(t, 5*time.Second)
	ts := startServer(t, allowAll, nil)
	first := publish(t, "h264-aac.flv", 8, ts.url("live/test"))
	r := ts.nextReader(t, 10*time.Second)
	readN(t, r, 20, 5*time.Second)
	st, ok := ts.reg.Get("live/test")
	if !ok {
		t.Fatal("stream not registered")
	}

	second := publish(t, "h264-aac.flv", 2, ts.url("live/test"))
	if err := second.Wait(t, 10*time.Second); err == nil {
		t.Fatalf("second ffmpeg exited 0; stderr:\n%s", second.Stderr.String())
	}
	if !strings.Contains(second.Stderr.String(), `stream \"live/test\" is already publishing`) && !strings.Contains(second.Stderr.String(), `stream "live/test" is already publishing`) {
		t.Errorf("second ffmpeg's stderr does not say why:\n%s", second.Stderr.String())
	}
	ts.logs.WaitLog(t, time.Second, "rtmp publish refused", "stream=live/test", "reason=", "already has a publisher")

	// The first publisher goes on, on the same stream.
	readN(t, r, 60, 5*time.Second)
	if st2, ok := ts.reg.Get("live/test"); !ok || st2 != st {
		t.Fatal("the first publisher's stream was replaced")
	}
	select {
	case <-first.Done():
		t.Fatalf("first ffmpeg ended: %v\n%s", first.Err(), first.Stderr.String())
	default:
	}

	// Close ends the publisher: its stream ends, ffmpeg fails.
	ts.close(t)
	testkit.ReadAll(t, r, 5*time.Second)
	if _, ok := ts.reg.Get("live/test"); ok {
		t.Error("stream still registered after Close")
	}
	if err := first.Wait(t, 10*time.Second); err == nil {
		t.Error("first ffmpeg exited 0 after the server closed")
	}
	ts.logs.WaitLog(t, time.Second, "rtmp publish ended", "reason=\"server shutting down\"")
	checkGoroutines()
}

func TestAuthorizeFFmpeg(t *testing.T) {
	testkit.FFmpegBin(t, "ffmpeg")
	var mu sync.Mutex
	var reqs []access.Request
	auth := func(r access.Request) error {
		mu.Lock()
		reqs = append(reqs, r)
		mu.Unlock()
		if r.Credential != "SECRET" {
			return fmt.Errorf("route %q: %w", r.Path, access.BadKey(access.Publish))
		}
		return nil
	}
	ts := startServer(t, testkit.Authorizer(auth), nil)

	bad := publish(t, "h264-aac.flv", 2, ts.url("live/test?key=WRONG"))
	if err := bad.Wait(t, 10*time.Second); err == nil {
		t.Fatalf("ffmpeg with a wrong key exited 0")
	}
	if !strings.Contains(bad.Stderr.String(), "missing or wrong publish key") {
		t.Errorf("ffmpeg's stderr does not say why:\n%s", bad.Stderr.String())
	}
	ts.logs.WaitLog(t, time.Second, "rtmp publish refused", "stream=live/test", `reason="route \"live/test\": missing or wrong publish key"`)

	good := publish(t, "h264-aac.flv", 2, ts.url("live/test?key=SECRET"))
	r := ts.nextReader(t, 10*time.Second)
	readN(t, r, 10, 5*time.Second)
	if err := good.Wait(t, 15*time.Second); err != nil {
		t.Fatalf("ffmpeg with the right key: %v\n%s", err, good.Stderr.String())
	}

	mu.Lock()
	defer mu.Unlock()
	if len(reqs) != 2 {
		t.Fatalf("%d Authorize calls", len(reqs))
	}
	for i, key := range []string{"WRONG", "SECRET"} {
		if r := reqs[i]; r.Protocol != "rtmp" || r.Path != "live/test" || r.Credential != key || !strings.HasPrefix(r.Remote, "127.0.0.1:") {
			t.Errorf("request %d: %+v", i, r)
		}
	}
	ts.close(t)
	if logs := ts.logs.String(); strings.Contains(logs, "WRONG") || strings.Contains(logs, "SECRET") {
		t.Errorf("the log holds a key:\n%s", logs)
	}
}

// TestRefusalStatus checks the onStatus a refused client receives.
func TestRefusalStatus(t *testing.T) {
	auth := func(r access.Request) error {
		switch {
		case r.Path == "noroute/x":
			return fmt.Errorf("%q: %w", r.Path, access.ErrNoRoute)
		case r.Path == "other/x":
			return errors.New("database unavailable")
		case r.Credential != "k":
			return fmt.Errorf("%q: %w", r.Path, access.BadKey(access.Publish))
		}
		return nil
	}
	ts := startServer(t, testkit.Authorizer(auth), nil)

	// An accepted publisher, to collide with.
	c := dialRaw(t, ts.addr)
	if st := c.publish(c.connect("live"), "busy?key=k"); st.Code != "NetStream.Publish.Start" {
		t.Fatalf("first publish: %+v", st)
	}

	for _, tc := range []struct {
		app, name string
		play      bool
		code      string
		desc      string
	}{
		{"live", "x?key=nope", false, "NetStream.Publish.Unauthorized", `publish "live/x" refused: missing or wrong publish key`},
		{"live", "x", false, "NetStream.Publish.Unauthorized", "missing or wrong publish key"},
		{"noroute", "x?key=k", false, "NetStream.Publish.BadName", "no route matches the path"},
		{"other", "x?key=k", false, "NetStream.Publish.Failed", `publish "other/x" refused`},
		{"live", "busy?key=k", false, "NetStream.Publish.BadName", `stream "live/busy" is already publishing`},
		{"live", "a b?key=k", false, "NetStream.Publish.BadName", "space or control character"},
		{"live", "x", true, "NetStream.Play.Failed", "play is not supported yet"},
	} {
		t.Run(tc.code+" "+tc.name, func(t *testing.T) {
			c := dialRaw(t, ts.addr)
			id := c.connect(tc.app)
			var st status
			if tc.play {
				c.command(8, id, "play", 0, args{nil, tc.name, float64(-2000)})
				st = c.waitStatus()
			} else {
				st = c.publish(id, tc.name)
			}
			if st.Level != "error" || st.Code != tc.code || !strings.Contains(st.Description, tc.desc) {
				t.Errorf("status %+v, want code %s, description with %q", st, tc.code, tc.desc)
			}
			if strings.Contains(st.Description, "nope") {
				t.Errorf("the description holds the key: %q", st.Description)
			}
			if err := c.waitClosed(5 * time.Second); err != nil {
				t.Error(err)
			}
		})
	}
	// Each refusal was logged once, without the key.
	if n := len(ts.logs.Lines("rtmp publish refused")); n != 6 {
		t.Errorf("%d refusal log lines, want 6:\n%s", n, ts.logs.String())
	}
	ts.logs.WaitLog(t, time.Second, "rtmp play refused", "stream=live/x", "play is not supported yet")
	if strings.Contains(ts.logs.String(), "nope") {
		t.Errorf("the log holds a key:\n%s", ts.logs.String())
	}
	if ls := ts.logs.Lines("database unavailable"); len(ls) != 1 {
		t.Errorf("the Authorize error is not logged: %v", ls)
	}
}

func TestPlayRefusedFFmpeg(t *testing.T) {
	testkit.FFmpegBin(t, "ffmpeg")
	ts := startServer(t, allowAll, nil)
	ff := testkit.StartFFmpeg(t, "-i", ts.url("live/test"), "-t", "1", "-f", "null", "-")
	if err := ff.Wait(t, 10*time.Second); err == nil {
		t.Fatal("ffmpeg playing exited 0")
	}
	if !strings.Contains(ff.Stderr.String(), "play is not supported yet") {
		t.Errorf("ffmpeg's stderr does not say why:\n%s", ff.Stderr.String())
	}
	ts.logs.WaitLog(t, time.Second, "rtmp play refused", "stream=live/test")
}

// TestGarbage: random bytes on the port close that connection with a log
// line naming the peer, and the ongoing stream goes on.
func TestGarbage(t *testing.T) {
	testkit.FFmpegBin(t, "ffmpeg")
	checkGoroutines := testkit.GoroutineBaseline(t, 5*time.Second)
	ts := startServer(t, allowAll, nil)
	ff := publish(t, "h264-aac.flv", 4, ts.url("live/test"))
	r := ts.nextReader(t, 10*time.Second)
	readN(t, r, 10, 5*time.Second)

	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	garbage := make([]byte, 1537)
	_, _ = cryptorand.Read(garbage)
	if garbage[0] == 3 {
		garbage[0] = 0x47 // the RTMP version byte would wait for C2 (see TestSetupTimeout)
	}
	start := time.Now()
	if _, err := nc.Write(garbage); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(nc); err != nil && !isConnReset(err) {
		t.Fatalf("reading from the server: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("closed after %v", d)
	}
	// "not an RTMP handshake: version byte is 0x..", or RTMPE for 6 and 8.
	ts.logs.WaitLog(t, time.Second, "rtmp connection failed", "peer="+nc.LocalAddr().String(), "RTMP")

	readN(t, r, 30, 5*time.Second)
	if err := ff.Wait(t, 15*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, ff.Stderr.String())
	}
	ts.close(t)
	checkGoroutines()
}

func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET)
}

// TestSetupTimeout: a connection that does not get to publishing in time
// is closed and logged, silent or stuck in the handshake.
func TestSetupTimeout(t *testing.T) {
	ts := startServer(t, allowAll, func(s *Server) { s.setupTimeout = 300 * time.Millisecond })
	for _, send := range [][]byte{nil, append([]byte{3}, make([]byte, 1536)...)} {
		nc, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write(send); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(nc); err != nil && !isConnReset(err) {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("closed after %v", d)
		}
		ts.logs.WaitLog(t, time.Second, "rtmp connection failed", "peer="+nc.LocalAddr().String(), "not done within 300ms")
		nc.Close()
	}
}

// TestIdleTimeout: a publisher that stops sending is dropped.
func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, allowAll, func(s *Server) { s.idleTimeout = 300 * time.Millisecond })
	c := dialRaw(t, ts.addr)
	if st := c.publish(c.connect("live"), "idle"); st.Code != "NetStream.Publish.Start" {
		t.Fatalf("publish: %+v", st)
	}
	if err := c.waitClosed(3 * time.Second); err != nil {
		t.Fatal(err)
	}
	ts.logs.WaitLog(t, time.Second, "rtmp publish ended", "stream=live/idle", "no data for 300ms")
}

// TestUnsupportedCodec: an H.265 tag ends the publish with a log line.
func TestUnsupportedCodec(t *testing.T) {
	ts := startServer(t, allowAll, nil)
	c := dialRaw(t, ts.addr)
	id := c.connect("live")
	if st := c.publish(id, "hevc"); st.Code != "NetStream.Publish.Start" {
		t.Fatalf("publish: %+v", st)
	}
	if err := c.video(id, 0, []byte{0x1c, 0, 0, 0, 0, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := c.waitClosed(3 * time.Second); err != nil {
		t.Fatal(err)
	}
	ts.logs.WaitLog(t, time.Second, "rtmp publish ended", "stream=live/hevc", "video codec H.265 (FLV codec id 12) is not supported")
	if _, ok := ts.reg.Get("live/hevc"); ok {
		t.Error("stream still registered")
	}
}

// TestOversizedCommand: a huge command is refused from its header, and a
// deeply nested one within the limit does not take the process down.
func TestOversizedCommand(t *testing.T) {
	ts := startServer(t, allowAll, nil)

	dial := func() net.Conn {
		nc, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := handshake.HandshakeWithServer(nc, nc, &handshake.Config{}); err != nil {
			t.Fatal(err)
		}
		return nc
	}

	nc := dial()
	defer nc.Close()
	// fmt 0, csid 3, 16 MiB - 1 command message.
	if _, err := nc.Write([]byte{0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0, 2, 0, 7}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(nc); err != nil && !isConnReset(err) {
		t.Fatal(err)
	}
	ts.logs.WaitLog(t, time.Second, "rtmp connection failed", "peer="+nc.LocalAddr().String(), "is 16777215 bytes, maximum is 16384")

	// A connect whose command object nests 4000 deep, sent in 128-byte
	// chunks.
	w := newChunkWriter(false)
	w.buf.Reset()
	nested := (&amfEnc{}).str("connect").num(1)
	for range 4000 {
		nested.raw(amf0Object).key("a")
	}
	nested.raw(amf0Null)
	w.message(3, 0, 0, 20, 0, nested.Bytes()[:maxCommandMessageSize])
	nc2 := dial()
	defer nc2.Close()
	if _, err := nc2.Write(w.buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(nc2); err != nil && !isConnReset(err) {
		t.Fatal(err)
	}
	ts.logs.WaitLog(t, time.Second, "rtmp connection failed", "peer="+nc2.LocalAddr().String())
}

func TestServeAfterClose(t *testing.T) {
	s := NewServer(Config{Registry: media.NewRegistry(nil), Authorize: allowAll})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Error("the listener is still open")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestListenerFailure: Serve returns an error when the listener fails
// under it.
func TestListenerFailure(t *testing.T) {
	s := NewServer(Config{Registry: media.NewRegistry(nil), Authorize: allowAll})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	time.Sleep(50 * time.Millisecond)
	ln.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Serve returned nil after its listener failed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running after its listener failed")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
