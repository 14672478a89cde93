// Package av is a thin cgo layer over FFmpeg's libavcodec and libswresample
// for the one real transcode the bridge needs: audio between AAC and Opus.
//
// A Decoder turns AAC or Opus packets into interleaved float32 PCM; an
// Encoder turns such PCM (any rate, any channel count) into AAC-LC or Opus
// packets, resampling and remixing as needed. Both work on one track and are
// not safe for concurrent use: use one per track, from one goroutine.
//
// # Timestamps
//
// Every timestamp in this package counts samples: Decode's pts argument at
// the sample rate given to NewDecoder, Frame.PTS at Frame.SampleRate, and
// Packet.PTS at the encoder's output rate. Encoder packet timestamps are
// derived from the input frames' timestamps, not from a sample counter, so a
// gap in the source stays a gap (see Encoder.Encode).
//
// # Memory
//
// All FFmpeg state lives in C memory owned by the Decoder or Encoder and is
// freed by Close (which is idempotent, and also runs, as a safety net, when
// an unclosed value is garbage collected). Slices returned by this package
// are Go memory owned by the caller; slices passed in are only read during
// the call.
//
// Built without cgo (CGO_ENABLED=0) the package keeps its API, but
// Available reports false and the constructors return ErrUnavailable.
package av

import (
	"errors"
	"math"
	"math/bits"
)

// ErrUnavailable is returned by the constructors when the binary was built
// without FFmpeg.
var ErrUnavailable = errors.New("av: this build has no FFmpeg (built without cgo)")

// Frame is a block of decoded audio: interleaved float32 samples, nominally
// in [-1, 1].
type Frame struct {
	// PCM holds Samples*Channels values, channel-interleaved
	// (L R L R ... for stereo). It may be longer; the rest is ignored.
	PCM []float32
	// Samples is the number of samples per channel.
	Samples int
	// PTS is the presentation time of the first sample, counted in samples
	// at SampleRate.
	PTS        int64
	SampleRate int
	Channels   int
}

// Packet is one encoded audio frame.
type Packet struct {
	// Data is the raw codec frame: an Opus packet, or a raw AAC frame
	// without ADTS header. The caller owns it.
	Data []byte
	// PTS counts samples at the encoder's output rate. It is the time of
	// the packet's first decoded sample when the decoder does not trim the
	// encoder's priming samples (see Encoder.Delay): the first packet of a
	// stream has PTS = first input PTS - Delay(), which may be negative.
	PTS int64
	// Duration is the number of samples the packet decodes to (FrameSize,
	// or fewer for the last packet after Flush).
	Duration int
}

// LogLevel is FFmpeg's log verbosity, process-wide.
type LogLevel int

// FFmpeg log levels (the values of AV_LOG_*).
const (
	LogQuiet   LogLevel = -8
	LogPanic   LogLevel = 0
	LogFatal   LogLevel = 8
	LogError   LogLevel = 16
	LogWarning LogLevel = 24
	LogInfo    LogLevel = 32
	LogVerbose LogLevel = 40
	LogDebug   LogLevel = 48
)

// Encoder timeline policy; see Encoder.Encode.
const (
	// syncToleranceMs is how far (in ms) the input timestamps may drift
	// from the samples actually consumed before the encoder corrects:
	// timestamp jitter below this is ignored.
	syncToleranceMs = 10
	// maxGapFillMs is the largest forward gap filled with silence, which
	// keeps packets contiguous across a few lost or late frames (a 20 ms
	// Opus or 21 ms AAC frame each). Silence costs as much to encode and
	// send as sound: a gap of g ms before an input frame of f ms turns it
	// into (g+f)/f frames' worth of packets, which is what a publisher
	// controls with its timestamps. At 1 s, AAC frames stamped 990 ms apart
	// came out as 46 times the Opus packets, and about 33 times the CPU,
	// for every viewer; 100 ms bounds that to about 6 times for the worst
	// gap filled. A larger gap restarts the output timeline at the new
	// timestamp (a discontinuity, counted by Encoder.Restarts).
	maxGapFillMs = 100
	// maxOverlapMs is the largest backward step corrected in place, by
	// dropping the overlapped input (which costs nothing); a larger one
	// restarts the timeline.
	maxOverlapMs = 1000
)

// rescale converts v samples at rate from (> 0) to samples at rate to (> 0),
// rounding to the nearest, halves away from zero (as av_rescale does). It
// saturates at ±math.MaxInt64 instead of overflowing.
func rescale(v int64, from, to int) int64 {
	if from == to {
		return v
	}
	a := uint64(v)
	if v < 0 {
		a = -a
	}
	hi, lo := bits.Mul64(a, uint64(to))
	lo, carry := bits.Add64(lo, uint64(from/2), 0)
	hi += carry
	q := uint64(math.MaxInt64)
	if hi < uint64(from) {
		q, _ = bits.Div64(hi, lo, uint64(from))
		q = min(q, math.MaxInt64)
	}
	if v < 0 {
		return -int64(q)
	}
	return int64(q)
}
