package rtmp

import (
	"errors"
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
)

// FLV tag bodies as carried in RTMP video (type 9) and audio (type 8)
// messages. Specification: Adobe "Video File Format Specification" v10.1,
// annex E.4.2.1 (AUDIODATA) and E.4.3.1 (VIDEODATA); the AVC decoder
// configuration record is ISO 14496-15 5.2.4.1. Every parser here takes a
// byte slice the caller owns, returns sub-slices of it (no copies), and
// returns an error, never panics, on short or malformed input.

// FLV video frame types (VIDEODATA FrameType, the high nibble of byte 0).
const (
	frameTypeKey     = 1
	frameTypeInter   = 2
	frameTypeCommand = 5 // video info/command frame: no picture
)

// codecIDAVC is the FLV VIDEODATA CodecID of H.264.
const codecIDAVC = 7

// AVCPacketType values.
const (
	avcPacketSequenceHeader = 0
	avcPacketNALU           = 1
	avcPacketEndOfSequence  = 2
)

// soundFormatAAC is the FLV AUDIODATA SoundFormat of AAC.
const soundFormatAAC = 10

// AACPacketType values.
const (
	aacPacketSequenceHeader = 0
	aacPacketRaw            = 1
)

// errUnsupportedCodec is wrapped by the errors for codecs (and codec
// signalling) the bridge does not take.
var errUnsupportedCodec = errors.New("unsupported codec")

// videoTag is the header of an FLV VIDEODATA tag carrying H.264, plus its
// body.
type videoTag struct {
	FrameType int // 1 keyframe, 2 inter, 3 disposable, 4 generated key, 5 command
	// PacketType is the AVCPacketType: 0 sequence header, 1 NAL units, 2
	// end of sequence. Zero for command frames.
	PacketType int
	// CompositionTime is PTS - DTS in milliseconds (a signed 24-bit field;
	// zero unless PacketType is 1).
	CompositionTime int32
	// Data is the AVCDecoderConfigurationRecord (PacketType 0) or the
	// length-prefixed NAL units (PacketType 1). It aliases the input.
	Data []byte
}

// videoCodecName names an FLV video CodecID for error messages.
func videoCodecName(id int) string {
	switch id {
	case 1:
		return "JPEG"
	case 2:
		return "Sorenson H.263"
	case 3:
		return "Screen video"
	case 4:
		return "On2 VP6"
	case 5:
		return "On2 VP6 with alpha"
	case 6:
		return "Screen video v2"
	case 7:
		return "H.264"
	case 12:
		return "H.265"
	default:
		return "unknown"
	}
}

// parseVideoTag parses an FLV VIDEODATA tag body. Only H.264 (CodecID 7) is
// accepted; other codecs and Enhanced RTMP (the IsExHeader bit) give an
// error wrapping errUnsupportedCodec.
func parseVideoTag(b []byte) (videoTag, error) {
	if len(b) < 1 {
		return videoTag{}, errors.New("video tag is empty")
	}
	if b[0]&0x80 != 0 {
		// Enhanced RTMP: UB[1] IsExHeader, UB[3] FrameType, UB[4] PacketType,
		// then a FourCC.
		fourCC := "????"
		if len(b) >= 5 {
			fourCC = printableFourCC(b[1:5])
		}
		return videoTag{}, fmt.Errorf("%w: enhanced RTMP video (FourCC %q) is not supported yet; send H.264 in legacy FLV (codec id 7)", errUnsupportedCodec, fourCC)
	}
	t := videoTag{FrameType: int(b[0] >> 4)}
	codec := int(b[0] & 0x0f)
	if t.FrameType == frameTypeCommand {
		// A video info/command frame carries one byte of command and no
		// picture, whatever the codec id says.
		return t, nil
	}
	if codec != codecIDAVC {
		return videoTag{}, fmt.Errorf("%w: video codec %s (FLV codec id %d) is not supported; only H.264 (codec id 7) is", errUnsupportedCodec, videoCodecName(codec), codec)
	}
	if t.FrameType < 1 || t.FrameType > 4 {
		return videoTag{}, fmt.Errorf("invalid video frame type %d, expected 1 to 5", t.FrameType)
	}
	if len(b) < 5 {
		return videoTag{}, fmt.Errorf("AVC video tag is %d bytes, shorter than its 5-byte header", len(b))
	}
	t.PacketType = int(b[1])
	switch t.PacketType {
	case avcPacketSequenceHeader, avcPacketNALU, avcPacketEndOfSequence:
	default:
		return videoTag{}, fmt.Errorf("invalid AVCPacketType %d, expected 0, 1 or 2", t.PacketType)
	}
	// SI24, big endian: sign-extend from bit 23.
	t.CompositionTime = int32(uint32(b[2])<<24|uint32(b[3])<<16|uint32(b[4])<<8) >> 8
	if t.PacketType != avcPacketNALU {
		t.CompositionTime = 0
	}
	t.Data = b[5:]
	return t, nil
}

