package whep

import (
	"fmt"
	"net/http"

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
