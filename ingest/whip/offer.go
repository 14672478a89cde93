package whip

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/rtc"
)

// offer is what the endpoint needs to know of a publisher's SDP offer: which
// media section (by mid) will carry the video and which the audio. At least
// one of them is set.
type offer struct {
	videoMid, audioMid string
	hasVideo, hasAudio bool
}

// checkOffer parses an SDP offer and picks the first media section of each
// kind that sends something the hub can carry: H.264 in packetization-mode 1
// (Baseline, Main or High profile) for video, Opus for audio. Other codecs
// (VP8, VP9, AV1, H.265) have no hub codec yet, so sections offering only
// those are not used. Errors are 400s with the reason.
func checkOffer(raw string) (*offer, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(raw); err != nil {
		return nil, rtc.Errorf(http.StatusBadRequest, "SDP offer cannot be parsed: %v", err)
	}
	if len(sd.MediaDescriptions) == 0 {
		return nil, rtc.Errorf(http.StatusBadRequest, "SDP offer has no media sections")
	}
	o := &offer{}
	var gotVideo, gotAudio []string // codec names of sections that send, for the error
	for _, md := range sd.MediaDescriptions {
		if !sends(md) {
			continue
		}
		mid, _ := md.Attribute("mid")
		codecs := sectionCodecs(md)
		switch md.MediaName.Media {
		case "video":
			gotVideo = appendNames(gotVideo, codecs)
			if !o.hasVideo && slices.ContainsFunc(codecs, acceptableVideo) {
				o.hasVideo, o.videoMid = true, mid
			}
		case "audio":
			gotAudio = appendNames(gotAudio, codecs)
			if !o.hasAudio && slices.ContainsFunc(codecs, acceptableAudio) {
				o.hasAudio, o.audioMid = true, mid
			}
		}
	}
	if !o.hasVideo && !o.hasAudio {
		return nil, rtc.Errorf(http.StatusBadRequest,
			"offer has nothing this endpoint can receive: it takes H264 video (packetization-mode=1; Baseline, Main or High profile) and/or Opus audio in a sendonly or sendrecv section (offered video: %s; audio: %s)",
			describe(gotVideo), describe(gotAudio))
	}
	return o, nil
}

// sends reports whether a media section can carry media from the offerer:
// not disabled (port 0 without bundle-only, as GStreamer offers its second
// section) and sendonly or sendrecv (the default).
func sends(md *sdp.MediaDescription) bool {
	if md.MediaName.Port.Value == 0 {
		if _, ok := md.Attribute("bundle-only"); !ok {
			return false
		}
	}
	for _, dir := range []string{"recvonly", "inactive"} {
		if _, ok := md.Attribute(dir); ok {
			return false
		}
	}
	return true
}

// offeredCodec is one payload format of a media section.
type offeredCodec struct {
	name string // as in the rtpmap: "H264", "opus", "OPUS", ...
	fmtp string
}

func sectionCodecs(md *sdp.MediaDescription) []offeredCodec {
	byPT := map[string]*offeredCodec{}
	for _, f := range md.MediaName.Formats {
		byPT[f] = &offeredCodec{}
	}
	for _, a := range md.Attributes {
		pt, rest, ok := strings.Cut(a.Value, " ")
		if !ok || byPT[pt] == nil {
			continue
		}
		switch a.Key {
		case "rtpmap":
			byPT[pt].name, _, _ = strings.Cut(rest, "/")
		case "fmtp":
			byPT[pt].fmtp = rest
		}
	}
	out := make([]offeredCodec, 0, len(md.MediaName.Formats))
	for _, f := range md.MediaName.Formats {
		if c := byPT[f]; c.name != "" {
			out = append(out, *c)
		}
	}
	return out
}

// acceptableVideo reports whether c is H.264 the hub can carry:
// packetization-mode 1 (single NAL units, STAP-A, FU-A; mode 0 cannot carry
// a frame larger than one packet) in the Baseline, Main or High profile
// (constraint flags and level do not matter; no profile-level-id means
// Baseline, RFC 6184 section 8.1).
func acceptableVideo(c offeredCodec) bool {
	if !strings.EqualFold(c.name, "H264") || fmtpParam(c.fmtp, "packetization-mode") != "1" {
		return false
	}
	plid := fmtpParam(c.fmtp, "profile-level-id")
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

// acceptableAudio reports whether c is Opus.
func acceptableAudio(c offeredCodec) bool { return strings.EqualFold(c.name, "opus") }

// acceptableCodec is acceptableVideo or acceptableAudio for a codec pion
// negotiated.
func acceptableCodec(c webrtc.RTPCodecParameters) bool {
	name := c.MimeType[strings.IndexByte(c.MimeType, '/')+1:]
	oc := offeredCodec{name: name, fmtp: c.SDPFmtpLine}
	return acceptableVideo(oc) || acceptableAudio(oc)
}

// fmtpParam returns the value of key in an fmtp line ("a=1;b=2").
func fmtpParam(fmtp, key string) string {
	for _, kv := range strings.Split(fmtp, ";") {
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
	v := fmtpParam(fmtp, "sprop-parameter-sets")
	if v == "" {
		return nil, nil
	}
	for _, part := range strings.Split(v, ",") {
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

func appendNames(names []string, codecs []offeredCodec) []string {
	for _, c := range codecs {
		switch strings.ToLower(c.name) {
		case "rtx", "red", "ulpfec", "flexfec-03", "cn", "telephone-event":
			continue // helpers, not media codecs
		}
		if acceptableVideo(c) {
			continue // listed only when it is not what made the section usable
		}
		n := c.name
		if strings.EqualFold(n, "H264") {
			n = fmt.Sprintf("H264 (packetization-mode=%s, profile-level-id=%s)",
				orNone(fmtpParam(c.fmtp, "packetization-mode")), orNone(fmtpParam(c.fmtp, "profile-level-id")))
		}
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func describe(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
