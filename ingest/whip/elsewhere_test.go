package whip

import (
	"net/http"
	"strings"
	"testing"
)

// TestElsewhereRedirects: a publish of a stream another node serves
// (*access.Elsewhere) is answered 307 with that node's URL as Location,
// so the client repeats its POST there.
func TestElsewhereRedirects(t *testing.T) {
	ts := newTestServer(t)
	req, err := http.NewRequest(http.MethodPost, ts.srv.URL+"/whip/moved/cam", strings.NewReader("v=0\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/sdp")
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "https://node2.example/whip/moved/cam" {
		t.Errorf("answer %s, Location %q; want 307 to the other node", resp.Status, resp.Header.Get("Location"))
	}
}
