package rtc

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

func TestOrderCandidates(t *testing.T) {
	in := strings.Join([]string{
		"v=0",
		"m=video 9 UDP/TLS/RTP/SAVPF 96",
		"a=mid:0",
		"a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
		"a=candidate:2 1 udp 2130706431 ::1 5000 typ host",
		"a=candidate:3 1 tcp 1671430143 203.0.113.7 5000 typ host tcptype passive",
		"a=candidate:4 1 udp 2130706431 192.168.1.10 5000 typ host",
		"a=candidate:5 1 udp 2130706431 fe80::1 5000 typ host",
		"a=candidate:6 1 udp 1694498815 198.51.100.9 40000 typ srflx raddr 0.0.0.0 rport 5000",
		"a=candidate:7 1 udp 2130706431 2001:db8::5 5000 typ host",
		"a=candidate:8 1 udp 2130706431 203.0.113.7 5000 typ host",
		"a=candidate:9 1 udp 16777215 198.51.100.20 3478 typ relay raddr 0.0.0.0 rport 5000",
		"a=candidate:10 1 udp 2130706431 abcd.local 5000 typ host",
		"a=candidate:11 1 udp 2130706431 8.8.4.4 5000 typ host",
		"a=end-of-candidates",
		"m=audio 9 UDP/TLS/RTP/SAVPF 111",
		"a=mid:1",
		"a=candidate:12 1 udp 2130706431 127.0.0.1 5000 typ host",
		"a=candidate:13 1 udp 2130706431 10.0.0.2 5000 typ host",
		"",
	}, "\n") // LF in: CRLF out
	got := OrderCandidates(in, []netip.Addr{netip.MustParseAddr("203.0.113.7")})
	if strings.Contains(strings.ReplaceAll(got, "\r\n", ""), "\n") || !strings.HasSuffix(got, "\r\n") {
		t.Fatalf("not CRLF throughout: %q", got)
	}
	var order []string
	for _, l := range strings.Split(got, "\r\n") {
		if v, ok := strings.CutPrefix(l, "a=candidate:"); ok {
			order = append(order, strings.Fields(v)[0])
		}
	}
	// NAT 1:1 host, public host (v4, v6), srflx, private host, relay,
	// link-local, loopback (v4, v6), mDNS, TCP; each section on its own.
	want := "8 11 7 6 4 9 5 1 2 10 3 13 12"
	if strings.Join(order, " ") != want {
		t.Errorf("order %v, want %s", order, want)
	}
	lines := strings.Split(got, "\r\n")
	if lines[2] != "a=mid:0" || lines[14] != "a=end-of-candidates" || lines[15] != "m=audio 9 UDP/TLS/RTP/SAVPF 111" {
		t.Errorf("other lines moved:\n%s", got)
	}
}

func TestUsableCandidate(t *testing.T) {
	e := &Engine{}
	for cand, want := range map[string]dropReason{
		"1 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw":                     "",
		"candidate:1 1 UDP 2015363327 198.18.0.1 34455 typ host":                                  "",
		"1 1 udp 2122260223 fe80::b4f4:97ff:fed4:9e53 34468 typ host":                             "",
		"1 1 udp 1694498815 198.51.100.9 40000 typ srflx raddr 0.0.0.0 rport 5000":                "",
		"1 1 udp 2122260223 1f4712db-ea17-4bcf-a596-105139dfd8bf.local 54321 typ host":            dropNotIP,
		"2 1 TCP 1015021823 198.18.0.1 9 typ host tcptype active":                                 dropNotUDP,
		"1 2 udp 2122260222 192.0.2.1 61765 typ host":                                             dropRTCP,
		"1 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag Old1":                     dropOtherSession,
		"1 1 udp 2122260223 192.0.2.1":                                                            dropMalformed,
		"garbage":                                                                                 dropMalformed,
		"1 1 udp 2122260223 192.0.2.1 61764 typ unknowntype":                                      dropMalformed,
		"1 1 sctp 2122260223 192.0.2.1 61764 typ host":                                            dropMalformed,
		"1387637174 1 udp 2122260223 192.0.2.1 99999 typ host generation 0 ufrag EsAw network-id": dropMalformed,
		"1 1 udp 2122260223 224.0.0.251 5353 typ host":                                            dropAddress,
		"1 1 udp 2122260223 127.0.0.1 5000 typ host":                                              dropAddress,
		"1 1 udp 2122260223 192.0.2.1 0 typ host":                                                 dropAddress,
	} {
		if _, got := e.usableCandidate(cand, "EsAw"); got != want {
			t.Errorf("%q: %q, want %q", cand, got, want)
		}
	}
}

