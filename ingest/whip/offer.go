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

// checkOffer parses an SDP offer and picks the media section of each kind
// that sends something the hub can carry: H.264 in packetization-mode 1
// (Baseline, Main or High profile) for video, Opus for audio
// (webrtccodec.Acceptable). A WHIP stream is one MediaStream of at most one
// video and one audio track (RFC 9725 has a session carry one MediaStream):
// an offer that sends more sections of a kind (simulcast
// layers belong in one section) or more than one MediaStream (a=msid) is a
// 422 with the reason. Other codecs (VP8, VP9, AV1, H.265) have no hub
// codec yet: a sending section that offers only those is a 400 listing
// what the endpoint takes, rather than a session that carries half of what
// the client sends. An offer that cannot be parsed is a 400 too.
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
	var videoMids, audioMids, streams []string
	for _, md := range sd.MediaDescriptions {
		if !sends(md) {
			continue
		}
		mid, _ := md.Attribute("mid")
		codecs := webrtccodec.SectionCodecs(md)
		switch md.MediaName.Media {
		case "video":
			videoMids = append(videoMids, mid)
			gotVideo = appendNames(gotVideo, codecs)
			if !o.hasVideo && slices.ContainsFunc(codecs, acceptableVideo) {
				o.hasVideo, o.videoMid = true, mid
			}
		case "audio":
			audioMids = append(audioMids, mid)
			gotAudio = appendNames(gotAudio, codecs)
			if !o.hasAudio && slices.ContainsFunc(codecs, acceptableAudio) {
				o.hasAudio, o.audioMid = true, mid
			}
		default:
			continue
		}
		for _, id := range msidStreams(md) {
			if !slices.Contains(streams, id) {
				streams = append(streams, id)
			}
		}
	}
	for _, k := range []struct {
		kind string
		mids []string
	}{{"video", videoMids}, {"audio", audioMids}} {
		if len(k.mids) > 1 {
			return nil, rtc.Errorf(http.StatusUnprocessableEntity,
				"offer sends %d %s sections (mids %s): a WHIP stream takes one video and one audio track (simulcast layers go in one section)",
				len(k.mids), k.kind, strings.Join(k.mids, ", "))
		}
	}
	if len(streams) > 1 {
		return nil, rtc.Errorf(http.StatusUnprocessableEntity,
			"offer sends %d MediaStreams (a=msid %s): a WHIP stream is one MediaStream", len(streams), strings.Join(streams, ", "))
	}
	if !o.hasVideo && !o.hasAudio || len(videoMids) > 0 && !o.hasVideo || len(audioMids) > 0 && !o.hasAudio {
		return nil, rtc.Errorf(http.StatusBadRequest,
			"offer sends a format this endpoint cannot receive: it takes %s video and/or %s audio in a sendonly or sendrecv section (offered video: %s; audio: %s)",
			webrtccodec.AcceptedVideo, webrtccodec.AcceptedAudio, describe(gotVideo), describe(gotAudio))
	}
	return o, nil
}

// msidStreams returns the MediaStream ids a media section names, in its
// a=msid lines and in the a=ssrc msid lines of older clients (GStreamer);
// "-" (no stream, RFC 8830 section 2) is none.
func msidStreams(md *sdp.MediaDescription) []string {
	var ids []string
	for _, a := range md.Attributes {
		v := a.Value
		switch a.Key {
		case "msid":
		case "ssrc":
			_, rest, _ := strings.Cut(v, " ")
			var ok bool
			if v, ok = strings.CutPrefix(rest, "msid:"); !ok {
				continue
			}
		default:
			continue
		}
		id, _, _ := strings.Cut(v, " ")
		if id != "" && id != "-" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
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
