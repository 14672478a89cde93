package transcode

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/media"
)

// lockedBuf is a log buffer safe for the view's goroutine and the test
// (testkit imports this package).
type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAACViewPanicEndsView: a panic while an AAC view converts (here a
// converter broken by the test, as a decoder bug on publisher input would)
// ends that view alone: its readers see the end, the panic is logged and
// counted, the source stream and its readers go on, and the next Acquire
// starts a new view that works.
func TestAACViewPanicEndsView(t *testing.T) {
	needAV(t)
	var logs lockedBuf
	log := slog.New(slog.NewTextHandler(&logs, nil))
	reg := media.NewRegistry(slog.New(slog.DiscardHandler))
	views := NewAACViews(log)
	video := &media.Track{Codec: media.H264{SPS: fakeIDR()[0], PPS: fakeIDR()[1]}}
	opus := &media.Track{Codec: media.Opus{Channels: 2}}
	pub, err := reg.Publish("live/boom", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.SetTracks(video, opus); err != nil {
		t.Fatal(err)
	}
	audio := opusUnits(t, opus, 0, 2)
	srcReader, err := pub.NewReader(media.ReaderOptions{Name: "source reader"})
	if err != nil {
		t.Fatal(err)
	}
	defer srcReader.Close()

	view, release, err := views.Acquire(pub.Stream, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	viewReader, err := view.NewReader(media.ReaderOptions{Name: "view reader"})
	if err != nil {
		t.Fatal(err)
	}
	defer viewReader.Close()

	// Break the running view's converter: its decoder is gone, so the next
	// Opus unit panics in Transcode. The unit written below orders this
	// write before the view's goroutine reads it.
	views.mu.Lock()
	v := views.views[viewKey{pub.Stream, DefaultAACBitrate}]
	views.mu.Unlock()
	real := v.conv[opus.ID]
	defer real.Close()
	v.conv[opus.ID] = &OpusToAAC{src: opus, enc: real.enc}

	before := panics.CountOf("aac view")
	pub.Write(audio[0])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		_, err := viewReader.Read(ctx)
		if errors.Is(err, media.ErrStreamEnded) {
			break
		}
		if err != nil {
			t.Fatalf("the view's reader: %v, want media.ErrStreamEnded", err)
		}
	}
	if n := panics.CountOf("aac view") - before; n != 1 {
		t.Errorf("%d panics counted under \"aac view\", want 1", n)
	}
	// Recover logs before it ends the view.
	if l := logs.String(); !strings.Contains(l, "panic recovered") || !strings.Contains(l, `component="aac view"`) ||
		!strings.Contains(l, "stack=") {
		t.Errorf("no ERROR line with the component and the stack; log:\n%s", l)
	}

	// The source goes on: its reader gets the unit and the ones after.
	pub.Write(audio[1])
	for _, want := range audio[:2] {
		u, err := srcReader.Read(ctx)
		if err != nil || u.PTS != want.PTS {
			t.Fatalf("the source's reader: %v, %v; want the unit at %v", u, err, want.PTS)
		}
	}

	// A new Acquire makes a new view, which converts.
	view2, release2, err := views.Acquire(pub.Stream, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer release2()
	if view2 == view {
		t.Fatal("Acquire after the panic returned the ended view")
	}
	r2, err := view2.NewReader(media.ReaderOptions{Name: "view reader 2"})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	for _, u := range audio[2:] {
		pub.Write(u)
	}
	u, err := r2.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := u.Track.Codec.(media.AAC); !ok {
		t.Errorf("the new view's first unit is %s, want AAC", u.Track.Codec.Name())
	}
}
