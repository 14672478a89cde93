package node

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/ingest/rtmp"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

// start runs a node over a registry of its own with routes as its whole
// config, and an RTMP server (publish and play) admitting through it.
func start(t *testing.T, opts Options, routes ...config.Route) (*Node, *media.Registry, string) {
	t.Helper()
	log, _ := testkit.TestLog(t, "NODE_LOG")
	cfg := config.Default()
	cfg.Routes = routes
	reg := media.NewRegistry(log)
	opts.Registry, opts.Log = reg, log
	n := New(cfg, opts)
	n.Start()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := rtmp.NewServer(rtmp.Config{Registry: reg, Authorize: n.Authorize, Play: n.PlayRTMP, MaxReaders: n.MaxReaders, Log: log})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		n.Drain()
		_ = srv.Close()
		n.Stop()
		reg.EndWaiting()
	})
	return n, reg, ln.Addr().String()
}

// feed publishes the RTMP fixture at path in reg, in real time and in a
// loop, until the test ends.
func feed(t *testing.T, reg *media.Registry, path string) {
	t.Helper()
	m := testkit.ReadFLV(t, "h264-aac.flv")
	pub := testkit.Publish(t, reg, path, m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		var off time.Duration
		for ctx.Err() == nil {
			testkit.Feed(ctx, pub, m.Units, 1, off)
			off += m.Units[len(m.Units)-1].DTS + 40*time.Millisecond
		}
	}()
	t.Cleanup(func() { cancel(); <-done; pub.Close() })
}

func TestAuthorize(t *testing.T) {
	n, _, _ := start(t, Options{},
		config.Route{Path: "keyed/{name}", PublishKey: "pk", ReadKey: "rk"},
		config.Route{Path: "webonly/cam", Ingest: []string{config.IngestWHIP}, Read: []string{config.ReadWHEP}},
		config.Route{Path: "pulled/cam", Pull: "rtmp://127.0.0.1:1/src/cam", OnDemand: true},
	)
	for _, tc := range []struct {
		req  access.Request
		want error
	}{
		{access.Request{Action: access.Publish, Protocol: access.RTMP, Path: "keyed/a", Credential: "pk"}, nil},
		{access.Request{Action: access.Publish, Protocol: access.SRT, Path: "keyed/a", Credential: "rk"}, access.ErrBadKey},
		{access.Request{Action: access.Read, Protocol: access.WHEP, Path: "keyed/a", Credential: "rk"}, nil},
		{access.Request{Action: access.Read, Protocol: access.SRT, Path: "keyed/a"}, access.ErrBadKey},
		{access.Request{Action: access.Publish, Protocol: access.WHIP, Path: "webonly/cam"}, nil},
		{access.Request{Action: access.Publish, Protocol: access.RTMP, Path: "webonly/cam"}, access.ErrProtocolNotAllowed},
		{access.Request{Action: access.Read, Protocol: access.RTMP, Path: "webonly/cam"}, access.ErrProtocolNotAllowed},
		{access.Request{Action: access.Publish, Protocol: access.RTMP, Path: "pulled/cam"}, access.ErrProtocolNotAllowed},
		{access.Request{Action: access.Read, Protocol: access.RTMP, Path: "pulled/cam"}, nil},
		{access.Request{Action: access.Publish, Protocol: access.RTMP, Path: "other/cam"}, access.ErrNoRoute},
	} {
		g, err := n.Authorize(tc.req)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%v with key %q: %v, want %v", tc.req, tc.req.Credential, err, tc.want)
		}
		// An admitted request's grant names its route, as configured
		// (the pattern), for the session's log lines.
		if want := map[string]string{"keyed/a": "keyed/{name}", "webonly/cam": "webonly/cam", "pulled/cam": "pulled/cam"}[tc.req.Path]; err == nil && g.Route != want {
			t.Errorf("%v admitted with route %q, want %q", tc.req, g.Route, want)
		}
	}
	if p := n.Policy("keyed/a"); !p.Private || p.Route == nil || p.MaxReaders <= 0 {
		t.Errorf("policy of a keyed route: %+v", p)
	}
}