func printableFourCC(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		out[i] = c
	}
	return string(out)
}

// avcConfig is what the bridge needs from an AVCDecoderConfigurationRecord.
type avcConfig struct {
	Profile, Level byte
	// LengthSize is the size in bytes (1, 2, 3 or 4) of the length prefix of
	// every NAL unit in the stream's NALU tags.
	LengthSize int
	// SPS and PPS are the first parameter sets of the record (aliasing the
	// input); further ones are rare in live streams and ignored.
	SPS, PPS []byte
}

// parseAVCConfig parses an AVCDecoderConfigurationRecord (ISO 14496-15
// 5.2.4.1.1). The record must hold at least one SPS and one PPS; reserved
// bits are not checked (encoders get them wrong) and trailing bytes (the
// high-profile chroma/bit-depth extension) are ignored.
func parseAVCConfig(b []byte) (avcConfig, error) {
	if len(b) < 7 {
		return avcConfig{}, fmt.Errorf("AVC decoder configuration record is %d bytes, minimum is 7", len(b))
	}
	if b[0] != 1 {
		return avcConfig{}, fmt.Errorf("AVC decoder configuration record version is %d, expected 1", b[0])
	}
	c := avcConfig{
		Profile:    b[1],
		Level:      b[3],
		LengthSize: int(b[4]&0x03) + 1,
	}
	pos := 5
	numSPS := int(b[pos] & 0x1f)
	pos++
	if numSPS == 0 {
		return avcConfig{}, errors.New("AVC decoder configuration record has no SPS")
	}
	for i := range numSPS {
		nalu, next, err := readParamSet(b, pos, "SPS", i)
		if err != nil {
			return avcConfig{}, err
		}
		if typ := h264.NALUType(nalu[0] & 0x1f); typ != h264.NALUTypeSPS {
			return avcConfig{}, fmt.Errorf("AVC decoder configuration record: SPS %d has NAL unit type %d, expected 7", i, typ)
		}
		if c.SPS == nil {
			c.SPS = nalu
		}
		pos = next
	}
	if pos >= len(b) {
		return avcConfig{}, errors.New("AVC decoder configuration record is truncated before the PPS count")
	}
	numPPS := int(b[pos])
	pos++
	if numPPS == 0 {
		return avcConfig{}, errors.New("AVC decoder configuration record has no PPS")
	}
	for i := range numPPS {
		nalu, next, err := readParamSet(b, pos, "PPS", i)
		if err != nil {
			return avcConfig{}, err
		}
		if typ := h264.NALUType(nalu[0] & 0x1f); typ != h264.NALUTypePPS {
			return avcConfig{}, fmt.Errorf("AVC decoder configuration record: PPS %d has NAL unit type %d, expected 8", i, typ)
		}
		if c.PPS == nil {
			c.PPS = nalu
		}
		pos = next
	}
	return c, nil
}

// readParamSet reads one 16-bit-length-prefixed parameter set at pos.
func readParamSet(b []byte, pos int, what string, i int) (nalu []byte, next int, err error) {
	if len(b)-pos < 2 {
		return nil, 0, fmt.Errorf("AVC decoder configuration record is truncated at the length of %s %d", what, i)
	}
	n := int(b[pos])<<8 | int(b[pos+1])
	pos += 2
	if n == 0 {
		return nil, 0, fmt.Errorf("AVC decoder configuration record: %s %d is empty", what, i)
	}
	if len(b)-pos < n {
		return nil, 0, fmt.Errorf("AVC decoder configuration record: %s %d is %d bytes but only %d remain", what, i, n, len(b)-pos)
	}
	return b[pos : pos+n], pos + n, nil
}

