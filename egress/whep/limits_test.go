package whep

import (
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
)

// postSDP POSTs sdp to /whep/path and returns the response and its body.
func postSDP(t *testing.T, c *http.Client, b *bench, path, sdp string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Post(b.url+"/whep/"+path, "application/sdp", strings.NewReader(sdp))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// publishVideo publishes an H.264 stream at path with one keyframe.
func publishVideo(t *testing.T, b *bench, path string) *media.Publication {
	t.Helper()
	pub, err := b.reg.Publish(path, "test encoder")
	if err != nil {
		t.Fatal(err)
	}
	video := &media.Track{Codec: media.H264{SPS: testSPS, PPS: testPPS}}
	if err := pub.SetTracks(video); err != nil {
		t.Fatal(err)
	}
	pub.Write(frame(video, 0, true, testSPS))
	return pub
}

// waitEmpty waits until the sessions table is empty.
func waitEmpty(t *testing.T, b *bench, why string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.sessions.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d sessions still in the table after 10 s", why, b.sessions.Len())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPendingPerAddress: one address that opens sessions and never does
// ICE gets 429 with Retry-After at its limit, while a second address still
// gets in; when the connect timeout ends them, the table is empty and the
// first address gets in again.
func TestPendingPerAddress(t *testing.T) {
	b := newBenchWith(t, rtc.Limits{PendingPerAddress: 3, ConnectTimeout: time.Second})
	pub := publishVideo(t, b, "live/cam")
	defer pub.Close()
	offer := realOfferSDP(t, "chromium156-whep-offer.sdp")
	greedy, other := testkit.ClientFrom("127.0.0.1"), testkit.ClientFrom("127.0.0.2")
	for i := range 3 {
		if resp, body := postSDP(t, greedy, b, "live/cam", offer); resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST %d: %s %s", i, resp.Status, body)
		}
	}
	resp, body := postSDP(t, greedy, b, "live/cam", offer)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the limit: %s, Retry-After %q, %s", resp.Status, resp.Header.Get("Retry-After"), body)
	}
	t.Logf("refusal: %s", body)
	if resp, body := postSDP(t, other, b, "live/cam", offer); resp.StatusCode != http.StatusCreated {
		t.Fatalf("second address: %s %s", resp.Status, body)
	}
	if n := b.sessions.Refused()[rtc.LimitPendingPerAddress]; n != 1 {
		t.Errorf("%d refusals counted, want 1", n)
	}
	waitEmpty(t, b, "sessions that never did ICE")
	if resp, body := postSDP(t, greedy, b, "live/cam", offer); resp.StatusCode != http.StatusCreated {
		t.Fatalf("after the timeout: %s %s", resp.Status, body)
	}
}

// TestReadersPerStream: a viewer over the stream's reader limit gets 503
// with Retry-After; readers of other protocols (a hub reader, as RTMP play
// and SRT read attach) and viewers still connecting count.
func TestReadersPerStream(t *testing.T) {
	b := newBenchWith(t, rtc.Limits{ReadersPerStream: 2})
	pub := publishVideo(t, b, "live/cam")
	defer pub.Close()
	r, err := pub.NewReader(media.ReaderOptions{Name: "rtmp play"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	offer := realOfferSDP(t, "chromium156-whep-offer.sdp")
	c := testkit.ClientFrom("127.0.0.1")
	if resp, body := postSDP(t, c, b, "live/cam", offer); resp.StatusCode != http.StatusCreated {
		t.Fatalf("first viewer: %s %s", resp.Status, body)
	}
	resp, body := postSDP(t, c, b, "live/cam", offer)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "readers") {
		t.Fatalf("over the limit: %s, Retry-After %q, %s", resp.Status, resp.Header.Get("Retry-After"), body)
	}
}

// TestPathRule: a path that breaks the stream path rule is refused with
// 400 and the reason, before anything else is looked at.
func TestPathRule(t *testing.T) {
	b := newBench(t)
	c := testkit.ClientFrom("127.0.0.1")
	for _, p := range []string{"a%20b", "a/%2E%2E/b", "a%2F..%2Fb", "a%01b", "a%2F%2Fb", strings.Repeat("x", 32<<10)} {
		resp, body := postSDP(t, c, b, p, "v=0\r\n")
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "invalid stream path") {
			t.Errorf("%.40q: %s %.120s", p, resp.Status, body)
		}
	}
}

// TestSessionChurn: viewers join streams that end while their POSTs are
// being answered; once every stream has ended, the sessions table is
// empty (a session that ended before it was stored used to stay in it
// forever). The connect timeout is long, so it cannot be what empties it.
func TestSessionChurn(t *testing.T) {
	b := newBenchWith(t, rtc.Limits{ConnectTimeout: time.Hour})
	offer := realOfferSDP(t, "chromium156-whep-offer.sdp")
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	const rounds, viewers = 30, 8
	created := 0
	for range rounds {
		pub := publishVideo(t, b, "live/churn")
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range viewers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := c.Post(b.url+"/whep/live/churn", "application/sdp", strings.NewReader(offer))
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusCreated {
					mu.Lock()
					created++
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(rand.IntN(4000)) * time.Microsecond)
		pub.Close() // no grace: the stream ends now
		wg.Wait()
	}
	t.Logf("%d sessions created", created)
	if created == 0 {
		t.Fatal("no viewer got in before its stream ended")
	}
	waitEmpty(t, b, "every stream ended")
}