func TestIfMatch(t *testing.T) {
	const cur = `"abc123"`
	cases := []struct {
		values         []string
		present, match bool
	}{
		{nil, false, false},
		{[]string{""}, false, false},
		{[]string{"*"}, true, true},
		{[]string{`"*"`}, true, true}, // the quoting of RFC 9725's examples
		{[]string{`"old", "*"`}, true, true},
		{[]string{`"**"`}, true, false},
		{[]string{`W/"*"`}, true, false},
		{[]string{`"abc123"`}, true, true},
		{[]string{` "old", "abc123" `}, true, true},
		{[]string{`"old"`, `"abc123"`}, true, true},
		{[]string{`"old"`}, true, false},
		{[]string{`W/"abc123"`}, true, false}, // If-Match compares strongly
		{[]string{`abc123`}, true, false},     // unquoted: not an entity-tag
		{[]string{`"abc123`}, true, false},    // unterminated
		{[]string{`"1"`}, true, false},
	}
	for _, c := range cases {
		present, match := ifMatch(c.values, cur)
		if present != c.present || match != c.match {
			t.Errorf("If-Match %q: present %v match %v, want %v %v", c.values, present, match, c.present, c.match)
		}
	}
}

func TestRestartOffer(t *testing.T) {
	prev := "v=0\r\no=- 42 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=ice-options:trickle\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpasswordoldpassword\r\na=mid:0\r\na=sendonly\r\n" +
		"a=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host\r\na=end-of-candidates\r\na=rtpmap:111 opus/48000/2\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpasswordoldpassword\r\na=mid:1\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n"
	var local sdp.SessionDescription
	if err := local.UnmarshalString("v=0\r\no=- 7 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n" +
		"m=video 0 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=inactive\r\n"); err != nil {
		t.Fatal(err)
	}
	got, err := restartOffer(prev, &local, "new2", "newpasswordnewpassword")
	if err != nil {
		t.Fatal(err)
	}
	var d sdp.SessionDescription
	if err := d.UnmarshalString(got); err != nil {
		t.Fatal(err)
	}
	if d.Origin.SessionVersion != 3 {
		t.Errorf("session version %d, want 3", d.Origin.SessionVersion)
	}
	for _, bad := range []string{"old1", "oldpassword", "a=candidate", "end-of-candidates"} {
		if strings.Contains(got, bad) {
			t.Errorf("restart offer still has %q:\n%s", bad, got)
		}
	}
	if u, p := iceCredentials(&d); u != "new2" || p != "newpasswordnewpassword" || strings.Count(got, "a=ice-ufrag:new2") != 2 {
		t.Errorf("credentials %q %q:\n%s", u, p, got)
	}
	if _, ok := d.MediaDescriptions[0].Attribute("sendonly"); !ok {
		t.Error("audio direction changed")
	}
	if _, ok := d.MediaDescriptions[1].Attribute("inactive"); !ok || strings.Count(got, "sendonly") != 1 {
		t.Errorf("video answered inactive is not offered inactive:\n%s", got)
	}
}

