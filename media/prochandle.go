package media

import "sync"

// A ProcessorHandle is one caller's reference to a processor of a stream,
// as Stream.AddProcessor returns it: the processor runs while a handle to
// it is held. A nil *ProcessorHandle (what AddProcessor returns with an
// error) is valid: Release does nothing and RequestKeyframe reports false,
// so `defer h.Release()` may come before the error check. Safe for
// concurrent use.
type ProcessorHandle struct {
	s    *Stream
	e    *procEntry
	once sync.Once
}

// Release drops the caller's reference; it may be called more than once.
// When the last reference is released the processor is removed, and
// Release returns only once no Write is running it (and after closing it,
// if it has a Close method): after that it is never called again.
func (h *ProcessorHandle) Release() {
	if h == nil {
		return
	}
	h.once.Do(func() { h.s.releaseProcessor(h.e) })
}

// A KeyframeRequester is a Processor whose output can start a new GOP on
// request, such as a re-encoder that forces an IDR: cheaper for a reader
// than a replay of the cached GOP. RequestKeyframe must be safe for
// concurrent use with Process; it only asks, the processor decides when.
type KeyframeRequester interface {
	Processor
	RequestKeyframe()
}

// RequestKeyframe asks the processor, as it runs now (a takeover makes it
// again for the new publisher's track), for a keyframe, and reports
// whether it takes such requests (see KeyframeRequester). It reports false
// once the processor was removed or after Release.
func (h *ProcessorHandle) RequestKeyframe() bool {
	if h == nil {
		return false
	}
	h.s.mu.Lock()
	p, removed := h.e.p, h.e.removed
	h.s.mu.Unlock()
	kr, ok := p.(KeyframeRequester)
	if removed || !ok {
		return false
	}
	kr.RequestKeyframe()
	return true
}
