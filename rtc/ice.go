package rtc

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// restartGatherTimeout bounds ICE gathering after an ICE restart. With the
// UDP mux host candidates come at once; STUN servers can take longer.
const restartGatherTimeout = 5 * time.Second

// ICESession is the ICE side of a WHIP or WHEP session resource, written
// once for both: it holds the entity-tag that names the current ICE session
// (RFC 9725 section 4.3.1), adds trickled candidates and performs ICE
// restarts on the session's PeerConnection. WHIP and WHEP sessions embed
// it, which makes them rtc.Session implementations. Safe for concurrent use;
// PATCHes are applied one at a time.
type ICESession struct {
	pc        *webrtc.PeerConnection
	preferred []netip.Addr // NAT 1:1 addresses: listed first in answers
	log       *slog.Logger

	mu          sync.Mutex
	etag        string   // guarded by mu
	remoteOffer string   // the offer the current ICE session was negotiated with; guarded by mu
	remoteUfrag string   // its ice-ufrag; guarded by mu
	mids        []string // a=mid of each of its media sections, in order; guarded by mu
}

// NewICESession returns the ICE side of a session whose PeerConnection has
// answered the client's offer (both descriptions set, gathering complete).
func (e *Engine) NewICESession(pc *webrtc.PeerConnection, log *slog.Logger) (*ICESession, error) {
	if log == nil {
		log = slog.Default()
	}
	rd := pc.RemoteDescription()
	if rd == nil {
		return nil, fmt.Errorf("ice session: no remote description")
	}
	s := &ICESession{pc: pc, preferred: e.nat1to1, log: log, etag: newETag()}
	if err := s.setRemote(rd.SDP); err != nil {
		return nil, fmt.Errorf("ice session: %w", err)
	}
	return s, nil
}

// setRemote records offer as the description of the current ICE session.
func (s *ICESession) setRemote(offer string) error {
	var d sdp.SessionDescription
	if err := d.UnmarshalString(offer); err != nil {
		return fmt.Errorf("parse remote offer: %w", err)
	}
	s.remoteOffer = offer
	s.remoteUfrag, _ = iceCredentials(&d)
	s.mids = s.mids[:0]
	for _, m := range d.MediaDescriptions {
		mid, _ := m.Attribute("mid")
		s.mids = append(s.mids, mid)
	}
	return nil
}

// newETag returns a strong entity-tag (RFC 9110 section 8.8.3) of 128
// random bits.
func newETag() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	return `"` + hex.EncodeToString(b[:]) + `"`
}

// Answer returns the local description to send the client: every candidate
// (with a=end-of-candidates once gathering is complete; pion adds it), the
// reachable UDP host candidates first (OrderCandidates), CRLF line endings.
func (s *ICESession) Answer() string {
	ld := s.pc.LocalDescription()
	if ld == nil {
		return ""
	}
	return OrderCandidates(ld.SDP, s.preferred)
}

// ETag returns the entity-tag of the current ICE session, quoted.
func (s *ICESession) ETag() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.etag
}

// RemoteICEUfrag returns the client's ice-ufrag for the current ICE session:
// a PATCH with another one asks for an ICE restart.
func (s *ICESession) RemoteICEUfrag() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remoteUfrag
}

// Trickle adds the candidates of frag to the current ICE session. Those the
// bridge cannot use (see usableCandidate), and those of media sections the
// session does not have, are discarded silently (RFC 9725 section 4.3.2).
// It fails with 412 when frag names another ICE session than the current
// one (an ICE restart came in between).
func (s *ICESession) Trickle(frag *Sdpfrag) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if frag.ICEUfrag != "" && frag.ICEUfrag != s.remoteUfrag {
		return Errorf(http.StatusPreconditionFailed, "the candidates are for ICE session %q, the current one is %q", frag.ICEUfrag, s.remoteUfrag)
	}
	s.addCandidates(frag)
	return nil
}

