package rtc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
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
	"golang.org/x/time/rate"

	"github.com/wishbridge/bridge/internal/ratelog"
)

// restartGatherTimeout bounds ICE gathering after an ICE restart. With the
// UDP mux host candidates come at once; STUN servers can take longer.
const restartGatherTimeout = 5 * time.Second

// DefaultICECandidates is the remote candidates one session may have when
// Settings.ICECandidates is 0, across its offer, trickle PATCHes and ICE
// restarts together. A browser offers a host candidate per interface and
// address family, one server-reflexive and one relayed per STUN/TURN
// server: 2-10 in practice. Each costs up to 8 connectivity checks per
// bridge host candidate, sent to an address the client chose.
const DefaultICECandidates = 20

// DefaultPatchRate is the PATCH requests one session may make per second
// (and in a burst) when Settings.PatchRate is 0. Clients trickle a batch of
// candidates per PATCH (whip-whep.js, OBS none at all) and restart ICE on a
// network change: a handful per session in its life.
const DefaultPatchRate = 5

// ICESession is the ICE side of a WHIP or WHEP session resource, written
// once for both: it holds the entity-tag that names the current ICE session
// (RFC 9725 section 4.3.1), adds trickled candidates and performs ICE
// restarts on the session's PeerConnection. WHIP and WHEP sessions embed
// it, which makes them rtc.Session implementations. Safe for concurrent use;
// PATCHes are applied one at a time.
//
// It holds the session to its limits: Settings.ICECandidates remote
// candidates in its life (the offer's, stripped by SetRemoteOffer, count),
// Settings.PatchRate PATCHes per second (429 over it).
type ICESession struct {
	pc        *webrtc.PeerConnection
	e         *Engine
	preferred []netip.Addr // NAT 1:1 addresses: listed first in answers
	log       *slog.Logger
	patches   *rate.Limiter
	logLim    ratelog.Limiter // one line per interval about dropped candidates

	// offerer is set for a session whose offer the bridge made (WHEP's
	// server-offer mode): it takes the client's answer once (SetAnswer)
	// and answered is closed then; for the others it is closed from the
	// start.
	offerer  bool
	answered chan struct{}

	mu          sync.Mutex
	etag        string   // guarded by mu
	remoteOffer string   // the offer the current ICE session was negotiated with; guarded by mu
	remoteUfrag string   // its ice-ufrag; guarded by mu
	mids        []string // a=mid of each of its media sections, in order; guarded by mu
	// remotes are the transport addresses of the remote candidates given
	// to the agent in the session's life, at most Engine.iceCandidates;
	// guarded by mu.
	remotes candidateSet
}

// candidateSet is the remote candidate addresses a session has given its
// agent. The same address again (a client that trickles what its offer
// had, a restart that repeats its candidates) costs nothing more.
type candidateSet map[netip.AddrPort]struct{}

// admit reports whether the agent may have a candidate at ap: one it has,
// or a new one while the set holds fewer than max.
func (c candidateSet) admit(ap netip.AddrPort, max int) bool {
	if _, ok := c[ap]; ok {
		return true
	}
	if len(c) >= max {
		return false
	}
	c[ap] = struct{}{}
	return true
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
	s := &ICESession{
		pc: pc, e: e, preferred: append(slices.Clone(e.nat1to1), routedSources(rd.SDP)...), log: log, etag: newETag(),
		patches:  rate.NewLimiter(rate.Limit(e.patchRate), e.patchRate),
		remotes:  candidateSet{},
		answered: make(chan struct{}),
	}
	if err := s.setRemote(rd.SDP); err != nil {
		return nil, fmt.Errorf("ice session: %w", err)
	}
	s.admitRemote(rd.SDP)
	close(s.answered)
	return s, nil
}

