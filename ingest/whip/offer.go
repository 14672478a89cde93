package whip

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/pion/sdp/v3"

	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/webrtccodec"
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
		codecs := webrtccodec.SectionCodecs(md)
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

// acceptableVideo reports whether c is H.264 the hub can carry (see
// webrtccodec.AcceptableH264).
func acceptableVideo(c webrtccodec.Offered) bool {
	return strings.EqualFold(c.Name, "H264") && webrtccodec.Acceptable(c)
}

// acceptableAudio reports whether c is Opus.
func acceptableAudio(c webrtccodec.Offered) bool {
	return strings.EqualFold(c.Name, "opus") && webrtccodec.Acceptable(c)
}

func appendNames(names []string, codecs []webrtccodec.Offered) []string {
	for _, c := range codecs {
		switch strings.ToLower(c.Name) {
		case "rtx", "red", "ulpfec", "flexfec-03", "cn", "telephone-event":
			continue // helpers, not media codecs
		}
		if acceptableVideo(c) {
			continue // listed only when it is not what made the section usable
		}
		n := c.Name
		if strings.EqualFold(n, "H264") {
			n = fmt.Sprintf("H264 (packetization-mode=%s, profile-level-id=%s)",
				orNone(webrtccodec.FmtpParam(c.Fmtp, "packetization-mode")), orNone(webrtccodec.FmtpParam(c.Fmtp, "profile-level-id")))
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
