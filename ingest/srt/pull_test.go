package srt

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

// pullRig runs a Puller against a source.
type pullRig struct {
	p    *Puller
	reg  *media.Registry
	logs *testkit.LogBuf

	published chan *media.Stream
	retries   chan retry
	cancel    context.CancelFunc
	done      chan struct{}
}

type retry struct {
	at   time.Time
	wait time.Duration
	err  error
}

func newPullRig(t *testing.T, url string, configure func(*Puller)) *pullRig {
	t.Helper()
	logs := &testkit.LogBuf{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := media.NewRegistry(log)
	reg.SetGrace(func(string) time.Duration { return 10 * time.Second })
	r := &pullRig{
		p:         NewPuller(PullConfig{Registry: reg, Path: "pulled/cam", URL: url, Log: log}),
		reg:       reg,
		logs:      logs,
		published: make(chan *media.Stream, 16),
		retries:   make(chan retry, 1024),
		done:      make(chan struct{}),
	}
	r.p.minBackoff, r.p.maxBackoff = 100*time.Millisecond, 400*time.Millisecond
	r.p.pubCfg.onPublish = func(st *media.Stream) { r.published <- st }
	r.p.onRetry = func(wait time.Duration, err error) {
		select {
		case r.retries <- retry{time.Now(), wait, err}:
		default:
		}
	}
	if configure != nil {
		configure(r.p)
	}
	t.Cleanup(func() {
		r.stop(t)
		if t.Failed() || os.Getenv("SRT_TEST_LOGS") != "" {
			t.Logf("puller log:\n%s", logs.String())
		}
	})
	return r
}

func (r *pullRig) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.done)
		r.p.Run(ctx)
	}()
}

// stop cancels Run and checks that it returns promptly.
func (r *pullRig) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(4 * time.Second):
		t.Fatalf("Run did not return within 4 s of the cancel")
	}
}

func (r *pullRig) nextPublish(t *testing.T, timeout time.Duration) *media.Stream {
	t.Helper()
	select {
	case st := <-r.published:
		return st
	case <-time.After(timeout):
		t.Fatalf("nothing published within %v; log:\n%s", timeout, r.logs.String())
		return nil
	}
}

func (r *pullRig) nextRetry(t *testing.T, timeout time.Duration) retry {
	t.Helper()
	select {
	case rt := <-r.retries:
		return rt
	case <-time.After(timeout):
		t.Fatalf("no retry within %v; log:\n%s", timeout, r.logs.String())
		return retry{}
	}
}