// NewOfferSession returns the ICE side of a session whose PeerConnection
// made the offer (local description set, gathering complete): WHEP's
// server-offer mode, a viewer that POSTs no offer and gets ours. Until its
// answer comes (SetAnswer) the session has no ICE session of the client's:
// it takes no candidates and no ICE restart.
func (e *Engine) NewOfferSession(pc *webrtc.PeerConnection, log *slog.Logger) (*ICESession, error) {
	if log == nil {
		log = slog.Default()
	}
	if pc.LocalDescription() == nil {
		return nil, fmt.Errorf("ice session: no local offer")
	}
	return &ICESession{
		pc: pc, e: e, preferred: e.nat1to1, log: log, etag: newETag(),
		patches:  rate.NewLimiter(rate.Limit(e.patchRate), e.patchRate),
		remotes:  candidateSet{},
		offerer:  true,
		answered: make(chan struct{}),
	}, nil
}

// admitRemote counts the candidates of desc, the remote description
// (SetRemoteOffer or SetAnswer kept those within the limit), as the first
// of the session's. Called with mu held or before the session is shared.
func (s *ICESession) admitRemote(desc string) {
	for _, c := range sdpCandidates(desc) {
		if ap, reason := s.e.usableCandidate(c, s.remoteUfrag); reason == "" {
			s.remotes.admit(ap, s.e.iceCandidates)
		}
	}
}

// SetAnswer sets the client's SDP answer to the offer of a session made by
// NewOfferSession, once: its candidates are limited as an offer's
// (SetRemoteOffer), count toward the session's limit, and the PATCH that
// carries it toward its PATCH rate. Errors (*Error): 422 for a session
// that answered the client's offer, 409 for a second answer, 429 over the
// PATCH rate, 400 for an answer pion refuses (the session may take a
// corrected one).
func (s *ICESession) SetAnswer(answer string) error {
	if !s.offerer {
		return Errorf(http.StatusUnprocessableEntity, "this session answered your offer: it takes no SDP answer, only %s PATCHes (an answer is for a session created by a POST without a body)", SdpfragType)
	}
	if err := s.allowPatch(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.answered:
		return Errorf(http.StatusConflict, "this session has its SDP answer already: it takes only %s PATCHes now", SdpfragType)
	default:
	}
	answer, dropped := s.e.limitOfferCandidates(mediaLevelSetup(answer))
	if len(dropped) > 0 {
		s.log.Info("answer's ICE candidates dropped", "dropped", dropped, "limit", s.e.iceCandidates)
	}
	if err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return Errorf(http.StatusBadRequest, "SDP answer rejected: %v", err)
	}
	if err := s.setRemote(answer); err != nil {
		return Errorf(http.StatusBadRequest, "SDP answer rejected: %v", err)
	}
	s.admitRemote(answer)
	close(s.answered)
	return nil
}

// Answered is closed once the session has the client's answer: at once
// for a session that answered the client's offer, at SetAnswer for one
// made by NewOfferSession.
func (s *ICESession) Answered() <-chan struct{} { return s.answered }

// awaitingAnswer returns the 409 for a PATCH other than the answer on a
// session made by NewOfferSession that has none yet, or nil.
func (s *ICESession) awaitingAnswer() error {
	select {
	case <-s.answered:
		return nil
	default:
		return Errorf(http.StatusConflict, "this session waits for your SDP answer to its offer (a PATCH with Content-Type: application/sdp) first")
	}
}

// SetRemoteOffer sets a WHIP or WHEP client's offer as pc's remote
// description, without the candidates the bridge must not probe: those it
// cannot use (see usableCandidate) and those beyond Settings.ICECandidates
// distinct addresses (counted in ICEStats, logged on log), and with a
// session-level a=setup repeated in each media section (mediaLevelSetup).
// An offer pion refuses is a 400 (*Error) with the reason.
func (e *Engine) SetRemoteOffer(pc *webrtc.PeerConnection, offer string, log *slog.Logger) error {
	offer, dropped := e.limitOfferCandidates(mediaLevelSetup(offer))
	if len(dropped) > 0 {
		// Browsers offer TCP candidates (dropped with ICE-TCP off), RTCP
		// components and such with every offer: that is debug. Over the
		// limit or at an address never probed is the client's doing.
		lvl := slog.LevelDebug
		if dropped[dropOverLimit] > 0 || dropped[dropAddress] > 0 {
			lvl = slog.LevelInfo
		}
		log.Log(context.Background(), lvl, "offer's ICE candidates dropped", "dropped", dropped, "limit", e.iceCandidates)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return Errorf(http.StatusBadRequest, "SDP offer rejected: %v", err)
	}
	return nil
}

