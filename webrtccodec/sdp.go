package webrtccodec

import (
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/rtc"
)

// Offered is one payload format of an SDP media section.
type Offered struct {
	Name string // as in the rtpmap: "H264", "opus", "OPUS", ...
	Fmtp string
}

// SectionCodecs returns the payload formats of a media section that have
// an rtpmap, in the section's order of preference.
func SectionCodecs(md *sdp.MediaDescription) []Offered {
	byPT := map[string]*Offered{}
	for _, f := range md.MediaName.Formats {
		byPT[f] = &Offered{}
	}
	for _, a := range md.Attributes {
		pt, rest, ok := strings.Cut(a.Value, " ")
		if !ok || byPT[pt] == nil {
			continue
		}
		switch a.Key {
		case "rtpmap":
			byPT[pt].Name, _, _ = strings.Cut(rest, "/")
		case "fmtp":
			byPT[pt].Fmtp = rest
		}
	}
	out := make([]Offered, 0, len(md.MediaName.Formats))
	for _, f := range md.MediaName.Formats {
		if c := byPT[f]; c.Name != "" {
			out = append(out, *c)
		}
	}
	return out
}

// FmtpParam returns the value of key in an fmtp line ("a=1;b=2"), spaces
// around it trimmed; "" if the line has none.
func FmtpParam(fmtp, key string) string {
	for kv := range strings.SplitSeq(fmtp, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		if strings.EqualFold(k, key) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

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

// AcceptedVideo and AcceptedAudio name, for a refusal, the formats
// Acceptable takes of each kind.
const (
	AcceptedVideo = "H264 (packetization-mode=1; Baseline, Main or High profile)"
	AcceptedAudio = "Opus"
)

// Acceptable reports whether a payload format a publisher offers is one
// the hub can receive and carry: H.264 (AcceptableH264) or Opus.
func Acceptable(c Offered) bool {
	return acceptable(c.Name, c.Fmtp)
}

// AcceptableCodec reports whether a codec pion negotiated is one the hub
// can carry (see Acceptable).
func AcceptableCodec(c webrtc.RTPCodecParameters) bool {
	_, name, _ := strings.Cut(c.MimeType, "/")
	return acceptable(name, c.SDPFmtpLine)
}

func acceptable(name, fmtp string) bool {
	switch {
	case strings.EqualFold(name, "opus"):
		return true
	case strings.EqualFold(name, "H264"):
		return AcceptableH264(fmtp)
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

// HasOpus reports whether an offer's audio section can receive Opus.
func HasOpus(codecs []Offered) bool {
	return slices.ContainsFunc(codecs, func(c Offered) bool { return strings.EqualFold(c.Name, "opus") })
}

// ChooseH264 picks the offered H.264 format (packetization-mode 1) that best
// fits a stream whose SPS is sps: the same profile if offered, else a
// profile whose decoders can decode the stream (e.g. High for a Constrained
// Baseline source), else any H.264 (browsers decode every profile they
// offer any of). It returns the fmtp line to answer with, or a 400 naming
// what the offer has.
func ChooseH264(codecs []Offered, sps []byte) (string, error) {
	var names []string
	var cands []Offered
	for _, c := range codecs {
		if !slices.Contains(names, c.Name) {
			names = append(names, c.Name)
		}
		if strings.EqualFold(c.Name, "H264") && FmtpParam(c.Fmtp, "packetization-mode") == "1" {
			cands = append(cands, c)
		}
	}
	if len(cands) == 0 {
		got := strings.Join(names, ", ")
		if got == "" {
			got = "no codecs"
		}
		return "", rtc.Errorf(http.StatusBadRequest, "offer has no H264 with packetization-mode=1 to receive the stream's video (got %s)", got)
	}
	src := profileOf(sps)
	best, bestRank := cands[0], 3
	for _, c := range cands {
		r := 2
		if p, err := hex.DecodeString(FmtpParam(c.Fmtp, "profile-level-id")); err == nil && len(p) == 3 {
			switch {
			case profileClass([2]byte{p[0], p[1]}) == profileClass(src):
				r = 0
			case decodes(p[0], src):
				r = 1
			}
		}
		if r < bestRank {
			best, bestRank = c, r
		}
	}
	return best.Fmtp, nil
}

// profileOf returns profile_idc and the constraint flags of an SPS.
func profileOf(sps []byte) [2]byte {
	if len(sps) < 3 {
		return [2]byte{0x42, 0xe0}
	}
	return [2]byte{sps[1], sps[2]}
}

// profileClass names an H.264 profile as RFC 6184 table 5 does: profile_idc,
// except that Baseline with constraint_set1 is Constrained Baseline
// whatever the other flags say (x264 writes 42c0, browsers offer 42e0).
func profileClass(p [2]byte) int {
	if p[0] == 0x42 && p[1]&0x40 != 0 {
		return 0x142
	}
	return int(p[0])
}

// decodes reports whether a decoder of profile_idc dec can decode a stream
// of profile src (ISO 14496-10 A.2: Constrained Baseline is a subset of
// Main and High, Main of High).
func decodes(dec byte, src [2]byte) bool {
	constrainedBaseline := src[0] == 0x42 && src[1]&0x40 != 0
	switch {
	case constrainedBaseline:
		return dec == 0x42 || dec == 0x4d || dec == 0x64
	case src[0] == 0x4d:
		return dec == 0x64
	}
	return false
}

// h264Fmtp returns the fmtp line offered for H.264 whose SPS is sps: the
// stream's profile and level in profile-level-id (constraint flags
// normalised to the forms WebRTC stacks list: 42e0 for Constrained
// Baseline, 00 otherwise), packetization-mode 1.
func h264Fmtp(sps []byte) string {
	profile, iop, level := byte(0x42), byte(0xe0), byte(0x1f)
	if len(sps) >= 4 {
		profile, level = sps[1], sps[3]
		switch {
		case profile == 0x42 && sps[2]&0x40 != 0: // Constrained Baseline
			iop = 0xe0
		case profile == 0x42, profile == 0x4d, profile == 0x64:
			iop = 0x00
		default:
			iop = sps[2]
		}
	}
	return fmt.Sprintf("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=%02x%02x%02x", profile, iop, level)
}
