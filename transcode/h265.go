package transcode

import (
	"bytes"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
)

// H265Normalizer is H264Normalizer's counterpart for H.265: it puts access
// units into the hub's canonical form (media.H265): no access unit
// delimiters, no filler, VPS/SPS/PPS taken out of the stream and put back,
// current, in front of every IRAP picture. It remembers in-band parameter
// set changes. The zero value starts with no parameter sets (H.265 only
// comes in-band: MPEG-TS). One per track, used by the publisher's
// goroutine.
type H265Normalizer struct {
	vps, sps, pps []byte
}

// Params returns the current parameter sets; each is nil until it has
// been seen.
func (n *H265Normalizer) Params() (vps, sps, pps []byte) { return n.vps, n.sps, n.pps }

// Normalize returns the canonical form of au and whether it is an IRAP
// (BLA, IDR or CRA; ITU-T H.265 table 7-1). The result is nil when nothing
// decodable remains (e.g. an AU holding only parameter sets or
// delimiters). An IRAP gets the parameter sets in front only once all
// three are known. It does not modify au's NAL units.
func (n *H265Normalizer) Normalize(au [][]byte) (out [][]byte, irap bool) {
	// Three slots in front for the parameter sets, so an IRAP costs no
	// second allocation.
	out = make([][]byte, 3, len(au)+3)
	for _, nalu := range au {
		if len(nalu) < 2 { // the NAL unit header is two bytes
			continue
		}
		switch typ := h265.NALUType(nalu[0] >> 1 & 0x3f); {
		case typ == h265.NALUType_VPS_NUT:
			n.vps = keepParam(n.vps, nalu)
			continue
		case typ == h265.NALUType_SPS_NUT:
			n.sps = keepParam(n.sps, nalu)
			continue
		case typ == h265.NALUType_PPS_NUT:
			n.pps = keepParam(n.pps, nalu)
			continue
		case typ == h265.NALUType_AUD_NUT, typ == h265.NALUType_FD_NUT:
			continue
		case typ >= h265.NALUType_BLA_W_LP && typ <= h265.NALUType_RSV_IRAP_VCL23:
			irap = true
		}
		out = append(out, nalu)
	}
	if len(out) == 3 {
		return nil, false
	}
	if irap && n.vps != nil && n.sps != nil && n.pps != nil {
		out[0], out[1], out[2] = n.vps, n.sps, n.pps
		return out, true
	}
	return out[3:], irap
}

// keepParam returns cur, or a copy of nalu if it differs: the publisher may
// reuse nalu's buffer.
func keepParam(cur, nalu []byte) []byte {
	if bytes.Equal(cur, nalu) {
		return cur
	}
	return bytes.Clone(nalu)
}
