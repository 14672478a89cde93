package whep

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
)

// publishReordered publishes an H.264 stream at path whose timestamps
// reorder (B-frames), which WHEP viewers get re-encoded.
func publishReordered(t *testing.T, b *bench, path string) {
	t.Helper()
	pub, err := b.reg.Publish(path, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	video := &media.Track{Codec: media.H264{SPS: testSPS, PPS: testPPS}}
	if err := pub.SetTracks(video); err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{0, 2, 1} { // decoding order: a P-frame, then the B-frame before it
		pub.Write(frame(video, n, i == 0, testSPS))
	}
}

// offerVideo POSTs a video-only offer for path and returns the status and
// the body of the answer.
func offerVideo(t *testing.T, b *bench, path string) (int, string) {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	off, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(b.url+"/whep/"+path, "application/sdp", strings.NewReader(off.SDP))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestReencodersCapped: with the default cap of two video re-encoders,
// viewers of two B-frame streams are served (re-encoded), and so is a
// second viewer of one of them, which shares its stream's re-encoder; a
// viewer of a third such stream is refused as "bframes: reject" would
// refuse it, with the reason.
func TestReencodersCapped(t *testing.T) {
	if !transcode.CanReencodeVideo() {
		t.Fatal("this build cannot re-encode video: build with cgo against FFmpeg with libx264 (apt-get install libavcodec-dev)")
	}
	b := newBench(t)
	paths := []string{"live/a", "live/b", "live/c"}
	for _, path := range paths {
		publishReordered(t, b, path)
	}
	served := append(slices.Clone(paths[:transcode.DefaultReencoders]), paths[0])
	for _, path := range served {
		if status, body := offerVideo(t, b, path); status != http.StatusCreated {
			t.Fatalf("viewer of %s: %d %q, want 201", path, status, body)
		}
	}
	status, body := offerVideo(t, b, paths[transcode.DefaultReencoders])
	if status != http.StatusNotAcceptable || !strings.Contains(body, "re-encodes no more streams") || !strings.Contains(body, "bframes=0") {
		t.Fatalf("viewer of a stream past the re-encoder cap: %d %q, want 406 saying why and how to set the encoder", status, body)
	}
	if !strings.Contains(b.logs.String(), "every video re-encoder is in use") {
		t.Error("the refusal was not logged")
	}
}
