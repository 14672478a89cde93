package rtmp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/wishbridge/bridge/access"
	ingestrtmp "github.com/wishbridge/bridge/ingest/rtmp"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
)

// startPusher runs a pusher of reg's path "live/test" to url until the
// test ends; streaming receives a value each time media starts flowing.
func startPusher(t *testing.T, cfg PushConfig) (p *Pusher, streaming chan struct{}, stop func()) {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = "live/test"
	}
	p, err := NewPusher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.minBackoff, p.poll = 100*time.Millisecond, 20*time.Millisecond
	streaming = make(chan struct{}, 16)
	p.onStreaming = func() { streaming <- struct{}{} }
	stop = testkit.RunUntilStopped(t, p.Run)
	return p, streaming, stop
}

// TestPushFFmpeg pushes 4 s of the H.264 + AAC fixture to ffmpeg acting as
// an RTMP server and checks what it recorded.
func TestPushFFmpeg(t *testing.T) {
	checkGoroutines := testkit.GoroutineBaseline(t, 10*time.Second)
	log, logs := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	m := testkit.ReadFLV(t, "h264-aac.flv")
	reg := media.NewRegistry(log)
	port := testkit.FreeTCPPort(t)
	file := filepath.Join(t.TempDir(), "out.flv")
	ff := listenFFmpeg(t, port, file)
	_, streaming, stop := startPusher(t, PushConfig{Registry: reg, URL: fmt.Sprintf("rtmp://127.0.0.1:%d/live/out", port), Log: log})

	pub := testkit.Publish(t, reg, "live/test", m)
	testkit.WaitStreaming(t, streaming, 10*time.Second)
	sent := testkit.Until(m.Units, 4*time.Second)
	testkit.Feed(context.Background(), pub, sent, 1, 0)
	pub.Close()
	if err := ff.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, ff.Stderr.String())
	}
	stop()

	p := testkit.FFprobe(t, file)
	p.CheckAVC(t)
	want := sent[len(sent)-1].DTS - sent[0].DTS
	if got := p.Duration(t); got < want-500*time.Millisecond || got > want+500*time.Millisecond {
		t.Errorf("recorded duration %v, sent %v", got, want)
	}
	if n := logs.Count("rtmp push started", "target=rtmp://127.0.0.1:"); n != 1 {
		t.Errorf("%d \"rtmp push started\" log lines, want 1", n)
	}
	if n := logs.Count("live/out"); n != 0 {
		t.Errorf("the stream key appears in %d log lines", n)
	}
	checkGoroutines()
}

// TestPushOpusSource pushes a stream with Opus audio (as WHIP sends it) to
// two ffmpeg RTMP servers through one shared AAC view: both recordings
// have AAC that decodes to the fixture's tones, and the audio was
// transcoded once.
func TestPushOpusSource(t *testing.T) {
	checkGoroutines := testkit.GoroutineBaseline(t, 10*time.Second)
	log, logs := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	m := testkit.WithOpus(t, testkit.ReadFLV(t, "h264-aac.flv"))
	reg := media.NewRegistry(log)
	views := transcode.NewAACViews(log)
	var files []string
	var ffs []*testkit.Proc
	var streams []chan struct{}
	var stops []func()
	for range 2 {
		port := testkit.FreeTCPPort(t)
		file := filepath.Join(t.TempDir(), "out.flv")
		files = append(files, file)
		ffs = append(ffs, listenFFmpeg(t, port, file))
		_, streaming, stop := startPusher(t, PushConfig{Registry: reg, URL: fmt.Sprintf("rtmp://127.0.0.1:%d/live/out", port), AAC: views, AACBitrate: 96000, Log: log})
		streams = append(streams, streaming)
		stops = append(stops, stop)
	}
	pub := testkit.Publish(t, reg, "live/test", m)
	for _, s := range streams {
		testkit.WaitStreaming(t, s, 10*time.Second)
	}
	sent := testkit.Until(m.Units, 4*time.Second)
	testkit.Feed(context.Background(), pub, sent, 1, 0)
	pub.Close()
	for i, ff := range ffs {
		if err := ff.Wait(t, 20*time.Second); err != nil {
			t.Fatalf("ffmpeg %d: %v\n%s", i, err, ff.Stderr.String())
		}
	}
	for _, stop := range stops {
		stop()
	}
	for _, file := range files {
		p := testkit.FFprobe(t, file)
		p.CheckAVC(t)
		left, right := testkit.DecodeAudio(t, file)
		// Away from the 1760 Hz beeps at each second's start.
		for _, sec := range []float64{1.3, 2.3, 3.3} {
			testkit.CheckTones(t, left, right, int(sec*48000), 24000)
		}
		testkit.CheckSync(t, p, left, 3)
	}
	if n := logs.Count("aac view started"); n != 1 {
		t.Errorf("%d AAC views started for 2 targets, want 1", n)
	}
	if n := logs.Count("aac view stopped"); n != 1 {
		t.Errorf("%d AAC views stopped, want 1", n)
	}
	checkGoroutines()
}

