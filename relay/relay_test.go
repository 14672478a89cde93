package relay

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/media"
)

const testToken = "relay-package-test-token"

// origin serves reg's streams over a real HTTP server.
func origin(t *testing.T, reg *media.Registry, c *Counters) *httptest.Server {
	t.Helper()
	o := NewOrigin(OriginConfig{Registry: reg, Token: func() string { return testToken }, Counters: c})
	mux := http.NewServeMux()
	o.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { o.Close(); srv.Close() })
	return srv
}

// source publishes an H.264 + AAC stream at path in reg.
func source(t *testing.T, reg *media.Registry, path string) (*media.Publication, []*media.Track) {
	t.Helper()
	pub, err := reg.Publish(path, "test")
	if err != nil {
		t.Fatal(err)
	}
	pub.SetKind(access.KindRTMP)
	tracks := sampleTracks()[:2]
	if err := pub.SetTracks(tracks...); err != nil {
		t.Fatal(err)
	}
	return pub, tracks
}

// frame is video frame i: a keyframe every 30, its PTS i/30 s.
func frame(track *media.Track, i int, payload []byte) *media.Unit {
	pts := time.Duration(i) * time.Second / 30
	u := &media.Unit{Track: track, PTS: pts, DTS: pts, Key: i%30 == 0, NALUs: [][]byte{append([]byte{0x41}, payload...)}}
	if u.Key {
		u.NALUs = [][]byte{{0x67, 0x42}, {0x68, 0xce}, append([]byte{0x65}, payload...)}
	}
	return u
}

// frameIndex is the index of the frame at pts (see frame).
func frameIndex(pts time.Duration) int { return int((pts*30 + time.Second/2) / time.Second) }

