package rtpin

import (
	"bytes"
	"testing"

	"github.com/wishbridge/bridge/webrtccodec"
)

func TestSpropParameterSets(t *testing.T) {
	sps, pps := spropParameterSets("packetization-mode=1;sprop-parameter-sets=Z0LAH9kA,aM48gA==;profile-level-id=42c01f")
	if !bytes.Equal(sps, []byte{0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00}) || !bytes.Equal(pps, []byte{0x68, 0xce, 0x3c, 0x80}) {
		t.Errorf("sps %x pps %x", sps, pps)
	}
	if sps, pps := spropParameterSets("packetization-mode=1;sprop-parameter-sets=!!!,aM48gA=="); sps != nil || pps == nil {
		t.Errorf("bad base64: sps %x pps %x", sps, pps)
	}
	if sps, pps := spropParameterSets("packetization-mode=1"); sps != nil || pps != nil {
		t.Errorf("none: sps %x pps %x", sps, pps)
	}
}

// FuzzSpropParameterSets: any fmtp line (or whole offer) gives parameter
// sets or nil, never a panic.
func FuzzSpropParameterSets(f *testing.F) {
	f.Add("packetization-mode=1;sprop-parameter-sets=Z0LAH9kA,aM48gA==;profile-level-id=42c01f")
	f.Add("v=0\r\nm=video 0 RTP/AVP 96\r\na=fmtp:96 ;;=;packetization-mode\r\n")
	f.Add("sprop-parameter-sets=,,;sprop-parameter-sets")
	f.Fuzz(func(t *testing.T, fmtp string) {
		spropParameterSets(fmtp)
		webrtccodec.AcceptableH264(fmtp)
	})
}