// addCandidates adds frag's usable candidates, each to the media section
// it names by a=mid (or by position, without one). With BUNDLE there is one
// transport, but a candidate for a section the session does not have is
// not the session's (RFC 8840 section 4.4) and is dropped.
func (s *ICESession) addCandidates(frag *Sdpfrag) {
	added, dropped := 0, map[string]int{}
	add := func(value, mid string) {
		if reason := usableCandidate(value, s.remoteUfrag); reason != "" {
			dropped[reason]++
			return
		}
		if err := s.pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: value, SDPMid: &mid}); err != nil {
			dropped["refused by pion"]++
			return
		}
		added++
	}
	if len(s.mids) > 0 {
		for _, c := range frag.Candidates {
			add(c, s.mids[0])
		}
	} else {
		dropped["no media section"] += len(frag.Candidates)
	}
	for i, m := range frag.Media {
		mid := m.Mid
		if mid == "" && i < len(s.mids) {
			mid = s.mids[i]
		}
		if !slices.Contains(s.mids, mid) {
			dropped["unknown mid"] += len(m.Candidates)
			continue
		}
		for _, c := range m.Candidates {
			add(c, mid)
		}
	}
	if added > 0 || len(dropped) > 0 {
		s.log.Debug("trickled candidates", "added", added, "dropped", dropped)
	}
}

// usableCandidate returns why the bridge cannot use the a=candidate value
// v of the ICE session with ufrag remoteUfrag, or "" if it can. The bridge
// gathers UDP only and muxes RTCP (RFC 8858), so TCP candidates and
// component 2 are of no use; a candidate that names another ufrag belongs
// to another ICE session. mDNS (.local) host candidates are left to pion,
// which resolves them or drops them.
func usableCandidate(v, remoteUfrag string) string {
	c, err := ice.UnmarshalCandidate(v)
	if err != nil {
		return "malformed"
	}
	switch {
	case !c.NetworkType().IsUDP():
		return "not UDP"
	case c.Component() != ice.ComponentRTP:
		return "RTCP component"
	}
	if u, ok := c.GetExtension("ufrag"); ok && remoteUfrag != "" && u.Value != remoteUfrag {
		return "other ICE session"
	}
	return ""
}

// RestartICE restarts ICE with the client's new credentials and candidates
// in frag (RFC 9725 section 4.3.3): the previous offer with the new
// credentials, and without its old candidates, is set again as the remote
// description (nothing but ICE is renegotiated), the new answer gives the
// bridge's new credentials and candidates. It returns them as an sdpfrag
// body (the BUNDLE-tagged media section, every candidate,
// a=end-of-candidates) and the new entity-tag.
func (s *ICESession) RestartICE(frag *Sdpfrag) (answerFrag, etag string, err error) {
	if frag.ICEUfrag == "" || frag.ICEPwd == "" {
		return "", "", Errorf(http.StatusBadRequest, "an ICE restart needs both a=ice-ufrag and a=ice-pwd")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var local *sdp.SessionDescription
	if ld := s.pc.CurrentLocalDescription(); ld != nil {
		local, _ = ld.Unmarshal()
	}
	offer, err := restartOffer(s.remoteOffer, local, frag.ICEUfrag, frag.ICEPwd)
	if err != nil {
		return "", "", fmt.Errorf("ice restart: %w", err)
	}
	if err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", "", fmt.Errorf("ice restart: set remote description: %w", err)
	}
	// Created after SetRemoteDescription, which starts the new gathering:
	// before, it would see the previous one complete.
	gathered := webrtc.GatheringCompletePromise(s.pc)
	answer, err := s.pc.CreateAnswer(nil)
	if err == nil {
		err = s.pc.SetLocalDescription(answer)
	}
	if err != nil {
		if rbErr := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeRollback}); rbErr != nil {
			s.log.Warn("ice restart: rollback failed", "err", rbErr)
		}
		return "", "", fmt.Errorf("ice restart: answer: %w", err)
	}
	prevUfrag := s.remoteUfrag
	if err := s.setRemote(offer); err != nil {
		return "", "", fmt.Errorf("ice restart: %w", err)
	}
	s.etag = newETag()
	s.addCandidates(frag)
	select {
	case <-gathered:
	case <-time.After(restartGatherTimeout):
		// The new ICE session exists now: answer with what was gathered
		// (no a=end-of-candidates) rather than strand the client.
		s.log.Warn("ice restart: gathering incomplete, answering with the candidates so far", "waited", restartGatherTimeout)
	}
	desc := s.pc.LocalDescription()
	if desc == nil {
		return "", "", fmt.Errorf("ice restart: no local description (connection closed)")
	}
	ld, err := desc.Unmarshal()
	if err != nil {
		return "", "", fmt.Errorf("ice restart: parse local description: %w", err)
	}
	out := localFrag(ld, s.preferred)
	s.log.Info("ICE restarted", "remote_ufrag", frag.ICEUfrag, "previous_remote_ufrag", prevUfrag, "local_candidates", len(out.Media[0].Candidates))
	return out.Marshal(), s.etag, nil
}

