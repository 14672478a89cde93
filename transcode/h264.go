// Package transcode is the optional stage between ingest and egress:
// normalising codecs into the hub's canonical form, RTP packetization once
// per track, and (through FFmpeg) real transcoding where the two ends share
// no codec.
package transcode

import (
	"bytes"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// H264Normalizer puts H.264 access units into the hub's canonical form: no
// access unit delimiters, no filler, parameter sets taken out of the stream
// and put back, current, in front of every IDR. It remembers in-band
// parameter set changes. One per track, used by the publisher's goroutine.
type H264Normalizer struct {
	sps, pps []byte
}

// NewH264Normalizer returns a normalizer that starts from the given
// parameter sets (either may be nil if they only come in-band).
func NewH264Normalizer(sps, pps []byte) *H264Normalizer {
	n := &H264Normalizer{}
	n.SetParams(sps, pps)
	return n
}

// SetParams replaces the current parameter sets (e.g. from a new FLV AVC
// sequence header). Nil or empty arguments leave the current value
// unchanged.
func (n *H264Normalizer) SetParams(sps, pps []byte) {
	if len(sps) != 0 {
		n.sps = bytes.Clone(sps)
	}
	if len(pps) != 0 {
		n.pps = bytes.Clone(pps)
	}
}

// Params returns the current parameter sets.
func (n *H264Normalizer) Params() (sps, pps []byte) { return n.sps, n.pps }

// Normalize returns the canonical form of au and whether it is an IDR. The
// result is nil when nothing decodable remains (e.g. an AU holding only
// parameter sets or delimiters). It does not modify au's NAL units.
func (n *H264Normalizer) Normalize(au [][]byte) (out [][]byte, idr bool) {
	// Two slots in front for the parameter sets, so an IDR costs no second
	// allocation.
	out = make([][]byte, 2, len(au)+2)
	for _, nalu := range au {
		if len(nalu) == 0 {
			continue
		}
		switch h264.NALUType(nalu[0] & 0x1f) {
		case h264.NALUTypeSPS:
			if !bytes.Equal(nalu, n.sps) {
				n.sps = bytes.Clone(nalu)
			}
			continue
		case h264.NALUTypePPS:
			if !bytes.Equal(nalu, n.pps) {
				n.pps = bytes.Clone(nalu)
			}
			continue
		case h264.NALUTypeAccessUnitDelimiter, h264.NALUTypeFillerData:
			continue
		case h264.NALUTypeIDR:
			idr = true
		}
		out = append(out, nalu)
	}
	if len(out) == 2 {
		return nil, false
	}
	if idr && n.sps != nil && n.pps != nil {
		out[0], out[1] = n.sps, n.pps
		return out, true
	}
	return out[2:], idr
}
