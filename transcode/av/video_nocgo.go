//go:build !cgo

package av

// VideoAvailable reports whether H.264 can be re-encoded. It is false in
// this build.
func VideoAvailable() bool { return false }

// picture stands for a decoded picture; this build has none.
type picture struct{}

func (p *picture) released() bool { return true }

// Release does nothing in this build but forget the picture.
func (f *VideoFrame) Release() { f.pic = nil }

func newTestFrame(w, h int, pts int64, seed int) (VideoFrame, error) {
	return VideoFrame{}, ErrUnavailable
}

func frameLuma(f VideoFrame) ([]byte, error) { return nil, ErrUnavailable }

// VideoDecoder decodes H.264. In this build it cannot be created.
type VideoDecoder struct{}

// NewVideoDecoder returns ErrUnavailable in this build.
func NewVideoDecoder(sps, pps []byte) (*VideoDecoder, error) { return nil, ErrUnavailable }

// Decode returns ErrUnavailable in this build.
func (d *VideoDecoder) Decode(au [][]byte, pts, dts int64) ([]VideoFrame, error) {
	return nil, ErrUnavailable
}

// Flush returns ErrUnavailable in this build.
func (d *VideoDecoder) Flush() ([]VideoFrame, error) { return nil, ErrUnavailable }

// Close does nothing in this build.
func (d *VideoDecoder) Close() {}

// VideoEncoder encodes H.264 with libx264. In this build it cannot be
// created.
type VideoEncoder struct{}

// NewVideoEncoder returns ErrUnavailable in this build.
func NewVideoEncoder(width, height int, fps float64, bitrate int) (*VideoEncoder, error) {
	return nil, ErrUnavailable
}

// Width returns 0 in this build.
func (e *VideoEncoder) Width() int { return 0 }

// Height returns 0 in this build.
func (e *VideoEncoder) Height() int { return 0 }

// Bitrate returns 0 in this build.
func (e *VideoEncoder) Bitrate() int { return 0 }

// SetBitrate does nothing in this build.
func (e *VideoEncoder) SetBitrate(bitrate int) {}

// ForceKeyframe does nothing in this build.
func (e *VideoEncoder) ForceKeyframe() {}

// Encode returns ErrUnavailable in this build.
func (e *VideoEncoder) Encode(f VideoFrame) ([]VideoPacket, error) { return nil, ErrUnavailable }

// Flush returns ErrUnavailable in this build.
func (e *VideoEncoder) Flush() ([]VideoPacket, error) { return nil, ErrUnavailable }

// Close does nothing in this build.
func (e *VideoEncoder) Close() {}
