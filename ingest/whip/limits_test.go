package whip

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/rtc"
)

// publishFrom POSTs offer to /whip/path from client c.
func (ts *testServer) publishFrom(t *testing.T, c *http.Client, path, offer string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.srv.URL+"/whip/"+path, strings.NewReader(offer))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// TestPendingPerAddress: one address that opens publish sessions and never
// does ICE gets 429 with Retry-After at its limit, while a second address
// still gets in; the connect timeout ends them and frees their paths.
func TestPendingPerAddress(t *testing.T) {
	ts := newTestServerWith(t, rtc.Limits{PendingPerAddress: 2, ConnectTimeout: time.Second})
	offer := realOffer(t, "chromium156-whip-whep-js-offer.sdp") // no candidates: ICE never completes
	greedy, other := testkit.ClientFrom("127.0.0.1"), testkit.ClientFrom("127.0.0.2")
	for _, p := range []string{"live/a", "live/b"} {
		if resp, body := ts.publishFrom(t, greedy, p, offer); resp.StatusCode != http.StatusCreated {
			t.Fatalf("%s: %s %s", p, resp.Status, body)
		}
	}
	resp, body := ts.publishFrom(t, greedy, "live/c", offer)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the limit: %s, Retry-After %q, %s", resp.Status, resp.Header.Get("Retry-After"), body)
	}
	if _, ok := ts.reg.Get("live/c"); ok {
		t.Error("a refused publish claimed its path")
	}
	if resp, body := ts.publishFrom(t, other, "live/d", offer); resp.StatusCode != http.StatusCreated {
		t.Fatalf("second address: %s %s", resp.Status, body)
	}
	// Well before the idle timeout (10 s): it is the connect timeout.
	deadline := time.Now().Add(5 * time.Second)
	for ts.sessions.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions that never did ICE still in the table after 5 s", ts.sessions.Len())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp, body := ts.publishFrom(t, greedy, "live/a", offer); resp.StatusCode != http.StatusCreated {
		t.Fatalf("after the timeout: %s %s", resp.Status, body)
	}
}

// TestPathRule: a path that breaks the stream path rule is refused with
// 400 and the reason, before authorization.
func TestPathRule(t *testing.T) {
	ts := newTestServer(t)
	offer := realOffer(t, "chromium156-whip-whep-js-offer.sdp")
	for _, p := range []string{"live/a%20b", "live/%2E%2E/b", "live%2F..%2Fb", "live/a%00b", "live/a%3Ab", strings.Repeat("x", 32<<10)} {
		resp, body := ts.publishFrom(t, ts.client, p, offer)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "invalid stream path") {
			t.Errorf("%.40q: %s %.120s", p, resp.Status, body)
		}
	}
}
