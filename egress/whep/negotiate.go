package whep

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/pion/sdp/v3"

	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/webrtccodec"
)

// offer is what negotiation needs to know of a parsed SDP offer.
type offer struct {
	video              []webrtccodec.Offered // of the first video section that can receive
	audio              []webrtccodec.Offered
	hasVideo, hasAudio bool
}

// parseOffer parses an SDP offer into the codecs each receiving media
// section accepts. Errors are 400s with the reason.
func parseOffer(raw string) (*offer, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(raw); err != nil {
		return nil, rtc.Errorf(http.StatusBadRequest, "SDP offer cannot be parsed: %v", err)
	}
	if len(sd.MediaDescriptions) == 0 {
		return nil, rtc.Errorf(http.StatusBadRequest, "SDP offer has no media sections")
	}
	o := &offer{}
	for _, md := range sd.MediaDescriptions {
		if md.MediaName.Port.Value == 0 {
			continue // rejected or disabled section
		}
		if _, ok := md.Attribute("sendonly"); ok {
			continue // a WHEP viewer's sections receive; sendonly ones cannot
		}
		if _, ok := md.Attribute("inactive"); ok {
			continue
		}
		codecs := webrtccodec.SectionCodecs(md)
		switch md.MediaName.Media {
		case "video":
			if !o.hasVideo {
				o.hasVideo, o.video = true, codecs
			}
		case "audio":
			if !o.hasAudio {
				o.hasAudio, o.audio = true, codecs
			}
		}
	}
	return o, nil
}

func describeCodecs(codecs []webrtccodec.Offered) string {
	var s []string
	for _, c := range codecs {
		s = append(s, c.Name)
	}
	return fmt.Sprint(s)
}

// receiveOnly returns a viewer's offer with each media section that may
// send to us (sendrecv, or no direction: sendrecv by default) marked
// recvonly and each sendonly one inactive, for pion: it answers a sendrecv
// section sendrecv once it has a track to send, and a WHEP session only
// sends (draft-ietf-wish-whep: the answer is sendonly). Rejected sections
// (port 0) and the rest of the offer are unchanged.
func receiveOnly(raw string) string {
	lines := strings.SplitAfter(raw, "\n")
	out := make([]string, 0, len(lines)+4)
	// section is the index in out of the current m= line (-1 before the
	// first); dir is whether it has a direction attribute.
	section, dir := -1, false
	endSection := func() {
		if section >= 0 && !dir && !rejected(out[section]) {
			out = append(out, "a=recvonly\r\n")
		}
	}
	for _, l := range lines {
		if l == "" {
			continue
		}
		if !strings.HasSuffix(l, "\n") {
			l += "\r\n" // the last line, without its end
		}
		line := strings.TrimRight(l, "\r\n")
		if strings.HasPrefix(line, "m=") {
			endSection()
			section, dir = len(out), false
			out = append(out, l)
			continue
		}
		if section >= 0 && !rejected(out[section]) {
			switch line {
			case "a=sendrecv":
				l, dir = "a=recvonly\r\n", true
			case "a=sendonly":
				l, dir = "a=inactive\r\n", true
			case "a=recvonly", "a=inactive":
				dir = true
			}
		}
		out = append(out, l)
	}
	endSection()
	return strings.Join(out, "")
}

// rejected reports whether the m= line mline has port 0.
func rejected(mline string) bool {
	f := strings.Fields(mline)
	return len(f) > 1 && f[1] == "0"
}
