package whip

import (
	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/media"
)

// publisher is everything this package asks of the hub, in one place so a
// change of the hub's publisher API touches only this file. It is the
// session's rtpin.Publication, which calls it with its mutex held, so the
// hub sees one publisher call at a time however many tracks the peer sends.
type publisher struct {
	pub *media.Publication
}

// publish claims path; the error wraps media.ErrPublisherExists when the
// path already has a publisher.
func publish(reg *media.Registry, path, who string) (*publisher, error) {
	p, err := reg.Publish(path, who)
	if err != nil {
		return nil, err
	}
	p.SetKind(access.KindWHIP)
	return &publisher{pub: p}, nil
}

// onKeyframeRequest makes readers' keyframe requests (for any track: only
// video has keyframes to ask for) call f, which must not block.
func (p *publisher) onKeyframeRequest(f func()) {
	p.pub.OnKeyframeRequest(func(int) { f() })
}

// SetTracks declares the tracks and makes the stream visible to readers.
func (p *publisher) SetTracks(tracks ...*media.Track) error { return p.pub.SetTracks(tracks...) }

// Write hands a unit of a declared track to the readers.
func (p *publisher) Write(u *media.Unit) { p.pub.Write(u) }

// close leaves the stream: it ends (readers get what is queued, then
// media.ErrStreamEnded) unless a publisher comes back within the grace
// period the registry gives the path.
func (p *publisher) close() { p.pub.Close() }