// splitNALUs splits the body of an AVC NALU tag into NAL units, each
// preceded by a big-endian length of lengthSize bytes (from the decoder
// configuration record). Empty NAL units are skipped. The limits are
// mediacommon's h264.MaxNALUsPerAccessUnit and h264.MaxAccessUnitSize.
func splitNALUs(b []byte, lengthSize int) ([][]byte, error) {
	if lengthSize < 1 || lengthSize > 4 {
		return nil, fmt.Errorf("NAL unit length size is %d, expected 1 to 4", lengthSize)
	}
	var out [][]byte
	size := 0
	for pos := 0; pos < len(b); {
		if len(b)-pos < lengthSize {
			return nil, fmt.Errorf("NAL unit length at byte %d is truncated (%d of %d bytes)", pos, len(b)-pos, lengthSize)
		}
		n := 0
		for _, c := range b[pos : pos+lengthSize] {
			n = n<<8 | int(c)
		}
		pos += lengthSize
		if n == 0 {
			continue
		}
		if len(b)-pos < n {
			return nil, fmt.Errorf("NAL unit at byte %d is %d bytes but only %d remain", pos, n, len(b)-pos)
		}
		size += n
		if size > h264.MaxAccessUnitSize {
			return nil, fmt.Errorf("access unit size (%d) is too big, maximum is %d", size, h264.MaxAccessUnitSize)
		}
		if len(out) == h264.MaxNALUsPerAccessUnit {
			return nil, fmt.Errorf("NALU count (%d) exceeds maximum allowed (%d)", len(out)+1, h264.MaxNALUsPerAccessUnit)
		}
		out = append(out, b[pos:pos+n])
		pos += n
	}
	return out, nil
}

// audioTag is an FLV AUDIODATA tag.
type audioTag struct {
	// SoundFormat: 10 is AAC; 2 MP3, 0/3 PCM, 11 Speex, 9 the Enhanced RTMP
	// ex-header, ...
	SoundFormat int
	// PacketType is the AACPacketType (AAC only): 0 AudioSpecificConfig,
	// 1 raw frame.
	PacketType int
	// Data is the AudioSpecificConfig or raw AAC frame for AAC, the body
	// after the first byte otherwise. It aliases the input.
	Data []byte
}

// soundFormatName names an FLV SoundFormat for log lines.
func soundFormatName(f int) string {
	switch f {
	case 0, 3:
		return "PCM"
	case 1:
		return "ADPCM"
	case 2:
		return "MP3"
	case 4, 5, 6:
		return "Nellymoser"
	case 7:
		return "G.711 A-law"
	case 8:
		return "G.711 mu-law"
	case 9:
		return "enhanced RTMP (ex-header) audio"
	case 10:
		return "AAC"
	case 11:
		return "Speex"
	case 14:
		return "MP3 8 kHz"
	case 15:
		return "device-specific"
	default:
		return "unknown"
	}
}

// parseAudioTag parses an FLV AUDIODATA tag body. Non-AAC formats are not
// an error: the caller decides what to do with SoundFormat.
func parseAudioTag(b []byte) (audioTag, error) {
	if len(b) < 1 {
		return audioTag{}, errors.New("audio tag is empty")
	}
	t := audioTag{SoundFormat: int(b[0] >> 4)}
	if t.SoundFormat != soundFormatAAC {
		t.Data = b[1:]
		return t, nil
	}
	if len(b) < 2 {
		return audioTag{}, errors.New("AAC audio tag is 1 byte, shorter than its 2-byte header")
	}
	t.PacketType = int(b[1])
	if t.PacketType != aacPacketSequenceHeader && t.PacketType != aacPacketRaw {
		return audioTag{}, fmt.Errorf("invalid AACPacketType %d, expected 0 or 1", t.PacketType)
	}
	t.Data = b[2:]
	if t.PacketType == aacPacketRaw && len(t.Data) > mpeg4audio.MaxAccessUnitSize {
		return audioTag{}, fmt.Errorf("access unit size (%d) is too big, maximum is %d", len(t.Data), mpeg4audio.MaxAccessUnitSize)
	}
	return t, nil
}

// aacConfig is a parsed AudioSpecificConfig.
type aacConfig struct {
	Raw        []byte // aliases the input
	SampleRate int
	Channels   int
}

// parseAACConfig parses an AudioSpecificConfig with mediacommon. Channel
// configuration 0 (layout in a program config element) is refused: the hub
// needs a channel count.
func parseAACConfig(b []byte) (aacConfig, error) {
	if len(b) == 0 {
		return aacConfig{}, errors.New("AudioSpecificConfig is empty")
	}
	var asc mpeg4audio.AudioSpecificConfig
	if err := asc.Unmarshal(b); err != nil {
		return aacConfig{}, fmt.Errorf("AudioSpecificConfig: %w", err)
	}
	var ch int
	switch {
	case asc.ChannelConfig >= 1 && asc.ChannelConfig <= 6:
		ch = int(asc.ChannelConfig)
	case asc.ChannelConfig == 7:
		ch = 8
	default:
		return aacConfig{}, fmt.Errorf("AudioSpecificConfig: channel configuration %d (layout in a program config element) is not supported", asc.ChannelConfig)
	}
	if asc.SampleRate <= 0 {
		return aacConfig{}, fmt.Errorf("AudioSpecificConfig: sample rate %d is invalid", asc.SampleRate)
	}
	return aacConfig{Raw: b, SampleRate: asc.SampleRate, Channels: ch}, nil
}