// TestOriginToEdge: a Puller publishes the origin's stream in another
// registry as a relay publisher: its tracks with their parameters, the
// origin's cached GOP first (so a local reader starts at its keyframe at
// once), then the live units with their timestamps and payloads; when the
// origin's stream ends, the edge's does too. Both sides count the relay.
func TestOriginToEdge(t *testing.T) {
	regA, regB := media.NewRegistry(nil), media.NewRegistry(nil)
	var ca, cb Counters
	srv := origin(t, regA, &ca)
	pub, tracks := source(t, regA, "live/a")
	for i := range 10 { // a GOP in the origin's cache
		pub.Write(frame(tracks[0], i, []byte{byte(i)}))
		pub.Write(&media.Unit{Track: tracks[1], PTS: time.Duration(i) * 21 * time.Millisecond, Key: true, Data: []byte{0x21, byte(i)}})
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := NewPuller(PullConfig{Registry: regB, Path: "live/a", Base: srv.URL, Token: testToken, Counters: &cb})
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()

	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	st, err := regB.WaitReady(wctx, "live/a", 10*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if k := st.PublisherKind(); k != access.KindRelay {
		t.Errorf("edge stream kind %q, want %q", k, access.KindRelay)
	}
	for i, tr := range st.Tracks() {
		if tr.Codec.Name() != tracks[i].Codec.Name() {
			t.Errorf("edge track %d is %s, want %s", i, tr.Codec.Name(), tracks[i].Codec.Name())
		}
	}
	if got := st.Tracks()[1].Codec.(media.AAC); string(got.Config) != string(tracks[1].Codec.(media.AAC).Config) || got.SampleRate != 48000 {
		t.Errorf("edge AAC track %+v, want the origin's AudioSpecificConfig and rate", got)
	}
	rd, err := st.NewReader(media.ReaderOptions{Name: "edge reader", StartAtKeyframe: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	u, err := rd.Read(wctx)
	if err != nil {
		t.Fatal(err)
	}
	if !u.Key || !u.Track.IsVideo() || u.PTS != 0 || !rd.Cached() {
		t.Fatalf("first unit at the edge: key %v video %v pts %v cached %v, want the origin's cached keyframe at 0", u.Key, u.Track.IsVideo(), u.PTS, rd.Cached())
	}
	for i := 10; i < 40; i++ {
		pub.Write(frame(tracks[0], i, []byte{byte(i)}))
	}
	last := time.Duration(0)
	for last != 39*time.Second/30 {
		u, err := rd.Read(wctx)
		if err != nil {
			t.Fatalf("reading the edge after %v: %v", last, err)
		}
		if !u.Track.IsVideo() {
			continue
		}
		i := frameIndex(u.PTS)
		if want := frame(tracks[0], i, []byte{byte(i)}); u.Key != want.Key || string(u.NALUs[len(u.NALUs)-1]) != string(want.NALUs[len(want.NALUs)-1]) {
			t.Fatalf("edge frame at %v differs from the origin's", u.PTS)
		}
		last = u.PTS
	}
	if a, b := ca.Stats(), cb.Stats(); a.Out != 1 || b.In != 1 || a.BytesOut == 0 || b.BytesIn == 0 {
		t.Errorf("counters: origin %+v, edge %+v; want one relay each way, with its bytes", a, b)
	}

	pub.Close() // no grace: the stream ends at the origin
	for {
		if _, err := rd.Read(wctx); err != nil {
			if !errors.Is(err, media.ErrStreamEnded) {
				t.Fatalf("edge reader: %v, want the stream's end", err)
			}
			break
		}
	}
	cancel()
	<-done
}

// TestSlowEdge: an edge that stops reading does not hold up the origin's
// publisher (its writes all return while the edge reads nothing), and when
// it reads again it gets a stream a decoder can follow: the units the
// relay's reader dropped leave a gap, and video starts again after it at a
// keyframe.
func TestSlowEdge(t *testing.T) {
	reg := media.NewRegistry(nil)
	srv := origin(t, reg, nil)
	pub, tracks := source(t, reg, "live/slow")
	req, _ := http.NewRequest(http.MethodGet, srv.URL+PathPrefix+"live/slow", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The edge reads nothing while far more than the socket buffers and
	// the reader's queue hold is written.
	big := make([]byte, 32<<10)
	const stalled = 1500
	for i := range stalled {
		pub.Write(frame(tracks[0], i, big))
	}

	// Then it reads, and the publisher goes on, a GOP at a time, until
	// the edge gets a frame written after the stall.
	type result struct {
		frames []*media.Unit
		err    error
	}
	caught, out := make(chan struct{}), make(chan result, 1)
	go func(caught chan struct{}) {
		var r result
		d := NewDecoder(resp.Body)
		for {
			f, err := d.Next()
			if err != nil || f.Kind == FrameEnd {
				r.err = err
				out <- r
				return
			}
			if f.Kind == FrameUnit {
				r.frames = append(r.frames, f.Unit)
				if frameIndex(f.Unit.PTS) >= stalled && caught != nil {
					close(caught)
					caught = nil
				}
			}
		}
	}(caught)
	deadline := time.After(20 * time.Second)
writing:
	for i := stalled; ; i++ {
		pub.Write(frame(tracks[0], i, big[:100]))
		if i%30 != 29 {
			continue
		}
		select {
		case <-caught:
			break writing
		case <-deadline:
			t.Fatal("the edge never got the frames written after it read again")
		case <-time.After(30 * time.Millisecond): // the next GOP
		}
	}
	pub.Close()
	r := <-out
	if r.err != nil {
		t.Fatalf("after %d units: %v", len(r.frames), r.err)
	}
	gaps, next := 0, -1
	for _, u := range r.frames {
		i := frameIndex(u.PTS)
		if next >= 0 && i != next {
			gaps++
			if !u.Key {
				t.Fatalf("frame %d follows a gap after frame %d and is not a keyframe", i, next-1)
			}
		}
		next = i + 1
	}
	if gaps == 0 || !r.frames[0].Key {
		t.Fatalf("the slow edge got %d frames with %d gaps, the first a keyframe: %v; want the stall's units dropped", len(r.frames), gaps, r.frames[0].Key)
	}
	t.Logf("slow edge: %d frames, %d gaps, each ended by a keyframe", len(r.frames), gaps)
}

// TestEdgeRefused: a Puller whose token the origin refuses, or asking for
// a path with no stream, publishes nothing and says why.
func TestEdgeRefused(t *testing.T) {
	reg := media.NewRegistry(nil)
	srv := origin(t, reg, nil)
	source(t, reg, "live/r")
	for _, c := range []struct {
		name, path, token, want string
	}{
		{"wrong token", "live/r", "wrong-token-0123456789", "401"},
		{"no stream", "live/none", testToken, "404"},
	} {
		t.Run(c.name, func(t *testing.T) {
			edge := media.NewRegistry(nil)
			p := NewPuller(PullConfig{Registry: edge, Path: c.path, Base: srv.URL, Token: c.token})
			err := p.attempt(context.Background(), nil, nil)
			var r *errRefused
			if !errors.As(err, &r) || r.status == 0 || !containsStatus(err.Error(), c.want) {
				t.Fatalf("got %v, want the origin's %s", err, c.want)
			}
			if _, ok := edge.Get(c.path); ok {
				t.Error("a refused relay published the path")
			}
		})
	}
}

func containsStatus(s, status string) bool {
	return len(s) >= len("the origin answered ")+3 && s[len("the origin answered "):][:3] == status
}

// TestOutlivesServerTimeouts: a relay lasts as long as its stream, past
// the HTTP server's ReadTimeout and WriteTimeout (which bound ordinary
// requests; the bridge's are 30 s).
func TestOutlivesServerTimeouts(t *testing.T) {
	reg := media.NewRegistry(nil)
	o := NewOrigin(OriginConfig{Registry: reg, Token: func() string { return testToken }})
	mux := http.NewServeMux()
	o.Register(mux)
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond
	srv.Start()
	t.Cleanup(func() { o.Close(); srv.Close() })
	pub, tracks := source(t, reg, "live/long")

	req, _ := http.NewRequest(http.MethodGet, srv.URL+PathPrefix+"live/long", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	d := NewDecoder(resp.Body)
	// Ten times the timeouts, a frame every 20 ms.
	for i := range 100 {
		pub.Write(frame(tracks[0], i, nil))
		for {
			f, err := d.Next()
			if err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
			if f.Kind == FrameEnd {
				t.Fatalf("frame %d: the origin ended the relay: %s", i, f.Reason)
			}
			if f.Kind == FrameUnit {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}
