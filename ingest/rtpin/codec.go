package rtpin

import (
	"encoding/base64"
	"strings"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/wishbridge/bridge/webrtccodec"
)

// spropParameterSets returns the SPS and PPS of an H.264 fmtp line's
// sprop-parameter-sets (RFC 6184 section 8.1: base64 NAL units separated by
// commas), or nil for those it does not carry or that do not decode.
func spropParameterSets(fmtp string) (sps, pps []byte) {
	v := webrtccodec.FmtpParam(fmtp, "sprop-parameter-sets")
	if v == "" {
		return nil, nil
	}
	for part := range strings.SplitSeq(v, ",") {
		nalu, err := base64.StdEncoding.DecodeString(strings.TrimSpace(part))
		if err != nil || len(nalu) == 0 {
			continue
		}
		switch h264.NALUType(nalu[0] & 0x1f) {
		case h264.NALUTypeSPS:
			if sps == nil {
				sps = nalu
			}
		case h264.NALUTypePPS:
			if pps == nil {
				pps = nalu
			}
		}
	}
	return sps, pps
}
