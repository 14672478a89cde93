package whep

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/media"
)

// TestViewersLeaveNothingBehind (issue 15, memory goes back): 30 pion
// viewers play a stream of H.264 and Opus, then leave as a WHEP player
// does (DELETE, then close), the last to join first. Once the sessions
// table is empty, a GC must collect every session and every track sender
// the viewers had: none may stay reachable. (The pump removed a viewer
// from its list with append(s[:i], s[i+1:]...), which leaves the removed
// tail in the backing array: viewers leaving from the end of the list
// stayed there all, each with its PeerConnection, its tracks' NACK
// histories and the hub packets they point to, until new viewers
// overwrote the slots.) The live heap before and after is logged, not
// asserted.
func TestViewersLeaveNothingBehind(t *testing.T) {
	const viewers = 30
	b := newBench(t)
	video := &media.Track{Codec: media.H264{SPS: testSPS, PPS: testPPS}}
	audio := &media.Track{Codec: media.Opus{Channels: 2}}
	pub := b.publish(t, "live/mem", "encoder", video, audio)
	defer pub.Close()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	wg.Add(1)
	go func() { // 50 frames a second, an IDR every second
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ctx.Err() == nil; n++ {
			pub.Write(frame(video, n, n%50 == 0, testSPS))
			pub.Write(opusUnit(audio, n))
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
	}()
	before := liveHeap()

	type joined struct {
		v        *viewer
		location string
	}
	var all []joined
	for range viewers {
		v, location := join(t, b, "live/mem", webrtc.RTPCodecTypeAudio)
		v.wait(t, 1)
		all = append(all, joined{v, location})
	}
	// What the bridge holds for each viewer, without keeping it.
	var sessions []weak.Pointer[session]
	var tracks []weak.Pointer[outTrack]
	for _, p := range b.handler.pumps.all {
		p.mu.Lock()
		for _, s := range p.sessions {
			sessions = append(sessions, weak.Make(s))
			for _, ot := range s.tracks {
				tracks = append(tracks, weak.Make(ot))
			}
		}
		p.mu.Unlock()
	}
	if len(sessions) != viewers || len(tracks) != 2*viewers {
		t.Fatalf("%d sessions with %d tracks sending, want %d with 2 each", len(sessions), len(tracks), viewers)
	}
	during := liveHeap()

	for _, j := range slices.Backward(all) {
		req, err := http.NewRequest(http.MethodDelete, j.location, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		_ = j.v.pc.Close()
	}
	waitEmpty(t, b, "every viewer sent DELETE")

	// A session's goroutines (its RTCP readers, run) end just after it
	// leaves the table: wait for them, not for a fixed time.
	countLive := func() (s, tr int) {
		runtime.GC()
		for _, w := range sessions {
			if w.Value() != nil {
				s++
			}
		}
		for _, w := range tracks {
			if w.Value() != nil {
				tr++
			}
		}
		return s, tr
	}
	s, tr := countLive()
	for deadline := time.Now().Add(10 * time.Second); (s > 0 || tr > 0) && time.Now().Before(deadline); s, tr = countLive() {
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("live heap: %.1f MiB before, %.1f MiB with %d viewers, %.1f MiB after they left (viewers' own pion state included)",
		mib(before), mib(during), viewers, mib(liveHeap()))
	if s > 0 || tr > 0 {
		t.Fatalf("%d of %d sessions and %d of %d track senders still reachable after every viewer left", s, viewers, tr, 2*viewers)
	}
}

// join is watch, returning the session's Location too: the viewer also
// receives the extra kinds (it records video only).
func join(t *testing.T, b *bench, path string, extra ...webrtc.RTPCodecType) (*viewer, string) {
	t.Helper()
	v := newViewer(t)
	resp, err := http.Post(b.url+"/whep/"+path, "application/sdp", strings.NewReader(v.offer(t, extra...)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /whep/%s: %d %s", path, resp.StatusCode, body)
	}
	if err := v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	return v, resp.Header.Get("Location")
}

// liveHeap returns the bytes of live heap objects after a GC.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
