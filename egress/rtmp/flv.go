package rtmp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/wishbridge/bridge/internal/rtmpwire"
)

// FLV tag bodies as RTMP audio (8), video (9) and data (18) messages carry
// them: Adobe "Video File Format Specification" v10.1, annex E.4.2.1
// (AUDIODATA), E.4.3.1 (VIDEODATA) and E.5 (onMetaData); the AVC decoder
// configuration record is ISO 14496-15 5.2.4.1.

// FLV codec ids.
const (
	flvCodecAVC = 7
	flvSoundAAC = 10
)

// avcRecord builds an AVCDecoderConfigurationRecord with one SPS and one
// PPS and 4-byte NAL unit lengths. For the High profiles it adds the
// chroma format and bit depth fields (from the SPS) that ISO 14496-15
// requires there.
func avcRecord(sps, pps []byte) ([]byte, error) {
	if len(sps) < 4 || len(pps) < 1 {
		return nil, fmt.Errorf("SPS (%d bytes) or PPS (%d bytes) too short for an AVC decoder configuration record", len(sps), len(pps))
	}
	if len(sps) > math.MaxUint16 || len(pps) > math.MaxUint16 {
		return nil, errors.New("SPS or PPS longer than 65535 bytes")
	}
	b := make([]byte, 0, 11+len(sps)+len(pps)+4)
	b = append(b, 1, sps[1], sps[2], sps[3], 0xfc|3, 0xe0|1)
	b = binary.BigEndian.AppendUint16(b, uint16(len(sps)))
	b = append(b, sps...)
	b = append(b, 1)
	b = binary.BigEndian.AppendUint16(b, uint16(len(pps)))
	b = append(b, pps...)
	switch sps[1] {
	case 100, 110, 122, 144:
		var s h264.SPS
		chroma, lumaBits, chromaBits := uint32(1), uint32(0), uint32(0)
		if err := s.Unmarshal(sps); err == nil {
			chroma, lumaBits, chromaBits = s.ChromaFormatIdc, s.BitDepthLumaMinus8, s.BitDepthChromaMinus8
		}
		b = append(b, 0xfc|byte(chroma&3), 0xf8|byte(lumaBits&7), 0xf8|byte(chromaBits&7), 0) // no SPS extensions
	}
	return b, nil
}

// avcSequenceHeader is the video tag carrying the decoder configuration.
func avcSequenceHeader(sps, pps []byte) ([]byte, error) {
	rec, err := avcRecord(sps, pps)
	if err != nil {
		return nil, err
	}
	return append([]byte{1<<4 | flvCodecAVC, 0, 0, 0, 0}, rec...), nil
}

// appendVideoTag appends the video tag of one access unit: frame type (1
// keyframe, 2 inter frame), AVCPacketType 1, the composition time (PTS -
// DTS in ms, a signed 24-bit field) and the NAL units, each behind its
// 4-byte length.
func appendVideoTag(b []byte, key bool, cts int32, nalus [][]byte) []byte {
	frameType := byte(2)
	if key {
		frameType = 1
	}
	b = append(b, frameType<<4|flvCodecAVC, 1, byte(cts>>16), byte(cts>>8), byte(cts))
	for _, n := range nalus {
		b = binary.BigEndian.AppendUint32(b, uint32(len(n)))
		b = append(b, n...)
	}
	return b
}

// aacTagHeader is the first byte of every AAC audio tag: sound format 10,
// and (ignored by AAC decoders, fixed by the specification for AAC) 44 kHz,
// 16-bit, stereo.
const aacTagHeader = flvSoundAAC<<4 | 3<<2 | 1<<1 | 1

// aacSequenceHeader is the audio tag carrying the AudioSpecificConfig.
func aacSequenceHeader(asc []byte) []byte {
	return append([]byte{aacTagHeader, 0}, asc...)
}

// appendAudioTag appends the audio tag of one raw AAC frame.
func appendAudioTag(b []byte, frame []byte) []byte {
	return append(append(b, aacTagHeader, 1), frame...)
}

// streamInfo is what onMetaData announces.
type streamInfo struct {
	hasVideo      bool
	width, height int
	fps           float64 // 0: unknown
	hasAudio      bool
	sampleRate    int
	channels      int
	aacBitrate    int // kbit/s; 0: unknown
}

// videoInfo fills the video fields of info from an SPS.
func (info *streamInfo) videoInfo(sps []byte) {
	info.hasVideo = true
	var s h264.SPS
	if err := s.Unmarshal(sps); err != nil {
		return
	}
	info.width, info.height = s.Width(), s.Height()
	if fps := s.FPS(); fps > 0 && fps < 1000 {
		info.fps = fps
	}
}

// audioInfo fills the audio fields of info from an AudioSpecificConfig.
func (info *streamInfo) audioInfo(asc []byte) {
	info.hasAudio = true
	var c mpeg4audio.AudioSpecificConfig
	if err := c.Unmarshal(asc); err != nil {
		return
	}
	info.sampleRate = c.SampleRate
	switch {
	case c.ChannelConfig >= 1 && c.ChannelConfig <= 6:
		info.channels = int(c.ChannelConfig)
	case c.ChannelConfig == 7:
		info.channels = 8
	}
}

// metadata builds the data message announcing the stream. A publisher
// sends it as "@setDataFrame", "onMetaData", {...} (the server stores it
// and hands it to players); a server sends players "onMetaData", {...}.
func metadata(setDataFrame bool, info streamInfo) []byte {
	props := rtmpwire.ECMAArray{{Key: "duration", Value: 0.0}}
	if info.hasVideo {
		if info.width > 0 {
			props = append(props, rtmpwire.KV{Key: "width", Value: float64(info.width)}, rtmpwire.KV{Key: "height", Value: float64(info.height)})
		}
		if info.fps > 0 {
			props = append(props, rtmpwire.KV{Key: "framerate", Value: info.fps})
		}
		props = append(props, rtmpwire.KV{Key: "videocodecid", Value: float64(flvCodecAVC)})
	}
	if info.hasAudio {
		if info.aacBitrate > 0 {
			props = append(props, rtmpwire.KV{Key: "audiodatarate", Value: float64(info.aacBitrate)})
		}
		if info.sampleRate > 0 {
			props = append(props, rtmpwire.KV{Key: "audiosamplerate", Value: float64(info.sampleRate)})
		}
		props = append(props, rtmpwire.KV{Key: "audiosamplesize", Value: 16.0})
		if info.channels > 0 {
			props = append(props, rtmpwire.KV{Key: "stereo", Value: info.channels >= 2}, rtmpwire.KV{Key: "audiochannels", Value: float64(info.channels)})
		}
		props = append(props, rtmpwire.KV{Key: "audiocodecid", Value: float64(flvSoundAAC)})
	}
	props = append(props, rtmpwire.KV{Key: "encoder", Value: "wishbridge"})
	var b []byte
	if setDataFrame {
		b = rtmpwire.AppendAMF0(b, "@setDataFrame")
	}
	return rtmpwire.AppendAMF0(b, "onMetaData", props)
}
