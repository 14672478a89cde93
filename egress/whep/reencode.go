package whep

import (
	"net/http"

	"github.com/wishbridge/bridge/rtc"
)

// reencoder reserves the shared re-encoder of ot's track (see
// transcode.ReencodeSlots) and makes it ot's processor. When every slot
// of the process is taken by other streams (the only way it fails), the
// viewer is refused as "bframes: reject" would refuse it: 406, saying why
// and how to fix the encoder; one line per stream and interval is logged.
func (s *session) reencoder(ot *outTrack, why string) error {
	newProc, err := s.h.cfg.Reencoders.Reserve(s.stream, ot.src.ID, rtc.MaxRTPSize)
	if err != nil {
		if ok, n := s.h.reencodeRefusals.Allow(s.stream.Path()); ok {
			s.log.Warn("viewer refused: the stream has B-frames and every video re-encoder is in use (limits.video_reencoders)",
				"reason", why, "err", err, "suppressed", n)
		}
		return rtc.Errorf(http.StatusNotAcceptable,
			"stream %q has B-frames (%s), which WebRTC players cannot show, and this server re-encodes no more streams now: "+
				"set the publisher's encoder to bframes=0 (OBS x264 options: bframes=0; ffmpeg: -bf 0)", s.stream.Path(), why)
	}
	ot.proc = "rtp-reencode"
	ot.newProc = newProc
	return nil
}
