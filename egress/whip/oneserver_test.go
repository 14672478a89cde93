package whip

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4/pkg/media/oggwriter"

	egresswhep "github.com/wishbridge/bridge/egress/whep"
	ingestwhep "github.com/wishbridge/bridge/ingest/whep"
	ingestwhip "github.com/wishbridge/bridge/ingest/whip"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/internal/testkit/rtcserver"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// TestOutboundSessionsToOneServer: two forwards (to two remote paths) and
// a WHEP pull run at once against one remote server whose WHIP and WHEP
// endpoints share one media port, as most WHIP/WHEP services do. Each
// session carries H.264 640x360 at 30 fps and Opus with the fixture's
// tones (440 Hz left, 660 Hz right) end to end. When the
// bridge's outbound sessions shared its server ICE socket, the three had
// the same remote address there and could not be told apart: only the
// first completed ICE.
func TestOutboundSessionsToOneServer(t *testing.T) {
	src := startSource(t, "h264-aac.flv")
	rem := startOnePortServer(t)

	for _, path := range []string{"live/dst1", "live/dst2"} {
		run(t, newTestForwarder(src, rem.url+"/whip/"+path, ""))
	}
	const pulled = "live/pulled"
	pull := ingestwhep.NewPuller(ingestwhep.Config{Registry: src.reg, Engine: src.engine, Path: pulled,
		URL: "whep+" + rem.url + "/whep/" + srcPath, Log: src.log})
	ctx, cancel := context.WithCancel(context.Background())
	pulling := make(chan struct{})
	go func() {
		defer close(pulling)
		pull.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-pulling
	})

	const d = 3 * time.Second
	for _, dst := range []struct {
		name string
		reg  *media.Registry
		path string
	}{
		{"forward to live/dst1", rem.src.Registry, "live/dst1"},
		{"forward to live/dst2", rem.src.Registry, "live/dst2"},
		{"pull of " + srcPath, src.reg, pulled},
	} {
		t.Run(dst.name, func(t *testing.T) {
			checkMedia(t, receive(t, dst.reg, dst.path, d), d)
			left, right := testkit.DecodeAudio(t, recordOpus(t, dst.reg, dst.path, 2*time.Second))
			testkit.CheckTones(t, left, right, 48000/2, 48000)
		})
	}
}

// recordOpus writes the Opus packets of the stream at path on reg for d
// into an Ogg file and returns its name.
func recordOpus(t *testing.T, reg *media.Registry, path string, d time.Duration) string {
	t.Helper()
	_, r := newReader(t, reg, path)
	defer r.Close()
	file := filepath.Join(t.TempDir(), "audio.ogg")
	w, err := oggwriter.New(file, 48000, 2)
	if err != nil {
		t.Fatal(err)
	}
	readFor(t, r, path, d, func(u *media.Unit) {
		if _, ok := u.Track.Codec.(media.Opus); !ok || len(u.Data) == 0 {
			return
		}
		pkt := &rtp.Packet{Header: rtp.Header{Timestamp: uint32(u.PTS * 48000 / time.Second)}, Payload: u.Data}
		if err := w.WriteRTP(pkt); err != nil {
			t.Fatalf("write %s: %v", file, err)
		}
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return file
}

// onePortServer is a remote WHIP and WHEP server on one ICE UDP socket
// (an engine of its own): WHIP publishes into its source's registry, WHEP
// plays the source's stream at srcPath.
type onePortServer struct {
	url string
	src *rtcserver.Source
}

func startOnePortServer(t *testing.T) *onePortServer {
	t.Helper()
	src := rtcserver.StartSource(t, "remote", "h264-aac.flv")
	engine := rtcserver.NewEngine(t, src.Log)
	sessions := rtc.NewSessions(rtc.Limits{}, src.Log)
	allow := testkit.AllowAll
	mux := http.NewServeMux()
	sessions.Register(mux)
	ingestwhip.NewHandler(ingestwhip.Config{Registry: src.Registry, Engine: engine, Sessions: sessions, Log: src.Log, Authorize: allow}).Register(mux)
	egresswhep.NewHandler(egresswhep.Config{Registry: src.Registry, Engine: engine, Sessions: sessions, Log: src.Log, Authorize: allow}).Register(mux)
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		hs.Close()
		sessions.CloseAll("test over")
		_ = engine.Close()
	})
	return &onePortServer{url: hs.URL, src: src}
}
