package whep

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wishbridge/bridge/rtc"
)

// SPS prefixes (NAL header, profile_idc, constraint flags, level).
var (
	spsConstrainedBaseline = []byte{0x67, 0x42, 0xc0, 0x1f}
	spsMain                = []byte{0x67, 0x4d, 0x40, 0x1f}
	spsHigh                = []byte{0x67, 0x64, 0x00, 0x1f}
)

func h264(plid string) offeredCodec {
	return offeredCodec{name: "H264", fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + plid}
}

func TestChooseH264(t *testing.T) {
	chrome := []offeredCodec{{name: "VP8"}, h264("42001f"), h264("42e01f"), h264("4d001f"), h264("64001f"),
		{name: "H264", fmtp: "packetization-mode=0;profile-level-id=42e01f"}}
	cases := []struct {
		name   string
		codecs []offeredCodec
		sps    []byte
		want   string // profile-level-id chosen
	}{
		{"exact constrained baseline", chrome, spsConstrainedBaseline, "42e01f"},
		{"exact main", chrome, spsMain, "4d001f"},
		{"exact high", chrome, spsHigh, "64001f"},
		{"CB source, only high offered", []offeredCodec{h264("64001f")}, spsConstrainedBaseline, "64001f"},
		{"main source prefers high over baseline", []offeredCodec{h264("42001f"), h264("64001f")}, spsMain, "64001f"},
		{"high source, only baseline offered: still H264", []offeredCodec{h264("42001f")}, spsHigh, "42001f"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fmtp, err := chooseH264(c.codecs, c.sps)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmtpParam(fmtp, "profile-level-id"); got != c.want {
				t.Errorf("chose %s (%s), want %s", got, fmtp, c.want)
			}
			if fmtpParam(fmtp, "packetization-mode") != "1" {
				t.Errorf("chose packetization-mode %q", fmtpParam(fmtp, "packetization-mode"))
			}
		})
	}
}

func TestChooseH264NoH264(t *testing.T) {
	for _, codecs := range [][]offeredCodec{
		{{name: "VP8"}, {name: "VP9"}},
		{{name: "H264", fmtp: "packetization-mode=0;profile-level-id=42e01f"}},
		nil,
	} {
		_, err := chooseH264(codecs, spsConstrainedBaseline)
		he, ok := err.(*rtc.Error)
		if !ok || he.Status != http.StatusBadRequest || !strings.Contains(he.Msg, "H264") {
			t.Errorf("%v: got %v, want 400 naming H264", codecs, err)
		}
	}
}

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
	if _, err := chooseH264(o.video, spsHigh); err != nil {
		t.Errorf("chromium video: %v", err)
	}
	if !hasOpus(o.audio) {
		t.Errorf("chromium: no Opus in %v", describeCodecs(o.audio))
	}
	o = realOffer(t, "simple-whep-client-gst1.22-offer.sdp")
	if _, err := chooseH264(o.video, spsConstrainedBaseline); err == nil || !strings.Contains(err.Error(), "VP8") {
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