// limitOfferCandidates returns offer without the a=candidate lines the
// bridge must not probe, and how many it dropped for each reason. Every
// other line is kept as it was.
func (e *Engine) limitOfferCandidates(offer string) (string, map[dropReason]int) {
	var d sdp.SessionDescription
	if err := d.UnmarshalString(offer); err != nil {
		return offer, nil // pion will say what is wrong with it
	}
	ufrag, _ := iceCredentials(&d)
	kept := candidateSet{}
	var dropped map[dropReason]int
	lines := strings.SplitAfter(offer, "\n")
	out := lines[:0]
	for _, l := range lines {
		if v, ok := strings.CutPrefix(strings.TrimRight(l, "\r\n"), "a=candidate:"); ok {
			ap, reason := e.usableCandidate(v, ufrag)
			if reason == "" && !kept.admit(ap, e.iceCandidates) {
				reason = dropOverLimit
			}
			if reason != "" {
				if dropped == nil {
					dropped = map[dropReason]int{}
				}
				dropped[reason]++
				e.countDropped(reason)
				continue
			}
		}
		out = append(out, l)
	}
	return strings.Join(out, ""), dropped
}

// mediaLevelSetup returns offer with its session-level a=setup line, if it
// has one, repeated at the end of each media section that has none. The
// attribute may be at either level (RFC 4145 section 4), but pion reads it
// in the media sections only: an offer saying a=setup:active for the whole
// session was answered active too, and the DTLS handshake never began.
func mediaLevelSetup(offer string) string {
	lines := strings.SplitAfter(offer, "\n")
	var setup string
	for _, l := range lines {
		if strings.HasPrefix(l, "m=") {
			break
		}
		if strings.HasPrefix(l, "a=setup:") {
			setup = strings.TrimRight(l, "\r\n")
		}
	}
	if setup == "" {
		return offer
	}
	out := make([]string, 0, len(lines)+4)
	inMedia, has := false, false
	endSection := func() {
		if inMedia && !has {
			out = append(out, setup+"\r\n")
		}
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "m=") {
			endSection()
			inMedia, has = true, false
		}
		if inMedia && strings.HasPrefix(l, "a=setup:") {
			has = true
		}
		if l == "" {
			continue
		}
		if !strings.HasSuffix(l, "\n") {
			l += "\r\n" // the last line, without its end
		}
		out = append(out, l)
	}
	endSection()
	return strings.Join(out, "")
}

// sdpCandidates returns the values of the a=candidate lines of an SDP.
func sdpCandidates(desc string) []string {
	var out []string
	for l := range strings.Lines(desc) {
		if v, ok := strings.CutPrefix(strings.TrimRight(l, "\r\n"), "a=candidate:"); ok {
			out = append(out, v)
		}
	}
	return out
}

