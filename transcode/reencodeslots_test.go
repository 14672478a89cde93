package transcode

import (
	"errors"
	"testing"
	"time"

	"github.com/wishbridge/bridge/media"
)

// publishFixture publishes the video of the FLV file fixture at path on reg
// and writes its first n units.
func publishFixture(tb testing.TB, reg *media.Registry, path, fixture string, n int) (*media.Stream, *media.Track) {
	tb.Helper()
	pub, err := reg.Publish(path, "test")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pub.Close)
	video, units := readFLVVideo(tb, fixture).track()
	if err := pub.SetTracks(video); err != nil {
		tb.Fatal(err)
	}
	for _, u := range units[:n] {
		pub.Write(u)
	}
	return pub.Stream, video
}

// TestReencodeSlots: with two slots, re-encoders for two streams' video
// may run; a third stream is refused while they hold them (its viewers get
// what "bframes: reject" gives). Viewers of a track that has a slot share
// it. A reservation whose viewer never connected lapses after the lease; a
// running re-encoder keeps its slot past it, and gives it back a lease
// after it closed.
func TestReencodeSlots(t *testing.T) {
	needReencode(t)
	now := time.Unix(1000, 0)
	slots := &ReencodeSlots{now: func() time.Time { return now }}
	reg := media.NewRegistry(nil)
	var streams [3]*media.Stream
	var tracks [3]*media.Track
	for i, path := range []string{"live/a", "live/b", "live/c"} {
		streams[i], tracks[i] = publishFixture(t, reg, path, bframesFLV, 10)
	}
	reserve := func(i int) (func(*media.Track) media.Processor, error) {
		return slots.Reserve(streams[i], tracks[i].ID, testMTU)
	}
	newA, err := reserve(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reserve(1); err != nil {
		t.Fatal(err)
	}
	if _, err := reserve(0); err != nil {
		t.Fatalf("a second viewer of a track with a slot: %v", err)
	}
	if _, err := reserve(2); !errors.Is(err, ErrReencodersBusy) {
		t.Fatalf("third stream with %d slots: %v, want ErrReencodersBusy", DefaultReencoders, err)
	}

	// a's viewer connects: its re-encoder runs (over the cached units too).
	release, err := releaseOf(streams[0].AddProcessor(tracks[0], "rtp-reencode", newA))
	if err != nil {
		t.Fatal(err)
	}
	if n := streams[0].ProcessorErrors(tracks[0].ID, "rtp-reencode"); n != 0 {
		t.Fatalf("re-encoder on a reserved slot failed %d units", n)
	}
	// b's viewer never connected: after the lease, c gets b's slot.
	now = now.Add(reserveLease + time.Second)
	if _, err := reserve(2); err != nil {
		t.Fatalf("after b's reservation lapsed: %v", err)
	}
	if _, err := reserve(1); !errors.Is(err, ErrReencodersBusy) {
		t.Fatalf("b while a runs and c holds a reservation: %v, want ErrReencodersBusy", err)
	}
	// a's last viewer leaves: its slot stays a lease, then goes.
	release()
	now = now.Add(reserveLease / 2)
	if _, err := reserve(1); !errors.Is(err, ErrReencodersBusy) {
		t.Fatalf("b within a's lease after its re-encoder closed: %v, want ErrReencodersBusy", err)
	}
	now = now.Add(reserveLease)
	if _, err := reserve(1); err != nil {
		t.Fatalf("b after a's lease ran out: %v", err)
	}
}

// BenchmarkReencoderBackfill measures how long making a re-encoder holds
// a stream's write lock: Stream.AddProcessor runs it over the cached GOP
// (here a whole 4 s GOP, 120 units of 640x360 High) before it returns, and
// the publisher's Write waits meanwhile.
func BenchmarkReencoderBackfill(b *testing.B) {
	needReencode(b)
	st, video := publishFixture(b, media.NewRegistry(nil), "live/bench", "../../shared/media/long-gop.flv", 120)
	for b.Loop() {
		release, err := releaseOf(st.AddProcessor(video, "rtp-reencode", func(t *media.Track) media.Processor { return NewH264Reencoder(t, testMTU) }))
		if err != nil {
			b.Fatal(err)
		}
		release()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/backfill")
}
