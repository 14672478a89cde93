package media

// H265 is an H.265 (HEVC) video codec. VPS, SPS and PPS are the parameter
// sets known when the track was declared; units carry the current ones in
// front of every random access point (IRAP), as for H264. Units of an H265
// track hold an access unit in Unit.NALUs (NAL units without start codes,
// no access unit delimiters).
type H265 struct {
	VPS []byte
	SPS []byte
	PPS []byte
}

// Name implements Codec.
func (H265) Name() string { return "H265" }

// ClockRate implements Codec.
func (H265) ClockRate() int { return 90000 }

func (H265) codec() {}

// isH265 reports whether c is H265 (for Track.IsVideo).
func isH265(c Codec) bool {
	_, ok := c.(H265)
	return ok
}
