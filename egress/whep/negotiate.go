package whep

import (
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/pion/sdp/v3"

	"github.com/wishbridge/bridge/rtc"
)

// offeredCodec is one payload format of an offer's media section.
type offeredCodec struct {
	name string // "H264", "opus", ...
	fmtp string
}

// offer is what negotiation needs to know of a parsed SDP offer.
type offer struct {
	video              []offeredCodec // of the first video section that can receive
	audio              []offeredCodec
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
		codecs := sectionCodecs(md)
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

func sectionCodecs(md *sdp.MediaDescription) []offeredCodec {
	byPT := map[string]*offeredCodec{}
	var order []string
	for _, f := range md.MediaName.Formats {
		byPT[f] = &offeredCodec{}
		order = append(order, f)
	}
	for _, a := range md.Attributes {
		pt, rest, ok := strings.Cut(a.Value, " ")
		if !ok {
			continue
		}
		c := byPT[pt]
		if c == nil {
			continue
		}
		switch a.Key {
		case "rtpmap":
			name, _, _ := strings.Cut(rest, "/")
			c.name = name
		case "fmtp":
			c.fmtp = rest
		}
	}
	out := make([]offeredCodec, 0, len(order))
	for _, pt := range order {
		if c := byPT[pt]; c.name != "" {
			out = append(out, *c)
		}
	}
	return out
}

// fmtpParam returns the value of key in an fmtp line ("a=1;b=2").
func fmtpParam(fmtp, key string) string {
	for _, kv := range strings.Split(fmtp, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

// chooseH264 picks the offered H.264 format (packetization-mode 1) that best
// fits a stream whose SPS is sps: the same profile if offered, else a
// profile whose decoders can decode the stream (e.g. High for a Constrained
// Baseline source), else any H.264 (browsers decode every profile they
// offer any of). It returns the fmtp line to answer with.
func chooseH264(codecs []offeredCodec, sps []byte) (string, error) {
	var names []string
	var cands []offeredCodec
	for _, c := range codecs {
		if !slices.Contains(names, c.name) {
			names = append(names, c.name)
		}
		if strings.EqualFold(c.name, "H264") && fmtpParam(c.fmtp, "packetization-mode") == "1" {
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
		if p, err := hex.DecodeString(fmtpParam(c.fmtp, "profile-level-id")); err == nil && len(p) == 3 {
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
	return best.fmtp, nil
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

// hasOpus reports whether the offer can receive Opus audio.
func hasOpus(codecs []offeredCodec) bool {
	return slices.ContainsFunc(codecs, func(c offeredCodec) bool { return strings.EqualFold(c.name, "opus") })
}

func describeCodecs(codecs []offeredCodec) string {
	var s []string
	for _, c := range codecs {
		s = append(s, c.name)
	}
	return fmt.Sprint(s)
}
