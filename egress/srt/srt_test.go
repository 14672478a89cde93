package srt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
)

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

// listenFFmpeg starts ffmpeg as an SRT listener on port recording to file
// (query: more listener options), and waits until it listens: an SRT
// caller gets no "connection refused", it times out.
func listenFFmpeg(t *testing.T, port int, query, file string) *testkit.Proc {
	t.Helper()
	f := testkit.StartFFmpeg(t, "-y", "-i", fmt.Sprintf("srt://127.0.0.1:%d?mode=listener%s", port, query), "-c", "copy", "-f", "mpegts", file)
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return f // taken: ffmpeg listens
		}
		l.Close()
		if time.Now().After(deadline) {
			t.Fatalf("ffmpeg does not listen on UDP port %d after 10 s:\n%s", port, f.Stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pushTo pushes 4 s of m to an ffmpeg SRT listener and returns what it
// recorded.
func pushTo(t *testing.T, m *testkit.FLVMedia, cfg PushConfig, urlQuery, listenerQuery string) string {
	t.Helper()
	log := cfg.Log
	reg := media.NewRegistry(log)
	port := testkit.FreeUDPPort(t)
	file := filepath.Join(t.TempDir(), "out.ts")
	ff := listenFFmpeg(t, port, listenerQuery, file)
	cfg.Registry = reg
	cfg.URL = fmt.Sprintf("srt://127.0.0.1:%d%s", port, urlQuery)
	_, streaming, stop := startPusher(t, cfg)
	pub := testkit.Publish(t, reg, "live/test", m)
	testkit.WaitStreaming(t, streaming, 15*time.Second)
	testkit.Feed(context.Background(), pub, testkit.Until(m.Units, 4*time.Second), 1, 0)
	pub.Close()
	stop() // closes the connection: the listener ends its input
	if err := ff.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, ff.Stderr.String())
	}
	return file
}

func TestPushFFmpeg(t *testing.T) {
	checkGoroutines := testkit.GoroutineBaseline(t, 10*time.Second)
	log, logs := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	m := testkit.ReadFLV(t, "h264-aac.flv")
	file := pushTo(t, m, PushConfig{Log: log}, "?streamid=publish:live/out&latency=200", "")
	p := testkit.FFprobe(t, file)
	p.CheckAVC(t)
	if d := p.Duration(t); d < 3500*time.Millisecond || d > 4500*time.Millisecond {
		t.Errorf("recorded %v, sent 4 s", d)
	}
	left, right := testkit.DecodeAudio(t, file)
	testkit.CheckTones(t, left, right, 48000*13/10, 24000)
	testkit.CheckSync(t, p, left, 3)
	if logs.Count("srt push started") != 1 {
		t.Error("no \"srt push started\" log line")
	}
	checkGoroutines()
}

// TestPushEncrypted pushes with a passphrase (and a streamid in the access
// control syntax) to a listener that requires it; the passphrase is never
// logged.
func TestPushEncrypted(t *testing.T) {
	log, logs := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	m := testkit.ReadFLV(t, "h264-aac.flv")
	const pass = "correct-horse-battery"
	file := pushTo(t, m, PushConfig{Log: log}, "?streamid=#!::r=live/out,m=publish&passphrase="+pass, "&passphrase="+pass)
	testkit.FFprobe(t, file).CheckAVC(t)
	if strings.Contains(logs.String(), pass) {
		t.Error("the passphrase is in the log")
	}
}

func TestPushOpusSource(t *testing.T) {
	t.Run("aac", func(t *testing.T) {
		checkGoroutines := testkit.GoroutineBaseline(t, 10*time.Second)
		log, _ := testkit.TestLog(t, "EGRESS_TEST_LOGS")
		m := testkit.WithOpus(t, testkit.ReadFLV(t, "h264-aac.flv"))
		file := pushTo(t, m, PushConfig{Log: log, AAC: transcode.NewAACViews(log)}, "", "")
		p := testkit.FFprobe(t, file)
		p.CheckAVC(t)
		left, right := testkit.DecodeAudio(t, file)
		testkit.CheckTones(t, left, right, 48000*23/10, 24000)
		testkit.CheckSync(t, p, left, 3)
		checkGoroutines()
	})
	t.Run("opus", func(t *testing.T) {
		log, _ := testkit.TestLog(t, "EGRESS_TEST_LOGS")
		m := testkit.WithOpus(t, testkit.ReadFLV(t, "h264-aac.flv"))
		file := pushTo(t, m, PushConfig{Log: log, Audio: AudioOpus}, "", "")
		p := testkit.FFprobe(t, file)
		var codecs []string
		for _, s := range p.Streams {
			codecs = append(codecs, s.CodecName)
		}
		if strings.Join(codecs, " ") != "h264 opus" {
			t.Fatalf("recorded %v, want h264 opus", codecs)
		}
		left, right := testkit.DecodeAudio(t, file)
		testkit.CheckTones(t, left, right, 48000*23/10, 24000)
	})
}