// testEngine returns an Engine on a loopback UDP port.
func testEngine(t testing.TB, log *slog.Logger) *Engine {
	t.Helper()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Settings{UDP: udp, IncludeLoopback: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// testClient is a pion peer of the kind browsers are: full ICE, trickle.
func testClient(t testing.TB) *webrtc.PeerConnection {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return pc
}

// offerFrag returns the sdpfrag a WHIP/WHEP client PATCHes for its local
// description: credentials and candidates of the first media section.
func offerFrag(t *testing.T, pc *webrtc.PeerConnection) *Sdpfrag {
	t.Helper()
	d, err := pc.LocalDescription().Unmarshal()
	if err != nil {
		t.Fatal(err)
	}
	return localFrag(d, nil)
}

// recvClient returns a testClient that receives one video track, its
// offer set and gathered, and that offer as CreateOffer made it: without
// candidates.
func recvClient(t *testing.T) (*webrtc.PeerConnection, string) {
	t.Helper()
	client := testClient(t)
	if _, err := client.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	offer, err := client.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(client)
	if err := client.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	return client, offer.SDP
}

// vp8Session answers offer as a WHIP or WHEP session does (SetRemoteOffer,
// Answer, NewICESession), from a server PeerConnection that sends one VP8
// track.
func vp8Session(t *testing.T, e *Engine, offer string) (*ICESession, *webrtc.PeerConnection, *webrtc.TrackLocalStaticRTP) {
	t.Helper()
	server, track := vp8Server(t, e)
	if _, err := server.AddTrack(track); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if err := e.SetRemoteOffer(server, offer, log); err != nil {
		t.Fatal(err)
	}
	if err := Answer(server, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	ice, err := e.NewICESession(server, log)
	if err != nil {
		t.Fatal(err)
	}
	return ice, server, track
}

// vp8Server returns a server PeerConnection of e and a VP8 track for it
// to send, not added yet.
func vp8Server(t *testing.T, e *Engine) (*webrtc.PeerConnection, *webrtc.TrackLocalStaticRTP) {
	t.Helper()
	server, err := e.NewPeerConnection()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close() })
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "test")
	if err != nil {
		t.Fatal(err)
	}
	return server, track
}

