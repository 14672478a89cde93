package media

import (
	"errors"
	"fmt"
)

// ErrTooManyReaders is wrapped by CheckReaders' refusal; callers answer it
// as a server-side limit (WHEP 503, RTMP NetStream.Play.Failed, an SRT
// overload reject).
var ErrTooManyReaders = errors.New("stream is at its reader limit")

// CheckReaders is the one per-stream reader limit every read protocol
// asks before it attaches a reader: it refuses when the stream's attached
// readers plus joining (readers the caller has admitted but not attached
// yet, e.g. WHEP viewers still connecting) reach max. max <= 0 means no
// limit. Every attached reader counts, the bridge's own (forwards, shared
// transcoder views) too: each costs the same fan-out. It only reads, so
// readers admitted at the same time can overshoot max by how many were
// admitted at once; a caller that admits many at once counts them in
// joining.
func (s *Stream) CheckReaders(max, joining int) error {
	if max <= 0 {
		return nil
	}
	if n := s.Readers() + joining; n >= max {
		return fmt.Errorf("stream %q has %d readers, the limit is %d: %w", s.path, n, max, ErrTooManyReaders)
	}
	return nil
}