// TestServeReader serves ffmpeg reading from an SRT listener the way the
// bridge's SRT ingest will: the listener accepts "read:" stream ids and
// hands the connection to ServeReader.
func TestServeReader(t *testing.T) {
	checkGoroutines := testkit.GoroutineBaseline(t, 10*time.Second)
	log, logs := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	m := testkit.ReadFLV(t, "h264-aac.flv")
	reg := media.NewRegistry(log)
	src := testkit.Publish(t, reg, "live/test", m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		testkit.Feed(ctx, src, m.Units, 1, 0)
		src.Close()
	}()

	cfg := gosrt.DefaultConfig()
	cfg.PayloadSize = payloadSize
	ln, err := gosrt.Listen("srt", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		req, err := ln.Accept2()
		if err != nil {
			served <- err
			return
		}
		path, ok := strings.CutPrefix(req.StreamId(), "read:")
		st, found := reg.Get(path)
		if !ok || !found {
			req.Reject(gosrt.REJX_NOTFOUND)
			served <- fmt.Errorf("streamid %q", req.StreamId())
			return
		}
		conn, err := req.Accept()
		if err != nil {
			served <- err
			return
		}
		served <- ServeReader(ctx, conn, st, ReaderOptions{Name: "srt read " + conn.RemoteAddr().String(), Log: log})
	}()
	t.Cleanup(ln.Close)
	time.Sleep(1500 * time.Millisecond) // a GOP in the cache
	file := filepath.Join(t.TempDir(), "out.ts")
	player := testkit.StartFFmpeg(t, "-y", "-i", fmt.Sprintf("srt://%s?streamid=read:live/test", ln.Addr()), "-t", "3", "-c", "copy", "-f", "mpegts", file)
	if err := player.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("reader: %v\n%s", err, player.Stderr.String())
	}
	select {
	case err := <-served:
		if !errors.Is(err, errPeerGone) {
			t.Errorf("ServeReader returned %v, want the peer gone", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeReader did not return after the reader left")
	}
	p := testkit.FFprobe(t, file)
	p.CheckAVC(t)
	if d := p.Duration(t); d < 2500*time.Millisecond || d > 3500*time.Millisecond {
		t.Errorf("read %v, want about 3 s", d)
	}
	cancel()
	<-fed
	ln.Close()
	_ = logs
	checkGoroutines()
}

func TestParseTarget(t *testing.T) {
	tg, err := parseTarget("srt://example.com:9000?streamid=%23!::r=live/x,m=publish&passphrase=0123456789ab&latency=250&pbkeylen=32&mode=caller")
	if err != nil {
		t.Fatal(err)
	}
	if tg.addr != "example.com:9000" || tg.cfg.StreamId != "#!::r=live/x,m=publish" || tg.cfg.Passphrase != "0123456789ab" ||
		tg.cfg.Latency != 250*time.Millisecond || tg.cfg.PBKeylen != 32 || tg.cfg.PayloadSize != payloadSize {
		t.Errorf("parsed %+v", tg)
	}
	if strings.Contains(tg.redacted, "0123456789ab") {
		t.Errorf("redacted URL %q shows the passphrase", tg.redacted)
	}
	tg, err = parseTarget("srt://[::1]:9000?streamid=#!::r=a,m=publish")
	if err != nil || tg.cfg.StreamId != "#!::r=a,m=publish" || tg.cfg.Latency != defaultLatency {
		t.Errorf("parsed %+v, %v", tg, err)
	}
	for _, bad := range []string{"srt://host", "rtmp://h:1/a/b", "srt://h:0", "srt://h:1?passphrase=short", "srt://h:1?latency=x", "srt://h:1?pbkeylen=8"} {
		if _, err := parseTarget(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestPacketizer(t *testing.T) {
	var sizes []int
	p := &packetizer{send: func(b []byte) error { sizes = append(sizes, len(b)); return nil }}
	for _, n := range []int{188, 188 * 10, 188 * 4} {
		if _, err := p.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.flush(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sizes) != "[1316 1316 188]" {
		t.Errorf("payload sizes %v", sizes)
	}
}

// TestPushReconnect kills the SRT listener mid-stream and starts it again:
// the pusher notices (gosrt drops a peer silent for 5 s), says so, and
// reconnects.
func TestPushReconnect(t *testing.T) {
	checkGoroutines := testkit.GoroutineBaseline(t, 10*time.Second)
	log, logs := testkit.TestLog(t, "EGRESS_TEST_LOGS")
	m := testkit.ReadFLV(t, "h264-aac.flv")
	reg := media.NewRegistry(log)
	port := testkit.FreeUDPPort(t)
	dir := t.TempDir()
	ff1 := listenFFmpeg(t, port, "", filepath.Join(dir, "1.ts"))
	_, streaming, stop := startPusher(t, PushConfig{Registry: reg, URL: fmt.Sprintf("srt://127.0.0.1:%d", port), Log: log})
	pub := testkit.Publish(t, reg, "live/test", m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		// Loop the fixture: 10 s is not enough for this test.
		for i := time.Duration(0); ctx.Err() == nil; i++ {
			testkit.Feed(ctx, pub, m.Units, 1, i*10*time.Second)
		}
		pub.Close()
	}()
	testkit.WaitStreaming(t, streaming, 15*time.Second)
	time.Sleep(time.Second)
	ff1.Kill()
	file := filepath.Join(dir, "2.ts")
	ff2 := listenFFmpeg(t, port, "", file)
	testkit.WaitStreaming(t, streaming, 20*time.Second)
	time.Sleep(3 * time.Second)
	stop()
	if err := ff2.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("second ffmpeg: %v\n%s", err, ff2.Stderr.String())
	}
	cancel()
	<-fed
	p := testkit.FFprobe(t, file)
	p.CheckAVC(t)
	if d := p.Duration(t); d < 2*time.Second {
		t.Errorf("second recording is %v, want 2 s or more", d)
	}
	if logs.Count("srt push ended", "write: the connection is closed") == 0 {
		t.Error("no log line saying why the push failed")
	}
	checkGoroutines()
}