// restartOffer returns the offer prev with the ICE credentials ufrag and
// pwd instead of its own, none of its candidates, and the next session
// version. A media section the current local answer (if any) made inactive
// is offered inactive, so pion keeps it so rather than reviving a stopped
// transceiver.
func restartOffer(prev string, local *sdp.SessionDescription, ufrag, pwd string) (string, error) {
	d, err := applySdpfrag(prev, &Sdpfrag{ICEUfrag: ufrag, ICEPwd: pwd})
	if err != nil {
		return "", err
	}
	for i, m := range d.MediaDescriptions {
		if local != nil && i < len(local.MediaDescriptions) && inactive(local.MediaDescriptions[i]) {
			m.Attributes = slices.DeleteFunc(m.Attributes, func(a sdp.Attribute) bool { return isDirection(a.Key) })
			m.Attributes = append(m.Attributes, sdp.NewPropertyAttribute("inactive"))
		}
	}
	b, err := d.Marshal()
	if err != nil {
		return "", fmt.Errorf("marshal offer: %w", err)
	}
	return string(b), nil
}

// ApplySdpfrag returns the session description desc updated for a new ICE
// session described by f: f's credentials instead of desc's, f's
// candidates (and a=end-of-candidates) instead of desc's, put in the media
// section of their a=mid (session-level ones and those of an unknown mid in
// the first section), and the next session version. A WHIP or WHEP client
// applies the 200 of an ICE restart to its remote description this way
// (RFC 9725 section 4.3.3: the previous non-ICE SDP still applies).
func ApplySdpfrag(desc string, f *Sdpfrag) (string, error) {
	d, err := applySdpfrag(desc, f)
	if err != nil {
		return "", err
	}
	b, err := d.Marshal()
	if err != nil {
		return "", fmt.Errorf("marshal: %w", err)
	}
	return string(b), nil
}

func applySdpfrag(desc string, f *Sdpfrag) (*sdp.SessionDescription, error) {
	var d sdp.SessionDescription
	if err := d.UnmarshalString(desc); err != nil {
		return nil, fmt.Errorf("parse session description: %w", err)
	}
	d.Origin.SessionVersion++
	d.Attributes = replaceICE(d.Attributes, f.ICEUfrag, f.ICEPwd)
	for _, m := range d.MediaDescriptions {
		m.Attributes = replaceICE(m.Attributes, f.ICEUfrag, f.ICEPwd)
	}
	if len(d.MediaDescriptions) == 0 {
		return &d, nil
	}
	section := func(mid string) *sdp.MediaDescription {
		for _, m := range d.MediaDescriptions {
			if v, _ := m.Attribute("mid"); mid != "" && v == mid {
				return m
			}
		}
		return d.MediaDescriptions[0]
	}
	add := func(m *sdp.MediaDescription, cands []string, end bool) {
		for _, c := range cands {
			m.Attributes = append(m.Attributes, sdp.NewAttribute("candidate", c))
		}
		if end {
			if _, ok := m.Attribute("end-of-candidates"); !ok {
				m.Attributes = append(m.Attributes, sdp.NewPropertyAttribute("end-of-candidates"))
			}
		}
	}
	add(d.MediaDescriptions[0], f.Candidates, f.EndOfCandidates)
	for _, fm := range f.Media {
		add(section(fm.Mid), fm.Candidates, fm.EndOfCandidates)
	}
	return &d, nil
}

// replaceICE returns attrs with new ICE credentials (where it had some and
// there are new ones) and no candidates.
func replaceICE(attrs []sdp.Attribute, ufrag, pwd string) []sdp.Attribute {
	out := attrs[:0]
	for _, a := range attrs {
		switch a.Key {
		case "candidate", "end-of-candidates":
			continue
		case "ice-ufrag":
			if ufrag != "" {
				a.Value = ufrag
			}
		case "ice-pwd":
			if pwd != "" {
				a.Value = pwd
			}
		}
		out = append(out, a)
	}
	return out
}

func isDirection(k string) bool {
	return k == "sendrecv" || k == "sendonly" || k == "recvonly" || k == "inactive"
}

// inactive reports whether an answer's media section carries no media.
func inactive(m *sdp.MediaDescription) bool {
	if m.MediaName.Port.Value == 0 {
		_, bundleOnly := m.Attribute("bundle-only")
		return !bundleOnly
	}
	_, ok := m.Attribute("inactive")
	return ok
}