// TestICESessionRestart: a pion client trickles candidates (usable ones
// and ones to drop) and restarts ICE through an ICESession; the server's
// RTP keeps reaching it over the new ICE session.
func TestICESessionRestart(t *testing.T) {
	e := testEngine(t, slog.New(slog.DiscardHandler))

	// The offer goes without candidates (as OBS and whip-whep.js send it);
	// they come by trickle.
	client, offer := recvClient(t)
	var mu sync.Mutex
	received := 0
	var iceStates []webrtc.ICEConnectionState
	client.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		mu.Lock()
		iceStates = append(iceStates, s)
		mu.Unlock()
	})
	client.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			mu.Lock()
			received++
			mu.Unlock()
		}
	})
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return received
	}
	waitMore := func(than int, what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for count() < than+20 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d packets received, no more than %d", what, count(), than)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	ice, _, track := vp8Session(t, e, offer)
	ans := ice.Answer()
	if !strings.Contains(ans, "a=end-of-candidates\r\n") || !strings.Contains(ans, "a=candidate:") {
		t.Fatalf("answer without its candidates or end-of-candidates:\n%s", ans)
	}
	etag0 := ice.ETag()
	if len(etag0) != 34 || etag0[0] != '"' || etag0[33] != '"' {
		t.Fatalf("ETag %q: want a quoted strong entity-tag of 128 random bits", etag0)
	}
	if err := client.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans}); err != nil {
		t.Fatal(err)
	}

	// Trickle the client's candidates, with some to drop.
	frag := offerFrag(t, client)
	if ice.RemoteICEUfrag() != frag.ICEUfrag {
		t.Fatalf("remote ufrag %q, the client's is %q", ice.RemoteICEUfrag(), frag.ICEUfrag)
	}
	frag.Media[0].Candidates = append([]string{
		"9 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active",
		"9 2 udp 2122260222 127.0.0.1 61765 typ host",
		"9 1 udp 2122260223 127.0.0.1 61764 typ host generation 0 ufrag Old1",
		"garbage",
	}, frag.Media[0].Candidates...)
	frag.Media = append(frag.Media, SdpfragMedia{Kind: "audio", Port: "9", Proto: "RTP/AVP", Mid: "nosuchmid", Candidates: []string{"1 1 udp 1 10.9.9.9 9 typ host"}})
	if err := ice.Trickle(frag); err != nil {
		t.Fatal(err)
	}
	if err := ice.Trickle(&Sdpfrag{ICEUfrag: "other"}); err == nil || !strings.Contains(err.Error(), "412") {
		t.Errorf("trickle for another ICE session: %v, want 412", err)
	}

	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for seq := uint16(0); ; seq++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			p := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 450, Marker: true}, Payload: []byte{0x10, 0x00, byte(seq)}}
			_ = track.WriteRTP(p)
		}
	}()
	defer func() { close(stop); <-sent }()
	waitMore(0, "before the restart")

	// ICE restart: the client's new credentials and candidates in, the
	// server's new ones out.
	mu.Lock()
	before := len(iceStates)
	mu.Unlock()
	restart, err := client.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(client)
	if err := client.SetLocalDescription(restart); err != nil {
		t.Fatal(err)
	}
	<-gathered
	rf := offerFrag(t, client)
	if rf.ICEUfrag == frag.ICEUfrag {
		t.Fatal("the client's restart offer kept its ufrag")
	}
	prevAnswer := client.CurrentRemoteDescription().SDP
	serverUfrag := localFrag(mustParse(t, prevAnswer), nil).ICEUfrag
	body, etag1, err := ice.RestartICE(rf)
	if err != nil {
		t.Fatal(err)
	}
	if etag1 == etag0 || etag1 != ice.ETag() || ice.RemoteICEUfrag() != rf.ICEUfrag {
		t.Errorf("after the restart: ETag %s (was %s, current %s), remote ufrag %q", etag1, etag0, ice.ETag(), ice.RemoteICEUfrag())
	}
	af, err := ParseSdpfrag(body)
	if err != nil {
		t.Fatalf("restart answer %q: %v", body, err)
	}
	if af.ICEUfrag == "" || af.ICEUfrag == serverUfrag || af.ICEPwd == "" || len(af.Media) != 1 ||
		len(af.Media[0].Candidates) == 0 || !af.Media[0].EndOfCandidates || af.Media[0].Mid != "0" || !strings.HasSuffix(body, "\r\n") {
		t.Fatalf("restart answer:\n%s(server ufrag was %q)", body, serverUfrag)
	}
	if err := client.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: mustApply(t, prevAnswer, af)}); err != nil {
		t.Fatal(err)
	}
	// The client's agent checks again with the new credentials and
	// connects; media flows on.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		states := append([]webrtc.ICEConnectionState(nil), iceStates[before:]...)
		mu.Unlock()
		if len(states) >= 2 && states[len(states)-1] == webrtc.ICEConnectionStateConnected {
			if states[0] != webrtc.ICEConnectionStateChecking {
				t.Errorf("ICE states after the restart %v, want checking first", states)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ICE states after the restart: %v", states)
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitMore(count(), "after the restart")

	// The old ICE session's candidates are refused now.
	if err := ice.Trickle(frag); err == nil {
		t.Error("trickle with the old ufrag accepted after the restart")
	}
}

func mustParse(t *testing.T, s string) *sdp.SessionDescription {
	t.Helper()
	var d sdp.SessionDescription
	if err := d.UnmarshalString(s); err != nil {
		t.Fatal(err)
	}
	return &d
}

func mustApply(t *testing.T, desc string, f *Sdpfrag) string {
	t.Helper()
	s, err := ApplySdpfrag(desc, f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestApplySdpfrag(t *testing.T) {
	desc := "v=0\r\no=- 42 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:srv1\r\na=ice-pwd:srvpasswordsrvpassword1\r\na=mid:0\r\n" +
		"a=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host\r\na=end-of-candidates\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:srv1\r\na=ice-pwd:srvpasswordsrvpassword1\r\na=mid:1\r\n"
	f, err := ParseSdpfrag("a=ice-ufrag:srv2\r\na=ice-pwd:srvpasswordsrvpassword2\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n" +
		"a=candidate:2 1 udp 2130706431 10.0.0.2 6000 typ host\r\na=end-of-candidates\r\n" +
		"m=video 9 RTP/AVP 0\r\na=mid:1\r\na=candidate:3 1 udp 2130706431 10.0.0.3 7000 typ host\r\n")
	if err != nil {
		t.Fatal(err)
	}
	d := mustParse(t, mustApply(t, desc, f))
	if d.Origin.SessionVersion != 3 {
		t.Errorf("version %d", d.Origin.SessionVersion)
	}
	want := [][]string{
		{"ice-ufrag srv2", "ice-pwd srvpasswordsrvpassword2", "mid 0", "candidate 2 1 udp 2130706431 10.0.0.2 6000 typ host", "end-of-candidates "},
		{"ice-ufrag srv2", "ice-pwd srvpasswordsrvpassword2", "mid 1", "candidate 3 1 udp 2130706431 10.0.0.3 7000 typ host"},
	}
	for i, m := range d.MediaDescriptions {
		var got []string
		for _, a := range m.Attributes {
			got = append(got, a.Key+" "+a.Value)
		}
		if strings.Join(got, "|") != strings.Join(want[i], "|") {
			t.Errorf("section %d: %q, want %q", i, got, want[i])
		}
	}
}