// noDialerLeak returns a check that no gosrt dialer socket goroutine was
// left behind since it was made (the goroutine baseline does not count
// them: see gosrtDialer). The pulls these tests make either never call
// gosrt.Dial or drain the dialer after a successful one.
func noDialerLeak(t *testing.T) func() {
	t.Helper()
	count := func() int {
		stacks := testkit.AllStacks()
		return strings.Count(stacks, gosrtDialer)
	}
	base := count()
	return func() {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := count()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d gosrt dialer goroutines left, %d before", n, base)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// serveTS starts ffmpeg serving the TS fixture, looped, as an SRT listener
// on port.
func serveTS(t *testing.T, port int) *testkit.Proc {
	t.Helper()
	return testkit.StartFFmpeg(t, "-re", "-stream_loop", "-1", "-i", testkit.Fixture("h264-aac.ts"), "-c", "copy", "-f", "mpegts",
		fmt.Sprintf("srt://127.0.0.1:%d?mode=listener&pkt_size=1316", port))
}

// TestPullFFmpeg pulls from ffmpeg serving TS as an SRT listener, kills
// ffmpeg mid-stream and restarts it on the same port: the puller
// reconnects, and a reader attached before the kill reads on across the
// restart.
func TestPullFFmpeg(t *testing.T) {
	baseline, dialers := testkit.GoroutineBaseline(t, 8*time.Second, gosrtDialer), noDialerLeak(t)
	port := testkit.FreeUDPPort(t)
	f := serveTS(t, port)
	rig := newPullRig(t, fmt.Sprintf("srt://127.0.0.1:%d?latency=200", port), nil)
	rig.start()

	st := rig.nextPublish(t, 15*time.Second)
	r, err := st.NewReader(media.ReaderOptions{Name: "test", QueueSize: 8192})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var m testkit.MediaCheck
	testkit.ReadUntil(t, r, &m, 10*time.Second, func() bool { return m.Keys >= 2 && m.Audio >= 50 })
	testkit.CheckH264AAC(t, &m)
	rig.logs.WaitLog(t, time.Second, "srt pull", "latency=200ms", `source="srt://127.0.0.1:`)
	if s, ok := rig.p.Stats(); !ok || s.PacketsReceived == 0 || s.Peer != fmt.Sprintf("srt://127.0.0.1:%d?latency=200", port) {
		t.Errorf("Stats() = %+v, %v", s, ok)
	}

	seen := len(rig.logs.Lines("srt pull ended"))
	f.Kill()
	rig.logs.WaitNewLog(t, 15*time.Second, seen, "srt pull ended")
	before := m
	f = serveTS(t, port)
	if st2 := rig.nextPublish(t, 15*time.Second); st2 != st {
		t.Fatalf("the puller's second publication is another stream: readers were not kept")
	}
	testkit.ReadUntil(t, r, &m, 10*time.Second, func() bool { return m.Keys >= before.Keys+2 && m.Audio >= before.Audio+50 })
	testkit.CheckH264AAC(t, &m)
	rig.logs.WaitLog(t, time.Second, "publisher is back within the grace period")

	rig.stop(t)
	if _, ok := rig.p.Stats(); ok {
		t.Error("Stats() still reports a connection after Run returned")
	}
	r.Close()
	f.Kill()
	baseline()
	dialers()
}

// TestPullBackoff points the puller at a closed port: it retries after
// growing delays up to the cap, says why, and stops promptly.
func TestPullBackoff(t *testing.T) {
	baseline, dialers := testkit.GoroutineBaseline(t, 8*time.Second, gosrtDialer), noDialerLeak(t)
	url := fmt.Sprintf("srt://127.0.0.1:%d?streamid=read:live/x&passphrase=secret-passphrase", testkit.FreeUDPPort(t))
	rig := newPullRig(t, url, func(p *Puller) {
		p.minBackoff, p.maxBackoff = 20*time.Millisecond, 80*time.Millisecond
	})
	rig.start()
	want := []time.Duration{20, 40, 80, 80, 80}
	var got []retry
	for len(got) < len(want) {
		got = append(got, rig.nextRetry(t, 5*time.Second))
	}
	for i, r := range got {
		if r.wait != want[i]*time.Millisecond {
			t.Errorf("retry %d waits %v, want %v", i, r.wait, want[i]*time.Millisecond)
		}
		if !strings.Contains(r.err.Error(), "connection refused") {
			t.Errorf("retry %d: error %q, want connection refused", i, r.err)
		}
		if i > 0 {
			if gap := r.at.Sub(got[i-1].at); gap < got[i-1].wait {
				t.Errorf("retry %d came %v after the previous one, which waited %v", i, gap, got[i-1].wait)
			}
		}
	}
	line := rig.logs.WaitLog(t, time.Second, "srt pull failed", "retry_in=80ms")
	if strings.Contains(rig.logs.String(), "secret-passphrase") || !strings.Contains(line, "passphrase=<redacted>") {
		t.Errorf("the log shows the passphrase or no source: %s", line)
	}
	start := time.Now()
	rig.stop(t)
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Run took %v to return after the cancel", d)
	}
	baseline()
	dialers()
}

// TestPullSilentHost: a source that never answers is given up on after
// the probe timeout; a cancel during the wait ends Run at once, without
// leaving a goroutine behind.
func TestPullSilentHost(t *testing.T) {
	baseline, dialers := testkit.GoroutineBaseline(t, 8*time.Second, gosrtDialer), noDialerLeak(t)
	hole, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	url := "srt://" + hole.LocalAddr().String()

	rig := newPullRig(t, url, func(p *Puller) { p.probeTimeout = 300 * time.Millisecond })
	rig.start()
	if r := rig.nextRetry(t, 5*time.Second); !strings.Contains(r.err.Error(), "no answer to the SRT handshake") {
		t.Errorf("error %q, want no answer", r.err)
	}
	rig.stop(t)

	rig = newPullRig(t, url, nil) // 10 s probe timeout
	rig.start()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	rig.stop(t)
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Errorf("Run took %v to return after the cancel", d)
	}
	hole.Close()
	baseline()
	dialers()
}

