package rtpin

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/webrtc/v4"
)

// AcceptableH264 reports whether an H.264 format with this fmtp line is one
// the hub can carry: packetization-mode 1 (single NAL units, STAP-A, FU-A;
// mode 0 cannot carry a frame larger than one packet) in the Baseline, Main
// or High profile (constraint flags and level do not matter; no
// profile-level-id means Baseline, RFC 6184 section 8.1).
func AcceptableH264(fmtp string) bool {
	if FmtpParam(fmtp, "packetization-mode") != "1" {
		return false
	}
	plid := FmtpParam(fmtp, "profile-level-id")
	if plid == "" {
		return true
	}
	b, err := hex.DecodeString(plid)
	if err != nil || len(b) != 3 {
		return false
	}
	switch b[0] {
	case 0x42, 0x4d, 0x64: // Baseline, Main, High
		return true
	}
	return false
}

// AcceptableCodec reports whether a codec pion negotiated is H.264 the hub
// can carry (AcceptableH264) or Opus.
func AcceptableCodec(c webrtc.RTPCodecParameters) bool {
	switch {
	case strings.EqualFold(c.MimeType, webrtc.MimeTypeOpus):
		return true
	case strings.EqualFold(c.MimeType, webrtc.MimeTypeH264):
		return AcceptableH264(c.SDPFmtpLine)
	}
	return false
}

// KeepCodecs returns the codecs of a negotiated list the hub can carry (see
// AcceptableCodec) and the RTX formats that repair them.
func KeepCodecs(codecs []webrtc.RTPCodecParameters) []webrtc.RTPCodecParameters {
	var keep []webrtc.RTPCodecParameters
	for _, c := range codecs {
		if AcceptableCodec(c) {
			keep = append(keep, c)
		}
	}
	n := len(keep)
	for _, c := range codecs {
		if !strings.EqualFold(c.MimeType, webrtc.MimeTypeRTX) {
			continue
		}
		apt := FmtpParam(c.SDPFmtpLine, "apt")
		if slices.ContainsFunc(keep[:n], func(k webrtc.RTPCodecParameters) bool { return fmt.Sprint(k.PayloadType) == apt }) {
			keep = append(keep, c)
		}
	}
	return keep
}

// FmtpParam returns the value of key in an fmtp line ("a=1;b=2").
func FmtpParam(fmtp, key string) string {
	for kv := range strings.SplitSeq(fmtp, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		if strings.EqualFold(k, key) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// spropParameterSets returns the SPS and PPS of an H.264 fmtp line's
// sprop-parameter-sets (RFC 6184 section 8.1: base64 NAL units separated by
// commas), or nil for those it does not carry or that do not decode.
func spropParameterSets(fmtp string) (sps, pps []byte) {
	v := FmtpParam(fmtp, "sprop-parameter-sets")
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