// TestLocate: a reader's stream is found at once when it is live, waited
// for while its publisher negotiates (up to the deadline), and refused at
// once when nothing is published and nothing pulls on demand.
func TestLocate(t *testing.T) {
	n, reg, _ := start(t, Options{StreamWait: 300 * time.Millisecond}, config.Route{Path: "{path...}"})
	ctx := context.Background()

	if _, err := n.Locate(ctx, "live/none"); !errors.Is(err, access.ErrNoStream) {
		t.Errorf("no stream: %v, want ErrNoStream", err)
	}

	// A publisher that never declares tracks: the deadline refuses.
	silent, err := reg.Publish("live/silent", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if _, err := n.Locate(ctx, "live/silent"); !errors.Is(err, access.ErrNoStream) {
		t.Errorf("publisher without tracks: %v, want ErrNoStream after the deadline", err)
	}

	// One that declares them while the reader waits: found.
	pub, err := reg.Publish("live/late", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	found := make(chan error, 1)
	go func() {
		st, err := n.Locate(ctx, "live/late")
		if err == nil && st.Tracks() == nil {
			err = errors.New("stream without tracks")
		}
		found <- err
	}()
	if err := pub.SetTracks(&media.Track{Codec: media.Opus{Channels: 2}}); err != nil {
		t.Fatal(err)
	}
	if err := <-found; err != nil {
		t.Errorf("stream ready during the wait: %v", err)
	}
}

// TestOnDemandPull: a reader of an on-demand route starts its RTMP pull
// from another node (its RTMP server serving play from its registry) and
// gets the stream, published as an rtmp pull.
func TestOnDemandPull(t *testing.T) {
	_, srcReg, srcAddr := start(t, Options{}, config.Route{Path: "src/cam"})
	feed(t, srcReg, "src/cam")

	n, _, _ := start(t, Options{}, config.Route{Path: "pulled/cam", Pull: "rtmp://" + srcAddr + "/src/cam", OnDemand: true})
	if len(n.Pulls()) != 0 {
		t.Fatalf("on-demand pull running before a reader: %v", n.Pulls())
	}
	st, err := n.Locate(context.Background(), "pulled/cam")
	if err != nil {
		t.Fatal(err)
	}
	if k := st.PublisherKind(); k != access.KindRTMPPull {
		t.Errorf("publisher kind %q, want %q", k, access.KindRTMPPull)
	}
	if p := n.Pulls(); len(p) != 1 || p[0].Kind != config.PullRTMP {
		t.Errorf("pulls %v, want the rtmp one", p)
	}
	r, err := st.NewReader(media.ReaderOptions{Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if u := testkit.ReadFor(t, r, time.Second); len(u) == 0 {
		t.Error("no units through the pull")
	}
}

// TestForward: a pattern route forwards each path published on it, as the
// hub reports the publish (no scan), to another node's RTMP server, where
// it arrives as an RTMP publish.
func TestForward(t *testing.T) {
	_, dstReg, dstAddr := start(t, Options{}, config.Route{Path: "from/{name}"})
	n, reg, _ := start(t, Options{}, config.Route{Path: "fwd/{name}",
		Forward: []config.Forward{{RTMP: "rtmp://" + dstAddr + "/from/cam"}}})
	if len(n.Forwards()) != 0 {
		t.Fatalf("forward running before its path is published: %v", n.Forwards())
	}
	feed(t, reg, "fwd/cam")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := dstReg.WaitReady(ctx, "from/cam", 20*time.Millisecond, nil)
	if err != nil {
		t.Fatalf("forwarded stream: %v", err)
	}
	if k := st.PublisherKind(); k != access.KindRTMP {
		t.Errorf("publisher kind at the target %q, want %q", k, access.KindRTMP)
	}
	if f := n.Forwards(); len(f) != 1 || f[0].Path != "fwd/cam" || f[0].Kind != config.ForwardRTMP {
		t.Errorf("forwards %v, want one rtmp forward of fwd/cam", f)
	}
}
