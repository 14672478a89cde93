package whep

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wishbridge/bridge/webrtccodec"
)

// SPS prefixes (NAL header, profile_idc, constraint flags, level).
var (
	spsConstrainedBaseline = []byte{0x67, 0x42, 0xc0, 0x1f}
	spsHigh                = []byte{0x67, 0x64, 0x00, 0x1f}
)

func realOffer(t *testing.T, name string) *offer {
	t.Helper()
	o, err := parseOffer(realOfferSDP(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// realOfferSDP returns a captured offer from ../shared/sdp.
func realOfferSDP(t *testing.T, name string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("../../../shared/sdp", name))
	if err != nil {
		t.Fatalf("fixture: %v", err)
	}
	// The captures end with the capturing tool's notes after a blank line.
	sdp, _, _ := strings.Cut(strings.ReplaceAll(string(raw), "\r\n", "\n"), "\n\n")
	return strings.ReplaceAll(sdp, "\n", "\r\n") + "\r\n"
}

// TestParseRealOffers: Chromium's WHEP offer can receive the stream's H.264
// and Opus; GStreamer's VP8-only offer is refused with a reason naming what
// it offered.
func TestParseRealOffers(t *testing.T) {
	o := realOffer(t, "chromium156-whep-offer.sdp")
	if _, err := webrtccodec.ChooseH264(o.video, spsHigh); err != nil {
		t.Errorf("chromium video: %v", err)
	}
	if !webrtccodec.HasOpus(o.audio) {
		t.Errorf("chromium: no Opus in %v", describeCodecs(o.audio))
	}
	o = realOffer(t, "simple-whep-client-gst1.22-offer.sdp")
	if _, err := webrtccodec.ChooseH264(o.video, spsConstrainedBaseline); err == nil || !strings.Contains(err.Error(), "VP8") {
		t.Errorf("gstreamer VP8 offer: %v, want a refusal naming VP8", err)
	}
}

func TestParseOfferErrors(t *testing.T) {
	for _, raw := range []string{"", "garbage", "v=0\r\n"} {
		if _, err := parseOffer(raw); err == nil {
			t.Errorf("%q parsed", raw)
		}
	}
}