// TestPushBFramesToIngest pushes the B-frame fixture to the bridge's own
// RTMP ingest (in-process, go-rtmp server) and compares what it received
// with what was sent: every frame, with the same DTS steps and the same
// PTS - DTS (composition time), and the audio.
func TestPushBFramesToIngest(t *testing.T) {
	t.Cleanup(testkit.GoroutineBaseline(t, 10*time.Second))
	log, _ := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	m := testkit.ReadFLV(t, "h264-bframes-aac.flv")
	srcReg, dstReg := media.NewRegistry(log), media.NewRegistry(log)
	addr := startIngest(t, dstReg, transcode.NewAACViews(log), log)
	_, streaming, stop := startPusher(t, PushConfig{Registry: srcReg, URL: "rtmp://" + addr + "/live/out?key=secret", Log: log})
	pub := testkit.Publish(t, srcReg, "live/test", m)
	testkit.WaitStreaming(t, streaming, 10*time.Second)
	dst, ok := dstReg.Get("live/out")
	if !ok {
		t.Fatal("the push is not published on the ingest")
	}
	r, err := dst.NewReader(media.ReaderOptions{Name: "test", QueueSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sent := testkit.Until(m.Units, 3*time.Second)
	testkit.Feed(context.Background(), pub, sent, 4, 0)
	pub.Close()
	var got []*media.Unit
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		u, err := r.Read(ctx)
		if err != nil {
			if !errors.Is(err, media.ErrStreamEnded) {
				t.Fatalf("read: %v", err)
			}
			break
		}
		got = append(got, u)
	}
	stop()

	split := func(units []*media.Unit) (v, a []*media.Unit) {
		for _, u := range units {
			if u.Track.IsVideo() {
				v = append(v, u)
			} else {
				a = append(a, u)
			}
		}
		return v, a
	}
	sv, sa := split(sent)
	gv, ga := split(got)
	if len(gv) != len(sv) {
		t.Fatalf("received %d video frames, sent %d", len(gv), len(sv))
	}
	bframes := 0
	for i := range sv {
		s, g := sv[i], gv[i]
		if s.PTS != s.DTS {
			bframes++
		}
		if g.DTS-gv[0].DTS != s.DTS-sv[0].DTS || g.PTS-g.DTS != s.PTS-s.DTS || g.Key != s.Key {
			t.Errorf("frame %d: received dts %v pts-dts %v key %v, sent dts %v pts-dts %v key %v",
				i, g.DTS-gv[0].DTS, g.PTS-g.DTS, g.Key, s.DTS-sv[0].DTS, s.PTS-s.DTS, s.Key)
		}
	}
	if bframes == 0 {
		t.Error("the fixture has no frame with PTS != DTS")
	}
	// Audio from before the first keyframe's DTS (0 here) is not sent.
	if len(ga) < len(sa)-1 || len(ga) > len(sa) {
		t.Errorf("received %d audio frames, sent %d", len(ga), len(sa))
	}
	for i := range ga {
		s, g := sa[len(sa)-len(ga)+i], ga[i]
		if !bytes.Equal(s.Data, g.Data) || g.DTS-gv[0].DTS != s.DTS-sv[0].DTS {
			t.Errorf("audio frame %d differs: dts %v, sent %v", i, g.DTS-gv[0].DTS, s.DTS-sv[0].DTS)
			break
		}
	}
}

// TestPushReconnect kills the RTMP target mid-stream and starts it again
// on the same port: the pusher says why it lost it, reconnects, and the
// second recording has media.
func TestPushReconnect(t *testing.T) {
	checkGoroutines := testkit.GoroutineBaseline(t, 10*time.Second)
	log, logs := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	m := testkit.ReadFLV(t, "h264-aac.flv")
	reg := media.NewRegistry(log)
	port := testkit.FreeTCPPort(t)
	url := fmt.Sprintf("rtmp://127.0.0.1:%d/live/out", port)
	dir := t.TempDir()
	ff1 := listenFFmpeg(t, port, filepath.Join(dir, "1.flv"))
	_, streaming, stop := startPusher(t, PushConfig{Registry: reg, URL: url, Log: log})
	pub := testkit.Publish(t, reg, "live/test", m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		testkit.Feed(ctx, pub, m.Units, 1, 0)
		pub.Close()
	}()
	testkit.WaitStreaming(t, streaming, 10*time.Second)
	time.Sleep(2 * time.Second)
	ff1.Kill()
	file := filepath.Join(dir, "2.flv")
	ff2 := listenFFmpeg(t, port, file)
	testkit.WaitStreaming(t, streaming, 10*time.Second)
	time.Sleep(3 * time.Second)
	cancel() // the publisher leaves: the stream ends, the push ends cleanly
	<-fed
	if err := ff2.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("second ffmpeg: %v\n%s", err, ff2.Stderr.String())
	}
	stop()
	p := testkit.FFprobe(t, file)
	p.CheckAVC(t)
	if d := p.Duration(t); d < 2*time.Second {
		t.Errorf("second recording is %v, want 2 s or more", d)
	}
	if n := logs.Count("rtmp push ended", "the server closed the connection"); n == 0 {
		if n := logs.Count("rtmp push ended", "reset by peer"); n == 0 {
			t.Error("no log line saying why the push failed")
		}
	}
	if n := logs.Count("rtmp push started"); n != 2 {
		t.Errorf("%d pushes started, want 2", n)
	}
	checkGoroutines()
}