// TestPullRefused pulls from this package's server, which only takes
// publishers: the puller reports the rejection.
func TestPullRefused(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	rig := newPullRig(t, "srt://"+ts.addr+"?streamid=read:live/x", nil)
	rig.start()
	if r := rig.nextRetry(t, 10*time.Second); !strings.Contains(r.err.Error(), "the listener refused the connection: 1405 REJX_BAD_MODE") {
		t.Errorf("error %q, want the rejection", r.err)
	}
	rig.stop(t)
}

func TestParsePullURL(t *testing.T) {
	for _, tc := range []struct {
		in        string
		addr, sid string
		pass      string
		latency   time.Duration
		keylen    int
		err       string
	}{
		{in: "srt://host:9000", addr: "host:9000", latency: 120 * time.Millisecond},
		{in: "SRT://10.0.0.1:9000/?streamid=#!::r=live/cam,m=request&passphrase=0123456789&latency=250&pbkeylen=32&mode=caller", addr: "10.0.0.1:9000", sid: "#!::r=live/cam,m=request", pass: "0123456789", latency: 250 * time.Millisecond, keylen: 32},
		{in: "srt://[::1]:9000?streamid=read%3Alive%2Fcam", addr: "[::1]:9000", sid: "read:live/cam", latency: 120 * time.Millisecond},
		{in: "srt://host", err: "expected srt://host:port"},
		{in: "srt://:9000", err: "expected srt://host:port"},
		{in: "srt://host:0", err: "invalid port"},
		{in: "rtmp://host:9000", err: "is not an srt:// URL"},
		{in: "srt://host:9000?passphrase=short", err: "10-79 characters"},
		{in: "srt://host:9000?latency=200000", err: "not a number of milliseconds"},
		{in: "srt://host:9000?pbkeylen=20", err: "is not 16, 24 or 32"},
		{in: "srt://host:9000?streamid=" + strings.Repeat("x", gosrt.MAX_STREAMID_SIZE+1), err: "streamid is"},
	} {
		s, err := parsePullURL(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		c := s.cfg
		if s.addr != tc.addr || c.StreamId != tc.sid || c.Passphrase != tc.pass || c.Latency != tc.latency || (tc.keylen != 0 && c.PBKeylen != tc.keylen) || c.PayloadSize != payloadSize {
			t.Errorf("%q: got addr %q streamid %q passphrase %q latency %v pbkeylen %d payload %d", tc.in, s.addr, c.StreamId, c.Passphrase, c.Latency, c.PBKeylen, c.PayloadSize)
		}
	}
	if _, err := parsePullURL("srt://host:9000?passphrase=secret"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("error %v shows the passphrase", err)
	}
}

func TestPullConfigErrors(t *testing.T) {
	logs := &testkit.LogBuf{}
	p := NewPuller(PullConfig{Registry: media.NewRegistry(nil), Path: "a/b", URL: "srt://host?passphrase=secret-passphrase", Log: slog.New(slog.NewTextHandler(logs, nil))})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	p.Run(ctx)
	if !strings.Contains(logs.String(), "srt pull cannot start") || strings.Contains(logs.String(), "secret-passphrase") {
		t.Errorf("log:\n%s", logs.String())
	}
	if p := NewPuller(PullConfig{URL: "srt://h:1"}); p.err == nil || !strings.Contains(p.err.Error(), "no registry or path") {
		t.Errorf("error %v", p.err)
	}
}
