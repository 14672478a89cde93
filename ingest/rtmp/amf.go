package rtmp

import (
	"fmt"

	"github.com/wishbridge/bridge/internal/rtmpwire"
)

// metadata is what the bridge takes from a publisher's onMetaData: which
// elementary streams it announces. Anything else is ignored.
type metadata struct {
	// HasVideo and HasAudio are true when videocodecid / audiocodecid is
	// present.
	HasVideo, HasAudio bool
	// VideoCodec and AudioCodec are the announced codec ids as sent (a
	// number such as "7" or a FourCC such as "avc1"), for logs.
	VideoCodec, AudioCodec string
	// AudioAAC is true when audiocodecid announces AAC (10 or "mp4a").
	AudioAAC bool
}

// parseMetadata parses the payload of an @setDataFrame data message as
// handed over by go-rtmp: the AMF0 string "onMetaData" followed by an ECMA
// array (or object) of properties. The AMF0 decoder is rtmpwire's, bounded
// in depth, so untrusted metadata cannot recurse without bound.
func parseMetadata(b []byte) (metadata, error) {
	// What follows the properties is not looked at (an error there
	// included), only the first two values matter.
	vals, err := rtmpwire.DecodeAMF0(b)
	if err == nil {
		err = rtmpwire.ErrAMFTruncated // for fewer than two values
	}
	if len(vals) == 0 {
		return metadata{}, fmt.Errorf("metadata name: %w", err)
	}
	if s, ok := vals[0].(string); !ok || s != "onMetaData" {
		return metadata{}, fmt.Errorf("data frame is %v, expected onMetaData", vals[0])
	}
	if len(vals) < 2 {
		return metadata{}, fmt.Errorf("onMetaData: %w", err)
	}
	var m metadata
	props, _ := vals[1].(map[string]any)
	if v, ok := props["videocodecid"]; ok {
		m.HasVideo = true
		m.VideoCodec = rtmpwire.FormatAMF0(v)
	}
	if v, ok := props["audiocodecid"]; ok {
		m.HasAudio = true
		m.AudioCodec = rtmpwire.FormatAMF0(v)
		m.AudioAAC = m.AudioCodec == "10" || m.AudioCodec == "mp4a"
	}
	return m, nil
}