// TestPushRefused: a target that refuses the publish is retried with
// backoff, and the log says why.
func TestPushRefused(t *testing.T) {
	t.Cleanup(testkit.GoroutineBaseline(t, 10*time.Second))
	log, logs := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	m := testkit.ReadFLV(t, "h264-aac.flv")
	srcReg, dstReg := media.NewRegistry(log), media.NewRegistry(log)
	srv := ingestrtmp.NewServer(ingestrtmp.Config{
		Registry:  dstReg,
		Authorize: testkit.Authorizer(func(access.Request) error { return access.BadKey(access.Publish) }),
		Log:       log,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p, _, stop := startPusher(t, PushConfig{Registry: srcReg, URL: "rtmp://" + ln.Addr().String() + "/live/out", Log: log})
	p.maxBackoff = 200 * time.Millisecond
	testkit.Publish(t, srcReg, "live/test", m)
	deadline := time.Now().Add(10 * time.Second)
	for logs.Count("rtmp push failed", "NetStream.Publish.Unauthorized") < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if n := logs.Count("rtmp push failed", "NetStream.Publish.Unauthorized", `publish \"live/<redacted>\" refused`); n < 3 {
		t.Errorf("%d refusals logged with the server's reason (key hidden), want 3 or more", n)
	}
	if n := logs.Count("rtmp push failed", "live/out"); n != 0 {
		t.Errorf("the stream key appears in %d log lines", n)
	}
}

// TestPushRTMPS pushes over TLS to the RTMP ingest behind a TLS listener
// with a certificate of its own.
func TestPushRTMPS(t *testing.T) {
	t.Cleanup(testkit.GoroutineBaseline(t, 10*time.Second))
	log, _ := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	m := testkit.ReadFLV(t, "h264-aac.flv")
	srcReg, dstReg := media.NewRegistry(log), media.NewRegistry(log)
	srv := ingestrtmp.NewServer(ingestrtmp.Config{Registry: dstReg, Authorize: testkit.AllowAll, Log: log})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// Without the certificate's root, the push fails verification.
	_, _, stopBad := startPusher(t, PushConfig{Registry: srcReg, Path: "live/test", URL: "rtmps://" + ln.Addr().String() + "/live/bad", Log: log})
	_, streaming, stop := startPusher(t, PushConfig{Registry: srcReg, URL: "rtmps://" + ln.Addr().String() + "/live/out", TLSConfig: &tls.Config{RootCAs: roots}, Log: log})
	pub := testkit.Publish(t, srcReg, "live/test", m)
	testkit.WaitStreaming(t, streaming, 10*time.Second)
	dst, ok := dstReg.Get("live/out") // published: the push has started
	if !ok {
		t.Fatal("the push is not published on the ingest")
	}
	r, err := dst.NewReader(media.ReaderOptions{StartAtKeyframe: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go testkit.Feed(context.Background(), pub, testkit.Until(m.Units, 2*time.Second), 4, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for n := 0; n < 20; n++ {
		if _, err := r.Read(ctx); err != nil {
			t.Fatalf("after %d units over rtmps: %v", n, err)
		}
	}
	stop()
	stopBad()
	if _, ok := dstReg.Get("live/bad"); ok {
		t.Error("a push without the root certificate got through")
	}
	pub.Close()
}
