package whip

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/internal/testkit/rtcserver"
	"github.com/wishbridge/bridge/media"
)

// dropLocation is a ResponseWriter that sends no Location header: a WHIP
// endpoint whose sessions cannot be DELETEd.
type dropLocation struct{ http.ResponseWriter }

func (d dropLocation) WriteHeader(code int) {
	d.Header().Del("Location")
	d.ResponseWriter.WriteHeader(code)
}

// TestForwardNotesOnce: a forward whose stream has a track WHIP cannot
// send (a second video track) to an endpoint that answers without a
// Location says each once at INFO or WARN, not on every reconnect: the
// endpoint ends the forward's session three times, and the operator's log
// has one "track not forwarded" line and one "without a Location" line
// (the later ones at DEBUG). The forward streams each time.
func TestForwardNotesOnce(t *testing.T) {
	log, logs := testkit.NamedLog(t, "local")
	reg := media.NewRegistry(log)
	engine := rtcserver.NewEngine(t, log)
	t.Cleanup(func() { _ = engine.Close() })
	m := testkit.ReadFLV(t, "h264-aac.flv")
	pub, err := reg.Publish(srcPath, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	if err := pub.SetTracks(m.Video, m.Audio, &media.Track{Codec: m.Video.Codec}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for off := time.Duration(0); ctx.Err() == nil; off += m.Units[len(m.Units)-1].DTS + 40*time.Millisecond {
			testkit.Feed(ctx, pub, m.Units, 1, off)
		}
	}()
	t.Cleanup(func() { cancel(); <-fed })

	rem := rtcserver.StartWHIP(t, "", func(mux *http.ServeMux) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { mux.ServeHTTP(dropLocation{w}, r) })
	})
	f := NewForwarder(Config{Registry: reg, Engine: engine, Path: srcPath, URL: rem.URL + "/whip/" + dstPath, Log: log})
	f.minBackoff, f.maxBackoff = 100*time.Millisecond, 200*time.Millisecond
	streaming := make(chan struct{}, 8)
	f.onStreaming = func() { streaming <- struct{}{} }
	stop := run(t, f)
	for i := range 3 {
		select {
		case <-streaming:
		case <-time.After(20 * time.Second):
			t.Fatalf("session %d: the forward did not stream within 20 s", i+1)
		}
		rem.Sessions.CloseAll("the endpoint ends the session")
	}
	select {
	case <-streaming:
	case <-time.After(20 * time.Second):
		t.Fatal("session 4: the forward did not stream within 20 s")
	}
	stop()

	count := func(level, msg string) int {
		return strings.Count(logs.String(), "level="+level+` msg="`+msg)
	}
	for _, note := range []struct{ level, msg string }{
		{"INFO", "track not forwarded: one video track is sent"},
		{"WARN", "the endpoint answered without a Location"},
	} {
		if n, later := count(note.level, note.msg), count("DEBUG", note.msg); n != 1 || later < 3 {
			t.Errorf("%q: %d lines at %s and %d at DEBUG over 4 sessions, want 1 and then 3 or more", note.msg, n, note.level, later)
		}
	}
	if n := count("INFO", "whip forward started"); n != 4 {
		t.Errorf("%d sessions started, want 4", n)
	}
}
