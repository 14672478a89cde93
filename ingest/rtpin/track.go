package rtpin

import (
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
)

// remoteTrack is what the receive loops use of a *webrtc.TrackRemote: its
// packets, its SSRC and its negotiated codec. OnTrack hands them pion's
// track; FuzzReceive feeds them packets without a network.
type remoteTrack interface {
	Read(b []byte) (n int, attributes interceptor.Attributes, err error)
	SSRC() webrtc.SSRC
	Codec() webrtc.RTPCodecParameters
}

var _ remoteTrack = (*webrtc.TrackRemote)(nil)
