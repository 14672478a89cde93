package rtc

// The SDP side of a WHIP or WHEP client (egress/whip and ingest/whep), the
// offer it makes and what it reads from the answer, and of a WHIP or WHEP
// endpoint (ingest/whip and egress/whep), the answer it makes.

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Offer makes pc's offer, sets it as the local description and waits for
// every candidate to be in it: until gathering completes, gather passes
// (then it offers the candidates gathered so far, and logs it on log) or
// ctx ends (then it returns context.Cause(ctx)). It returns the offer's
// SDP, with a=rtcp-mux-only in each bundled section (MuxOnly).
func Offer(ctx context.Context, pc *webrtc.PeerConnection, gather time.Duration, log *slog.Logger) (string, error) {
	gathered := webrtc.GatheringCompletePromise(pc)
	o, err := pc.CreateOffer(nil)
	if err != nil {
		return "", fmt.Errorf("create offer: %w", err)
	}
	if err := pc.SetLocalDescription(o); err != nil {
		return "", fmt.Errorf("set local description: %w", err)
	}
	t := time.NewTimer(gather)
	defer t.Stop()
	select {
	case <-gathered:
	case <-t.C:
		// A STUN or TURN server that does not answer (one the endpoint
		// advertised may be unreachable from here) must not stop us:
		// offer the candidates gathered so far.
		log.Warn("ICE gathering incomplete: offering the candidates gathered so far", "waited", gather.String())
	case <-ctx.Done():
		return "", context.Cause(ctx)
	}
	return MuxOnly(pc.LocalDescription().SDP), nil
}

// AnswerMids returns the mids of the answer's media sections that are not
// rejected (port 0) and whose direction (sendrecv by default) is dir or
// sendrecv: AnswerMids(answer, "recvonly") are the sections that receive,
// AnswerMids(answer, "sendonly") those that send.
func AnswerMids(answer, dir string) (map[string]bool, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(answer); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, md := range sd.MediaDescriptions {
		mid, _ := md.Attribute("mid")
		if md.MediaName.Port.Value == 0 {
			continue
		}
		d := "sendrecv"
		for _, a := range []string{"sendonly", "recvonly", "inactive", "sendrecv"} {
			if _, ok := md.Attribute(a); ok {
				d = a
			}
		}
		if d == dir || d == "sendrecv" {
			out[mid] = true
		}
	}
	return out, nil
}

// Answer makes pc's answer to the offer set as its remote description,
// sets it as the local description and waits for every candidate to be in
// it, gather at most. An offer that cannot be answered is a 400 (*Error)
// with the reason; gathering that does not complete in time is an error.
func Answer(pc *webrtc.PeerConnection, gather time.Duration) error {
	gathered := webrtc.GatheringCompletePromise(pc)
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return Errorf(http.StatusBadRequest, "cannot answer the offer: %v", err)
	}
	if err := pc.SetLocalDescription(answer); err != nil {
		return fmt.Errorf("set local description: %w", err)
	}
	select {
	case <-gathered:
	case <-time.After(gather):
		return fmt.Errorf("ICE gathering did not complete in %v", gather)
	}
	return nil
}

// MuxOnly returns the SDP s with a=rtcp-mux and a=rtcp-mux-only in each
// media section of its BUNDLE group, as the SDP bundle sections of RFC 9725
// and draft-ietf-wish-whep ask of WHIP and WHEP endpoints and clients: RTCP
// is never on a port of its own. RFC 8858 has only the offerer write
// a=rtcp-mux-only; the bridge writes it in its answers too, as the WHIP and
// WHEP texts ask, and the clients tested (pion, headless Chromium) accept
// it. Pion muxes RTCP whatever the SDP says; this only says so. Lines end
// in CRLF; a section not in the group (rejected, port 0) is unchanged.
func MuxOnly(s string) string {
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(s, "\r\n", "\n"), "\n"), "\n")
	bundled := map[string]bool{}
	for _, l := range lines {
		if strings.HasPrefix(l, "m=") {
			break
		}
		if v, ok := strings.CutPrefix(l, "a=group:BUNDLE "); ok {
			for _, mid := range strings.Fields(v) {
				bundled[mid] = true
			}
		}
	}
	out := make([]string, 0, len(lines)+2*len(bundled))
	var section []string
	flush := func() {
		if len(section) == 0 {
			return
		}
		var mid string
		mux, muxOnly := -1, false
		for i, l := range section {
			switch {
			case strings.HasPrefix(l, "a=mid:"):
				mid = l[len("a=mid:"):]
			case l == "a=rtcp-mux":
				mux = i
			case l == "a=rtcp-mux-only":
				muxOnly = true
			}
		}
		if strings.HasPrefix(section[0], "m=") && bundled[mid] {
			var add []string
			if mux < 0 {
				add = append(add, "a=rtcp-mux")
				mux = len(section) - 1
			}
			if !muxOnly {
				add = append(add, "a=rtcp-mux-only")
			}
			section = slices.Insert(section, mux+1, add...)
		}
		out = append(out, section...)
		section = section[:0]
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "m=") {
			flush()
		}
		section = append(section, l)
	}
	flush()
	return strings.Join(out, "\r\n") + "\r\n"
}