// countDropped counts a candidate dropped for reason in ICEStats when a
// limit refused it (over the count, or an address never probed); those of
// no use to the bridge (TCP, RTCP, malformed) are not.
func (e *Engine) countDropped(reason dropReason) {
	if reason == dropOverLimit || reason == dropAddress {
		e.candidatesDropped.Add(1)
	}
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

// Answer returns the local description to send the client (the offer, for a
// session made by NewOfferSession): every candidate
// (with a=end-of-candidates once gathering is complete; pion adds it), the
// reachable UDP host candidates first (OrderCandidates), a=rtcp-mux and
// a=rtcp-mux-only in each bundled section (MuxOnly), CRLF line endings.
func (s *ICESession) Answer() string {
	ld := s.pc.LocalDescription()
	if ld == nil {
		return ""
	}
	return MuxOnly(OrderCandidates(ld.SDP, s.preferred))
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
// bridge cannot use (see usableCandidate), those beyond the session's
// candidate limit, and those of media sections the session does not have,
// are discarded silently (RFC 9725 section 4.3.2). It fails with 412 when
// frag names another ICE session than the current one (an ICE restart came
// in between), with 429 over the session's PATCH rate.
func (s *ICESession) Trickle(frag *Sdpfrag) error {
	if err := s.awaitingAnswer(); err != nil {
		return err
	}
	if err := s.allowPatch(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if frag.ICEUfrag != "" && frag.ICEUfrag != s.remoteUfrag {
		return Errorf(http.StatusPreconditionFailed, "the candidates are for ICE session %q, the current one is %q", frag.ICEUfrag, s.remoteUfrag)
	}
	s.addCandidates(frag)
	return nil
}

// allowPatch takes a PATCH from the session's budget: a 429 (*Error) with
// the wait until the next one when it is spent.
func (s *ICESession) allowPatch() error {
	now := time.Now()
	if s.patches.AllowN(now, 1) {
		return nil
	}
	s.e.patchesRefused.Add(1)
	wait := time.Duration((1 - s.patches.TokensAt(now)) / float64(s.patches.Limit()) * float64(time.Second))
	err := Errorf(http.StatusTooManyRequests, "more than %d PATCH requests per second on this session; wait %v", s.e.patchRate, wait.Round(time.Millisecond))
	err.RetryAfter = wait
	return err
}

// addCandidates adds frag's usable candidates, each to the media section
// it names by a=mid (or by position, without one), while the session is
// within its candidate limit. With BUNDLE there is one transport, but a
// candidate for a section the session does not have is not the session's
// (RFC 8840 section 4.4) and is dropped.
func (s *ICESession) addCandidates(frag *Sdpfrag) {
	added, dropped := 0, map[dropReason]int{}
	add := func(value, mid string) {
		ap, reason := s.e.usableCandidate(value, s.remoteUfrag)
		if reason == "" && !s.remotes.admit(ap, s.e.iceCandidates) {
			reason = dropOverLimit
		}
		if reason != "" {
			dropped[reason]++
			s.e.countDropped(reason)
			return
		}
		if err := s.pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: value, SDPMid: &mid}); err != nil {
			dropped[dropRefused]++
			return
		}
		added++
	}
	if len(s.mids) > 0 {
		for _, c := range frag.Candidates {
			add(c, s.mids[0])
		}
	} else {
		dropped[dropNoMedia] += len(frag.Candidates)
	}
	for i, m := range frag.Media {
		mid := m.Mid
		if mid == "" && i < len(s.mids) {
			mid = s.mids[i]
		}
		if !slices.Contains(s.mids, mid) {
			dropped[dropUnknownMid] += len(m.Candidates)
			continue
		}
		for _, c := range m.Candidates {
			add(c, mid)
		}
	}
	if dropped[dropOverLimit] > 0 || dropped[dropAddress] > 0 {
		if ok, n := s.logLim.Allow("candidates"); ok {
			s.log.Info("trickled ICE candidates dropped", "added", added, "dropped", dropped, "limit", s.e.iceCandidates, "suppressed", n)
			return
		}
	}
	if added > 0 || len(dropped) > 0 {
		s.log.Debug("trickled candidates", "added", added, "dropped", dropped)
	}
}

// dropReason says why a remote candidate was not given to the agent.
type dropReason string

const (
	dropMalformed    dropReason = "malformed"
	dropNotUDP       dropReason = "not UDP"
	dropRTCP         dropReason = "RTCP component"
	dropOtherSession dropReason = "other ICE session"
	dropNotIP        dropReason = "not an IP address"
	dropAddress      dropReason = "address never probed"
	dropOverLimit    dropReason = "over the session's candidate limit"
	dropRefused      dropReason = "refused by pion"
	dropNoMedia      dropReason = "no media section"
	dropUnknownMid   dropReason = "unknown mid"
)

// usableCandidate returns the transport address of the a=candidate value v
// of the ICE session with ufrag remoteUfrag, or why the bridge cannot use
// it. The bridge muxes RTCP (RFC 8858), so component 2 is of no use, and
// it never dials over TCP: its TCP candidates are passive (ICE-TCP), a
// client's are active ones (port 9, RFC 6544) and the bridge learns the
// client's address from the connection it makes; a candidate that names another
// ufrag belongs to another ICE session. mDNS (.local) names are not
// resolved (the engine disables mDNS, pion would drop them with a warning
// each); the peer-reflexive candidate its checks make stands in for them.
// Addresses the bridge never probes: see unprobeable.
func (e *Engine) usableCandidate(v, remoteUfrag string) (netip.AddrPort, dropReason) {
	c, err := ice.UnmarshalCandidate(v)
	if err != nil {
		return netip.AddrPort{}, dropMalformed
	}
	switch {
	case !c.NetworkType().IsUDP():
		return netip.AddrPort{}, dropNotUDP
	case c.Component() != ice.ComponentRTP:
		return netip.AddrPort{}, dropRTCP
	}
	if u, ok := c.GetExtension("ufrag"); ok && remoteUfrag != "" && u.Value != remoteUfrag {
		return netip.AddrPort{}, dropOtherSession
	}
	addr, err := netip.ParseAddr(c.Address())
	if err != nil {
		return netip.AddrPort{}, dropNotIP
	}
	addr = addr.Unmap().WithZone("")
	if c.Port() == 0 || unprobeable(addr, e.loopback) != "" {
		return netip.AddrPort{}, dropAddress
	}
	return netip.AddrPortFrom(addr, uint16(c.Port())), ""
}

// unprobeable returns why the bridge must never send connectivity checks to
// addr, or "": addresses no peer has (unspecified, 0.0.0.0/8), addresses
// that reach many hosts at once (multicast, 240.0.0.0/4 with the limited
// broadcast address), and loopback unless the bridge gathers loopback
// candidates itself (Settings.IncludeLoopback: tests, single-host setups),
// since there they can only reach services on the bridge's own host.
// Private and link-local addresses are probed: LAN clients have those, and
// a client could as well make the bridge probe a public address, which the
// candidate limit and the check rate bound alike.
func unprobeable(addr netip.Addr, loopback bool) string {
	addr = addr.Unmap()
	switch {
	case !addr.IsValid():
		return "invalid"
	case addr.IsUnspecified():
		return "unspecified"
	case addr.IsMulticast():
		return "multicast"
	case addr.Is4() && addr.As4()[0] == 0:
		return "this network (0.0.0.0/8)"
	case addr.Is4() && addr.As4()[0] >= 240:
		return "reserved or broadcast (240.0.0.0/4)"
	case addr.IsLoopback() && !loopback:
		return "loopback"
	}
	return ""
}

// RestartICE restarts ICE with the client's new credentials and candidates
// in frag (RFC 9725 section 4.3.3): the previous offer with the new
// credentials, and without its old candidates, is set again as the remote
// description (nothing but ICE is renegotiated), the new answer gives the
// bridge's new credentials and candidates. It returns them as an sdpfrag
// body (the BUNDLE-tagged media section, every candidate,
// a=end-of-candidates) and the new entity-tag. Its candidates count toward
// the session's limit like trickled ones, the restart toward its PATCH
// rate (429 over it); the new ICE agent credentials keep the check budget
// of the previous ones.
func (s *ICESession) RestartICE(frag *Sdpfrag) (answerFrag, etag string, err error) {
	if frag.ICEUfrag == "" || frag.ICEPwd == "" {
		return "", "", Errorf(http.StatusBadRequest, "an ICE restart needs both a=ice-ufrag and a=ice-pwd")
	}
	if err := s.awaitingAnswer(); err != nil {
		return "", "", err
	}
	if s.offerer {
		// The bridge would have to offer anew; not done yet.
		return "", "", Errorf(http.StatusUnprocessableEntity, "ICE restarts are not supported on a session whose offer the bridge made: start a new session")
	}
	if err := s.allowPatch(); err != nil {
		return "", "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var local *sdp.SessionDescription
	var prevLocalUfrag string
	if ld := s.pc.CurrentLocalDescription(); ld != nil {
		local, _ = ld.Unmarshal()
	}
	if local != nil {
		prevLocalUfrag, _ = iceCredentials(local)
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
		// Before the agent checks with its new credentials.
		s.e.checks.carryOver(prevLocalUfrag, answerUfrag(answer.SDP))
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

// answerUfrag returns the local ice-ufrag of an answer, "" if it has none.
func answerUfrag(desc string) string {
	var d sdp.SessionDescription
	if err := d.UnmarshalString(desc); err != nil {
		return ""
	}
	ufrag, _ := iceCredentials(&d)
	return ufrag
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
		rankCandidates(m.Candidates, preferred)
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
		rankCandidates(cands, preferred)
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

// routedSources returns the local addresses the kernel sends from to reach
// the UDP candidates of the offer desc (a route lookup: a UDP connect, no
// packet sent), in the offer's order: the answer lists them first, with the
// highest priority (rankCandidates). The address the client's own
// candidates route to is the one it most likely reaches: a client on a
// private network of the host (a LAN, a Docker bridge, a veth) then
// connects at once instead of trying the public address first. The
// offer's candidates are already capped (Settings.ICECandidates), which
// bounds the lookups.
func routedSources(desc string) []netip.Addr {
	var out []netip.Addr
	for _, v := range sdpCandidates(desc) {
		// foundation component transport priority address port ...
		f := strings.Fields(v)
		if len(f) < 6 || !strings.EqualFold(f[2], "udp") {
			continue
		}
		addr, err := netip.ParseAddr(f[4])
		// Not for an mDNS name, a scoped address, or a loopback one: a
		// client's loopback candidate names no address of the bridge's
		// (the client is on this host, and its other candidates say which).
		if err != nil || addr.Zone() != "" || addr.IsLoopback() {
			continue
		}
		port, err := strconv.ParseUint(f[5], 10, 16)
		if err != nil || port == 0 {
			continue
		}
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
		if err != nil { // no route: the client is not reached through it
			continue
		}
		src := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		_ = c.Close()
		if !slices.Contains(out, src) {
			out = append(out, src)
		}
	}
	return out
}

// hostTypePreference is RFC 8445's recommended type preference of host
// candidates (section 5.1.2.2), the one pion uses.
const hostTypePreference = 126

// rankCandidates sorts the candidate values cands of one media section in
// the order clients should try them (candidateRank) and gives the UDP host
// candidates of each component a local preference that falls in that
// order: 65535 for the first, as pion has it, one less for each next.
// Pion gives every address of the UDP mux the same priority, which RFC
// 8445 forbids (section 5.1.2.1: unique for each candidate of a component
// of one type); a client then takes the first of the equal pairs, or the
// one it happened to pair first (a check from another address of ours can
// come before the answer's candidates are paired), and a pion client
// nominates one check interval (200 ms) late when that pair cannot reach
// the bridge. Other types and TCP keep pion's priorities.
func rankCandidates(cands []string, preferred []netip.Addr) {
	slices.SortStableFunc(cands, func(a, b string) int {
		return candidateRank(a, preferred) - candidateRank(b, preferred)
	})
	next := map[string]uint32{} // by component: how many are ranked above
	for k, v := range cands {
		// foundation component transport priority address port "typ" type ...
		f := strings.Fields(v)
		if len(f) < 8 || f[7] != "host" || !strings.EqualFold(f[2], "udp") {
			continue
		}
		comp, err := strconv.ParseUint(f[1], 10, 8)
		if err != nil || comp == 0 || next[f[1]] > 65535 {
			continue
		}
		localPref := 65535 - next[f[1]]
		next[f[1]]++
		f[3] = strconv.FormatUint(uint64(hostTypePreference<<24|localPref<<8|uint32(256-comp)), 10)
		cands[k] = strings.Join(f, " ")
	}
}

// candidateRank orders candidates for an answer: UDP before TCP; then host
// candidates on a configured NAT 1:1 address or on an address the
// client's candidates are routed from (preferred), host candidates on public
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
