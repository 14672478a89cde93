//go:build !cgo

package av

import "log/slog"

// Available reports whether FFmpeg is linked in. It is false in this build.
func Available() bool { return false }

// SetLogLevel sets FFmpeg's log level. It does nothing in this build.
func SetLogLevel(LogLevel) {}

// Decoder decodes AAC or Opus packets. In this build it cannot be created.
type Decoder struct{}

// NewDecoder returns ErrUnavailable in this build.
func NewDecoder(codec string, extradata []byte, sampleRate, channels int) (*Decoder, error) {
	return nil, ErrUnavailable
}

// Decode returns ErrUnavailable in this build.
func (d *Decoder) Decode(pkt []byte, pts int64) ([]Frame, error) { return nil, ErrUnavailable }

// Close does nothing in this build.
func (d *Decoder) Close() {}

// Encoder encodes PCM into AAC or Opus packets. In this build it cannot be
// created.
type Encoder struct{}

// NewEncoder returns ErrUnavailable in this build.
func NewEncoder(codec string, sampleRate, channels, bitrate int) (*Encoder, error) {
	return nil, ErrUnavailable
}

// Extradata returns nil in this build.
func (e *Encoder) Extradata() []byte { return nil }

// SampleRate returns 0 in this build.
func (e *Encoder) SampleRate() int { return 0 }

// Channels returns 0 in this build.
func (e *Encoder) Channels() int { return 0 }

// FrameSize returns 0 in this build.
func (e *Encoder) FrameSize() int { return 0 }

// Delay returns 0 in this build.
func (e *Encoder) Delay() int { return 0 }

// Encode returns ErrUnavailable in this build.
func (e *Encoder) Encode(f Frame) ([]Packet, error) { return nil, ErrUnavailable }

// Restarts returns 0 in this build.
func (e *Encoder) Restarts() int { return 0 }

// Flush returns ErrUnavailable in this build.
func (e *Encoder) Flush() ([]Packet, error) { return nil, ErrUnavailable }

// Close does nothing in this build.
func (e *Encoder) Close() {}

// SetLogger does nothing in this build: there is no FFmpeg to log.
func SetLogger(*slog.Logger) {}
