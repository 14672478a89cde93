package whip

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/internal/testkit/rtcserver"
	"github.com/wishbridge/bridge/media"
)

// TestForwardICEAfterRepublishWithFewerTracks (issue 12, defect 1): the
// forwarder offers H.264 and Opus; while its POST waits for the answer
// (and so its ICE and DTLS), the stream is republished within its grace
// period with video only. When the connection completes, that session
// fails saying why (its audio track is gone) and the next one forwards
// the video. (The session used to make the hub processor of the audio
// track that was gone: an index out of range on the forwarder's
// goroutine, which took the whole bridge down.)
func TestForwardICEAfterRepublishWithFewerTracks(t *testing.T) {
	log, logs := testkit.NamedLog(t, "local")
	src := &source{reg: media.NewRegistry(log), log: log, logs: logs, engine: rtcserver.NewEngine(t, log)}
	t.Cleanup(func() { _ = src.engine.Close() })
	src.reg.SetGrace(func(string) time.Duration { return time.Minute })
	fixture := testkit.ReadFLV(t, "h264-aac.flv")

	// The first POST is held until the stream has been republished.
	posted, answer := make(chan struct{}), make(chan struct{})
	var hold sync.Once
	rem := rtcserver.StartWHIP(t, "", func(mux *http.ServeMux) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				hold.Do(func() {
					close(posted)
					<-answer
				})
			}
			mux.ServeHTTP(w, r)
		})
	})

	ctx, cancel := context.WithCancel(context.Background())
	var feeders sync.WaitGroup
	t.Cleanup(func() { cancel(); feeders.Wait() })

	// Encoder 1: H.264 and Opus (the fixture's AAC frames stand in as
	// silent Opus packets: the forwarder passes Opus through as it is).
	pub, err := src.reg.Publish(srcPath, "encoder 1")
	if err != nil {
		t.Fatal(err)
	}
	opus := &media.Track{Codec: media.Opus{Channels: 2}}
	if err := pub.SetTracks(fixture.Video, opus); err != nil {
		t.Fatal(err)
	}
	var units []*media.Unit
	for _, u := range fixture.Units {
		if u.Track == fixture.Audio {
			u = &media.Unit{Track: opus, PTS: u.PTS, DTS: u.DTS, Key: true, Data: []byte{0xf8, 0xff, 0xfe}}
		}
		units = append(units, u)
	}
	feed1, stop1 := context.WithCancel(ctx)
	feeders.Go(func() { testkit.Feed(feed1, pub, units, 1, 0) })

	f := newTestForwarder(src, rem.URL+"/whip/"+dstPath, "")
	run(t, f)
	select {
	case <-posted:
	case <-time.After(15 * time.Second):
		t.Fatal("no POST")
	}

	// Encoder 2 takes over without audio.
	stop1()
	pub.Close()
	pub2, err := src.reg.Publish(srcPath, "encoder 2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub2.Close)
	video2 := &media.Track{Codec: fixture.Video.Codec}
	if err := pub2.SetTracks(video2); err != nil {
		t.Fatal(err)
	}
	var videoOnly []*media.Unit
	for _, u := range fixture.Units {
		if u.Track == fixture.Video {
			c := *u
			c.Track = video2
			videoOnly = append(videoOnly, &c)
		}
	}
	feeders.Go(func() { testkit.Feed(ctx, pub2, videoOnly, 1, 0) })

	close(answer) // the held session's ICE and DTLS now complete
	logs.WaitLog(t, 15*time.Second, "whip forward paused", "republished with other tracks ([H264])")
	logs.WaitLog(t, 15*time.Second, "whip forward started", "tracks=1")
	got := receive(t, rem.Registry, dstPath, 2*time.Second)
	if got.codecs != "H264" || got.videoUnits == 0 || got.width != 640 {
		t.Errorf("the remote got %+v, expected the H.264 640x360 video only", got)
	}
}

// TestForwardPanicEndsSession (issue 12, panic boundary): a panic on the
// forward's goroutine while it streams ends that session like a failure:
// its remote session is DELETEd, the panic is counted under "whip
// forward", and the next session forwards the stream. (It used to end the
// whole bridge.)
func TestForwardPanicEndsSession(t *testing.T) {
	src := startSource(t, "h264-aac.flv")
	rem := rtcserver.StartWHIP(t, "", nil)
	f := newTestForwarder(src, rem.URL+"/whip/"+dstPath, "")
	before := forwardPanics()
	streaming := make(chan struct{}, 8)
	var first sync.Once
	f.onStreaming = func() {
		first.Do(func() { panic("a bug in the forward") })
		streaming <- struct{}{}
	}
	run(t, f)
	testkit.WaitStreaming(t, streaming, 30*time.Second)
	if got := forwardPanics() - before; got != 1 {
		t.Errorf("%d panics counted under whip forward, expected 1", got)
	}
	if n := rem.Count("DELETE /sessions/", ""); n != 1 {
		t.Errorf("%d DELETEs, expected the panicked session's:\n%s", n, rem.RequestLog())
	}
	src.logs.WaitLog(t, time.Second, "whip forward ended", "a panic ended the session")
	if got := receive(t, rem.Registry, dstPath, time.Second); got.videoUnits == 0 {
		t.Errorf("the next session forwarded nothing: %+v", got)
	}
}

func forwardPanics() uint64 {
	for _, c := range panics.Counts() {
		if c.Component == "whip forward" {
			return c.N
		}
	}
	return 0
}
