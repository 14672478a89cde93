package rtc

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// maxFuzzPatches bounds the PATCHes of one fuzz input: enough to trickle,
// restart and trickle again.
const maxFuzzPatches = 8

// loopbackOnly is the bridge's ICE socket for a test whose remote
// candidates come from a fuzzer: it sends to loopback addresses only and
// counts (and drops) what the agent sends elsewhere, so that no
// connectivity check leaves the machine.
type loopbackOnly struct {
	net.PacketConn
	dropped atomic.Uint64
}

func (c *loopbackOnly) WriteTo(b []byte, addr net.Addr) (int, error) {
	if ap, err := netip.ParseAddrPort(addr.String()); err != nil || !ap.Addr().Unmap().IsLoopback() {
		c.dropped.Add(1)
		return len(b), nil // as if sent: the agent goes on as it would
	}
	return c.PacketConn.WriteTo(b, addr)
}

// fuzzSession is a session resource with nothing but its ICE side, as WHIP
// and WHEP sessions embed it.
type fuzzSession struct{ *ICESession }

func (fuzzSession) Close(string) {}

// FuzzTricklePatch sends PATCH bodies (patches, split at NUL bytes) to a
// session resource whose PeerConnection has answered a browser-like offer
// (audio and video, BUNDLE, no candidates), through the Sessions handler
// WHIP and WHEP serve: sdpfrag parsing, If-Match, trickled candidates
// (filtered by the ICE session) and ICE restarts. Bit i of ifMatch puts
// If-Match: "*" on PATCH i. Every answer must be one servePatch documents
// (no 5xx for what a client sent), and only usable candidates may reach
// the ICE agent.
func FuzzTricklePatch(f *testing.F) {
	log := slog.New(slog.DiscardHandler)
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	guard := &loopbackOnly{PacketConn: udp}
	e, err := New(Settings{UDP: guard, IncludeLoopback: true, Log: log})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = e.Close() })

	client := testClient(f)
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if _, err := client.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			f.Fatal(err)
		}
	}
	offer, err := client.CreateOffer(nil)
	if err != nil {
		f.Fatal(err)
	}
	d, err := offer.Unmarshal()
	if err != nil {
		f.Fatal(err)
	}
	ufrag, _ := iceCredentials(d)

	const (
		host  = "1 1 udp 2122260223 127.0.0.1 50000 typ host"
		tcp   = "2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active"
		rtcp  = "3 2 udp 2122260222 127.0.0.1 50001 typ host"
		srflx = "4 1 udp 1686052607 192.0.2.7 61000 typ srflx raddr 10.0.0.2 rport 50000"
		mdns  = "5 1 udp 2122260223 4f7d1f8e-0b7c-4a1e-9d0c-1a2b3c4d5e6f.local 50002 typ host"
	)
	trickle := "a=ice-ufrag:" + ufrag + "\r\na=ice-pwd:x\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n" +
		"a=candidate:" + host + "\r\na=candidate:" + tcp + "\r\na=candidate:" + rtcp + "\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=candidate:" + srflx + " ufrag " + ufrag + "\r\n" +
		"a=candidate:" + mdns + "\r\na=end-of-candidates\r\n"
	restart := "a=ice-ufrag:R3st\r\na=ice-pwd:restartpwdrestartpwd1234\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n" +
		"a=candidate:" + host + "\r\n"
	f.Add(trickle, uint8(0))
	f.Add(trickle+"\x00"+restart+"\x00"+strings.ReplaceAll(trickle, ufrag, "R3st"), uint8(0b010))
	f.Add("a=candidate:"+host+"\r\na=candidate:"+srflx+" ufrag other\r\nm=audio 9 RTP/AVP 0\r\na=mid:7\r\na=candidate:"+host+"\r\n", uint8(0xff))
	f.Add(restart+"\x00"+restart, uint8(0b01))
	f.Add("a=ice-ufrag:"+ufrag+"\r\nm=audio 9 RTP/AVP 0\r\nm=video 9 RTP/AVP 0\r\nm=video 9 RTP/AVP 0\r\na=candidate:"+host+"\r\n", uint8(1))

	f.Fuzz(func(t *testing.T, patches string, ifMatch uint8) {
		pc, err := e.NewPeerConnection()
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = pc.Close() }()
		if err := pc.SetRemoteDescription(offer); err != nil {
			t.Fatal(err)
		}
		if err := Answer(pc, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		is, err := e.NewICESession(pc, log)
		if err != nil {
			t.Fatal(err)
		}
		tab := NewSessions(Limits{}, log)
		mux := http.NewServeMux()
		tab.Register(mux)
		id, err := tab.Reserve(Claim{Peer: "192.0.2.1:50000"})
		if err != nil {
			t.Fatal(err)
		}
		tab.Set(id, fuzzSession{is})

		usable := 0 // candidates of the bodies usableCandidate accepts (an upper bound)
		for i, body := range strings.SplitN(patches, "\x00", maxFuzzPatches) {
			r := httptest.NewRequest(http.MethodPatch, SessionPathPrefix+id, strings.NewReader(body))
			r.Header.Set("Content-Type", SdpfragType)
			if ifMatch&(1<<i) != 0 {
				r.Header.Set("If-Match", "*")
			}
			w := httptest.NewRecorder()
			mux.ServeHTTP(w, r)
			switch w.Code {
			case http.StatusOK, http.StatusNoContent, http.StatusBadRequest, http.StatusPreconditionFailed,
				http.StatusPreconditionRequired, http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
			default:
				t.Fatalf("PATCH %d answered %d %s, not a status servePatch documents; body:\n%q", i, w.Code, w.Body, body)
			}
			if w.Code == http.StatusOK {
				if _, err := ParseSdpfrag(w.Body.String()); err != nil {
					t.Fatalf("PATCH %d: the ICE restart's answer is not an sdpfrag (%v):\n%s", i, err, w.Body)
				}
			}
			if frag, err := ParseSdpfrag(body); err == nil {
				for _, c := range allCandidates(frag) {
					if udpRTPCandidate(c) {
						usable++
					}
				}
			}
		}

		// What reached the agent passed the filter: UDP, RTP component.
		n := 0
		for _, st := range pc.GetStats() {
			c, ok := st.(webrtc.ICECandidateStats)
			if !ok || c.Type != webrtc.StatsTypeRemoteCandidate {
				continue
			}
			n++
			if !strings.EqualFold(c.Protocol, "udp") {
				t.Errorf("remote candidate %s:%d over %s reached the agent", c.IP, c.Port, c.Protocol)
			}
		}
		if n > usable {
			t.Errorf("the agent holds %d remote candidates, the PATCHes had %d usable ones", n, usable)
		}
	})
}

// udpRTPCandidate reports whether the a=candidate value v is one the
// bridge can use at all: well formed, UDP, RTP component (it gathers UDP
// only and muxes RTCP).
func udpRTPCandidate(v string) bool {
	c, err := ice.UnmarshalCandidate(v)
	return err == nil && c.NetworkType().IsUDP() && c.Component() == ice.ComponentRTP
}

// allCandidates returns every a=candidate value of f.
func allCandidates(f *Sdpfrag) []string {
	out := append([]string(nil), f.Candidates...)
	for _, m := range f.Media {
		out = append(out, m.Candidates...)
	}
	return out
}
