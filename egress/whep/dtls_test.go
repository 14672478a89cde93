package whep

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/wishbridge/bridge/media"
)

var setupLine = regexp.MustCompile(`(?m)^a=setup:(\S+)\r?$`)

// setupRoles returns the a=setup values of an SDP, one per line that has one.
func setupRoles(sdp string) []string {
	var out []string
	for _, m := range setupLine.FindAllStringSubmatch(sdp, -1) {
		out = append(out, m[1])
	}
	return out
}

// postOffer POSTs offer to the WHEP endpoint of path and returns the
// answer; anything but a 201 fails the test.
func postOffer(t *testing.T, b *bench, path, offer string) string {
	t.Helper()
	resp, err := http.Post(b.url+"/whep/"+path, "application/sdp", strings.NewReader(offer))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /whep/%s: %d %s\n%s", path, resp.StatusCode, body, offer)
	}
	return string(body)
}

// TestDTLSRoles: an offer may say a=setup:active or passive (RFC 8842
// section 5.2) as well as actpass. The answer takes the complement in
// every section (active -> passive, passive -> active) and active for
// actpass (RFC 5763 section 5 recommends it: the handshake starts with the
// answer), for Chromium's captured offer edited to each role, and for a
// pion viewer whose offer says each, which then plays.
func TestDTLSRoles(t *testing.T) {
	b := newBench(t)
	video := &media.Track{Codec: media.H264{SPS: testSPS, PPS: testPPS}}
	pub := b.publish(t, "live/cam", "encoder", video)
	defer pub.Close()
	for n := range 10 {
		pub.Write(frame(video, n, n == 0, testSPS))
	}
	chromium := realOfferSDP(t, "chromium156-whep-offer.sdp")
	for _, c := range []struct {
		offer, answer string
		session       bool // a=setup at the session level (RFC 4145 section 4), not in each section
	}{
		{"active", "passive", false}, {"passive", "active", false}, {"actpass", "active", false},
		{"active", "passive", true}, {"passive", "active", true},
	} {
		name := c.offer
		if c.session {
			name += " at the session level"
		}
		t.Run(name, func(t *testing.T) {
			setRole := func(sdp string) string {
				if !c.session {
					return setupLine.ReplaceAllString(sdp, "a=setup:"+c.offer+"\r")
				}
				sdp = setupLine.ReplaceAllString(sdp, "")
				sdp = strings.ReplaceAll(sdp, "\r\n\n", "\r\n")
				i := strings.Index(sdp, "\r\nm=")
				return sdp[:i] + "\r\na=setup:" + c.offer + sdp[i:]
			}

			body := postOffer(t, b, "live/cam", setRole(chromium))
			if roles := setupRoles(body); len(roles) == 0 || strings.Join(roles, " ") != strings.TrimSpace(strings.Repeat(c.answer+" ", len(roles))) {
				t.Errorf("Chromium's offer with a=setup:%s answered a=setup %v, want %s", c.offer, roles, c.answer)
			}

			b.editOffer = setRole
			defer func() { b.editOffer = nil }()
			v, answer := offerOnly(t, b, "live/cam")
			if roles := setupRoles(answer.SDP); len(roles) == 0 || strings.Join(roles, " ") != strings.TrimSpace(strings.Repeat(c.answer+" ", len(roles))) {
				t.Errorf("pion's offer with a=setup:%s answered a=setup %v, want %s", c.offer, roles, c.answer)
			}
			if err := v.pc.SetRemoteDescription(answer); err != nil {
				t.Fatal(err)
			}
			if got := numbers(v.wait(t, 10)); got[0] != 0 || got[9] != 9 {
				t.Errorf("viewer got frames %v, want the GOP 0..9", got)
			}
		})
	}
}
