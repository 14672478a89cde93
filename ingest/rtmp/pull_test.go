package rtmp

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/reconnect"
	"github.com/wishbridge/bridge/internal/rtmpwire"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

// pullRig runs a Puller against a source, with a reader attached to the
// stream before the first unit of each publication.
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
	r.p.onPublish = func(st *media.Stream) { r.published <- st }
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
		if t.Failed() || os.Getenv("RTMP_TEST_LOGS") != "" {
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
	case <-time.After(2 * time.Second):
		t.Fatalf("Run did not return within 2 s of the cancel")
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

// serveFLV starts ffmpeg serving the fixture, looped, to one RTMP player.
func serveFLV(t *testing.T, url string) *testkit.Proc {
	t.Helper()
	return testkit.StartFFmpeg(t, "-re", "-stream_loop", "-1", "-i", testkit.Fixture("h264-aac.flv"), "-c", "copy", "-f", "flv", "-listen", "1", url)
}

// TestPullFFmpeg pulls from ffmpeg serving RTMP, kills ffmpeg mid-stream
// and restarts it: the puller reconnects, and a reader attached before the
// kill reads on across the restart.
func TestPullFFmpeg(t *testing.T) {
	baseline := testkit.GoroutineBaseline(t, 5*time.Second)
	url := fmt.Sprintf("rtmp://127.0.0.1:%d/live/src", testkit.FreeTCPPort(t))
	f := serveFLV(t, url)
	rig := newPullRig(t, url, nil)
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
	rig.logs.WaitLog(t, time.Second, "rtmp pull started", "source=rtmp://127.0.0.1:")

	seen := len(rig.logs.Lines("rtmp pull ended"))
	f.KillWait(t, 5*time.Second)
	failed := rig.logs.WaitNewLog(t, 15*time.Second, seen, "rtmp pull ended")
	if !strings.Contains(failed, "closed") && !strings.Contains(failed, "reset") {
		t.Errorf("failure logged as %q, want the connection closed", failed)
	}
	before := m
	f = serveFLV(t, url)
	if st2 := rig.nextPublish(t, 15*time.Second); st2 != st {
		t.Fatalf("the puller's second publication is another stream: readers were not kept")
	}
	testkit.ReadUntil(t, r, &m, 10*time.Second, func() bool { return m.Keys >= before.Keys+2 && m.Audio >= before.Audio+50 })
	testkit.CheckH264AAC(t, &m)
	rig.logs.WaitLog(t, time.Second, "publisher is back within the grace period")

	rig.stop(t)
	r.Close()
	f.KillWait(t, 5*time.Second)
	baseline()
}

// TestPullBackoff points the puller at a closed port: it retries after
// growing delays up to the cap and stops promptly.
func TestPullBackoff(t *testing.T) {
	baseline := testkit.GoroutineBaseline(t, 5*time.Second)
	url := fmt.Sprintf("rtmp://127.0.0.1:%d/live/src", testkit.FreeTCPPort(t))
	rig := newPullRig(t, url, func(p *Puller) {
		p.minBackoff, p.maxBackoff = 20*time.Millisecond, 80*time.Millisecond
	})
	rig.start()
	want := []time.Duration{20, 40, 80, 80, 80}
	var got []retry
	for len(got) < len(want) {
		select {
		case r := <-rig.retries:
			got = append(got, r)
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d retries", len(got))
		}
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
	rig.logs.WaitLog(t, time.Second, "rtmp pull failed", "retry_in=80ms", "source=rtmp://127.0.0.1:")
	start := time.Now()
	rig.stop(t)
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Run took %v to return after the cancel", d)
	}
	baseline()
}

// TestPullStalledServer: a server that accepts and says nothing is given
// up on after the setup timeout; a cancel during the wait ends Run at once.
func TestPullStalledServer(t *testing.T) {
	baseline := testkit.GoroutineBaseline(t, 5*time.Second)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	url := "rtmp://" + ln.Addr().String() + "/live/src"

	rig := newPullRig(t, url, func(p *Puller) { p.setupTimeout = 200 * time.Millisecond })
	rig.start()
	select {
	case r := <-rig.retries:
		if !strings.Contains(r.err.Error(), "handshake, connect and play not done within 200ms") {
			t.Errorf("error %q, want the setup timeout", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no retry")
	}
	rig.stop(t)

	rig = newPullRig(t, url, nil) // 10 s setup timeout
	rig.start()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	rig.stop(t)
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Run took %v to return after the cancel", d)
	}
	ln.Close()
	mu.Lock()
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()
	baseline()
}

// TestPullRefused pulls from this package's server, whose play hook
// refuses: the puller reports the server's status.
func TestPullRefused(t *testing.T) {
	ts := startServer(t, allowAll, func(s *Server) {
		s.play = func(context.Context, PlayRequest, PlayWriter) error {
			return fmt.Errorf("nothing here: %w", ErrStreamNotFound)
		}
	})
	rig := newPullRig(t, ts.url("live/src"), nil)
	rig.start()
	select {
	case r := <-rig.retries:
		if !strings.Contains(r.err.Error(), "NetStream.Play.StreamNotFound") {
			t.Errorf("error %q, want NetStream.Play.StreamNotFound", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no retry")
	}
}

func TestPullConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  PullConfig
		want string
	}{
		{PullConfig{Path: "a/b", URL: "rtmp://h/app/name"}, "no registry or path"},
		{PullConfig{Registry: media.NewRegistry(nil), URL: "rtmp://h/app/name"}, "no registry or path"},
		{PullConfig{Registry: media.NewRegistry(nil), Path: "a/b", URL: "srt://h:1/x"}, "is not an rtmp:// or rtmps:// URL"},
	} {
		p := NewPuller(tc.cfg)
		if p.err == nil || !strings.Contains(p.err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, p.err, tc.want)
		}
	}
	// Run logs the error and waits for its context.
	logs := &testkit.LogBuf{}
	p := NewPuller(PullConfig{Registry: media.NewRegistry(nil), Path: "a/b", URL: "rtmp://h/onlyapp?key=secret", Log: slog.New(slog.NewTextHandler(logs, nil))})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	p.Run(ctx)
	if !strings.Contains(logs.String(), "rtmp pull cannot start") || strings.Contains(logs.String(), "secret") {
		t.Errorf("log:\n%s", logs.String())
	}
}

// flvTags returns the first n tags of an FLV file, as they are laid out in
// the file and in an RTMP aggregate message (tag header, body, previous
// tag size).
func flvTags(t *testing.T, file string, n int) []byte {
	t.Helper()
	b, err := os.ReadFile(testkit.Fixture(file))
	if err != nil {
		t.Fatal(err)
	}
	off := int(binary.BigEndian.Uint32(b[5:9])) + 4
	start := off
	for i := 0; i < n; i++ {
		size := int(b[off+1])<<16 | int(b[off+2])<<8 | int(b[off+3])
		off += 11 + size + 4
	}
	return b[start:off]
}

// TestPullAggregate feeds the fixture's first tags as one aggregate
// message: they become units with the message's timestamp as origin.
func TestPullAggregate(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := NewPuller(PullConfig{Registry: media.NewRegistry(log), Path: "a/b", URL: "rtmp://h/live/x", Log: log})
	var r *media.Reader
	p.onPublish = func(st *media.Stream) {
		var err error
		if r, err = st.NewReader(media.ReaderOptions{Name: "test", QueueSize: 1024}); err != nil {
			t.Fatal(err)
		}
	}
	s := &pullSession{p: p, c: &rtmpwire.Client{}, a: &reconnect.Attempt{Log: log}}
	tags := flvTags(t, "h264-aac.flv", 60)
	if err := s.aggregate(rtmpwire.Message{TypeID: rtmpwire.TypeAggregate, TS: 5000, Payload: tags}); err != nil {
		t.Fatal(err)
	}
	if err := s.aggregate(rtmpwire.Message{TypeID: rtmpwire.TypeAggregate, TS: 6000, Payload: tags[:len(tags)-1]}); err == nil {
		t.Error("a truncated aggregate message was taken")
	}
	if r == nil {
		t.Fatal("nothing published")
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var m testkit.MediaCheck
	for m.Video+m.Audio < 40 {
		u, err := r.Read(ctx)
		if err != nil {
			t.Fatalf("after %d units: %v", m.Video+m.Audio, err)
		}
		if m.Video+m.Audio == 0 && (u.DTS < 5*time.Second || u.DTS > 5100*time.Millisecond) {
			t.Errorf("first unit at %v, want 5 s and a little", u.DTS)
		}
		m.Add(t, u)
	}
	testkit.CheckH264AAC(t, &m)
	s.end()
}

// TestStripSetDataFrame: a relayed "@setDataFrame" goes before the
// metadata is parsed. (The AMF0 half of the test this was,
// TestAMFCommandRoundTrip, is in internal/rtmpwire.)
func TestStripSetDataFrame(t *testing.T) {
	if got := stripSetDataFrame(append([]byte{amf0String, 0, 13}, "@setDataFrame\x02\x00\x0aonMetaData"...)); string(got) != "\x02\x00\x0aonMetaData" {
		t.Errorf("stripSetDataFrame: %q", got)
	}
}

// TestPullOwnServer pulls from this package's server (which admits the
// puller's key) through its play hook, which refuses three times, then
// plays the fixture's first tags for a while and stops: the puller's
// delays grow while it is refused, it publishes what was played, and after
// a play longer than backoffReset it
// retries after the shortest delay again.
func TestPullOwnServer(t *testing.T) {
	tags := flvTags(t, "h264-aac.flv", 120)
	var mu sync.Mutex
	plays := 0
	// The puller's key reaches the server's Authorize.
	keyed := testkit.Authorizer(func(r access.Request) error {
		if r.Action != access.Read || r.Path != "live/src" || r.Credential != "k" {
			return fmt.Errorf("%s of %q key %q: %w", r.Action, r.Path, r.Credential, access.BadKey(access.Read))
		}
		return nil
	})
	ts := startServer(t, keyed, func(s *Server) {
		s.play = func(ctx context.Context, req PlayRequest, w PlayWriter) error {
			mu.Lock()
			plays++
			n := plays
			mu.Unlock()
			if n <= 3 || n > 4 {
				return fmt.Errorf("not yet: %w", ErrStreamNotFound)
			}
			for b := tags; len(b) > 0; {
				size := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
				ts := uint32(b[7])<<24 | uint32(b[4])<<16 | uint32(b[5])<<8 | uint32(b[6])
				if err := w.WriteMessage(b[0], ts, b[11:11+size]); err != nil {
					return err
				}
				b = b[11+size+4:]
			}
			select {
			case <-ctx.Done():
			case <-time.After(400 * time.Millisecond):
			}
			return nil
		}
	})
	readers := make(chan *media.Reader, 4)
	rig := newPullRig(t, ts.url("live/src?key=k"), func(p *Puller) {
		p.minBackoff, p.maxBackoff, p.backoffReset = 20*time.Millisecond, 80*time.Millisecond, 300*time.Millisecond
		p.onPublish = func(st *media.Stream) {
			// Before the first unit: the tags come all at once.
			r, err := st.NewReader(media.ReaderOptions{Name: "test", QueueSize: 1024})
			if err != nil {
				t.Error(err)
				return
			}
			readers <- r
		}
	})
	rig.start()
	var r *media.Reader
	for i, want := range []struct {
		wait time.Duration
		err  string
	}{
		{20 * time.Millisecond, "NetStream.Play.StreamNotFound"},
		{40 * time.Millisecond, "NetStream.Play.StreamNotFound"},
		{80 * time.Millisecond, "NetStream.Play.StreamNotFound"},
		{20 * time.Millisecond, "the server stopped the stream: NetStream.Play.Stop"},
		{40 * time.Millisecond, "NetStream.Play.StreamNotFound"},
	} {
		if i == 3 {
			select {
			case r = <-readers:
				defer r.Close()
			case <-time.After(5 * time.Second):
				t.Fatal("nothing published")
			}
		}
		select {
		case got := <-rig.retries:
			if got.wait != want.wait || !strings.Contains(got.err.Error(), want.err) {
				t.Errorf("retry %d: wait %v after %q, want %v after %q", i, got.wait, got.err, want.wait, want.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("retry %d did not come", i)
		}
	}
	var m testkit.MediaCheck
	testkit.ReadUntil(t, r, &m, 2*time.Second, func() bool { return m.Keys >= 2 && m.Video >= 40 && m.Audio >= 60 })
	testkit.CheckH264AAC(t, &m)
	rig.logs.WaitLog(t, time.Second, "rtmp pull ended", "video_frames=", "reason=\"the server stopped the stream")
}