// iceCredentials returns the ICE credentials of a description: session
// level, else those of its first media section that has them.
func iceCredentials(d *sdp.SessionDescription) (ufrag, pwd string) {
	ufrag, _ = d.Attribute("ice-ufrag")
	pwd, _ = d.Attribute("ice-pwd")
	for _, m := range d.MediaDescriptions {
		if ufrag == "" {
			ufrag, _ = m.Attribute("ice-ufrag")
		}
		if pwd == "" {
			pwd, _ = m.Attribute("ice-pwd")
		}
	}
	return ufrag, pwd
}

// localFrag returns the sdpfrag of an ICE restart's answer: the session's
// ice-lite, ice-options and BUNDLE group, and its first (BUNDLE-tagged)
// media section with the credentials, the candidates (reachable UDP host
// ones first) and a=end-of-candidates if gathering was complete.
func localFrag(d *sdp.SessionDescription, preferred []netip.Addr) *Sdpfrag {
	f := &Sdpfrag{}
	_, f.ICELite = d.Attribute("ice-lite")
	f.ICEOptions, _ = d.Attribute("ice-options")
	f.Group, _ = d.Attribute("group")
	f.ICEUfrag, f.ICEPwd = iceCredentials(d)
	m := SdpfragMedia{Kind: "audio", Port: "9", Proto: "UDP/TLS/RTP/SAVPF"}
	if len(d.MediaDescriptions) > 0 {
		md := d.MediaDescriptions[0]
		m.Kind = md.MediaName.Media
		m.Port = strconv.Itoa(md.MediaName.Port.Value)
		m.Proto = strings.Join(md.MediaName.Protos, "/")
		m.Formats = slices.Clone(md.MediaName.Formats)
		m.Mid, _ = md.Attribute("mid")
		for _, a := range md.Attributes {
			switch a.Key {
			case "candidate":
				m.Candidates = append(m.Candidates, a.Value)
			case "end-of-candidates":
				m.EndOfCandidates = true
			}
		}
		slices.SortStableFunc(m.Candidates, func(a, b string) int {
			return candidateRank(a, preferred) - candidateRank(b, preferred)
		})
	}
	f.Media = []SdpfragMedia{m}
	return f
}

// OrderCandidates returns the SDP s with CRLF line endings and the
// a=candidate lines of each media section in the order clients should try
// them (candidateRank), in the places the section had candidate lines. Some
// clients only try the first candidate, or try them in order with a delay:
// the one that is reachable from outside comes first.
func OrderCandidates(s string, preferred []netip.Addr) string {
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(s, "\r\n", "\n"), "\n"), "\n")
	sortSection := func(from, to int) {
		var idx []int
		var cands []string
		for i := from; i < to; i++ {
			if v, ok := strings.CutPrefix(lines[i], "a=candidate:"); ok {
				idx = append(idx, i)
				cands = append(cands, v)
			}
		}
		slices.SortStableFunc(cands, func(a, b string) int {
			return candidateRank(a, preferred) - candidateRank(b, preferred)
		})
		for k, i := range idx {
			lines[i] = "a=candidate:" + cands[k]
		}
	}
	start := 0
	for i, l := range lines {
		if strings.HasPrefix(l, "m=") {
			sortSection(start, i)
			start = i
		}
	}
	sortSection(start, len(lines))
	return strings.Join(lines, "\r\n") + "\r\n"
}

// candidateRank orders candidates for an answer: UDP before TCP; then host
// candidates on a configured NAT 1:1 address, host candidates on public
// addresses, server-reflexive ones (the public side of a NAT), host
// candidates on private addresses, relayed ones, link-local, loopback and
// mDNS ones last; IPv4 before IPv6 within each. Lower comes first.
func candidateRank(v string, preferred []netip.Addr) int {
	// foundation component transport priority address port "typ" type ...
	f := strings.Fields(v)
	if len(f) < 8 || f[6] != "typ" {
		return 1000
	}
	addr, err := netip.ParseAddr(f[4])
	addr = addr.Unmap()
	var class int
	switch typ := f[7]; {
	case err != nil: // an mDNS name
		class = 8
	case typ == "host" && slices.Contains(preferred, addr):
		class = 0
	case typ == "host" && addr.IsLoopback():
		class = 7
	case typ == "host" && (addr.IsLinkLocalUnicast() || addr.IsUnspecified()):
		class = 6
	case typ == "host" && !addr.IsPrivate():
		class = 1
	case typ == "srflx":
		class = 2
	case typ == "host":
		class = 3
	case typ == "prflx":
		class = 4
	default: // relay
		class = 5
	}
	rank := class * 2
	if addr.Is6() {
		rank++
	}
	if !strings.EqualFold(f[2], "udp") {
		rank += 100
	}
	return rank
}
