package rtc

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// sink is a UDP socket on loopback that counts what it receives and never
// answers: an address a hostile client points candidates at.
type sink struct {
	conn *net.UDPConn
	got  atomic.Int64
}

func newSinks(t *testing.T, n int) []*sink {
	t.Helper()
	sinks := make([]*sink, n)
	var wg sync.WaitGroup
	for i := range sinks {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		s := &sink{conn: c}
		sinks[i] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			for {
				if _, _, err := c.ReadFrom(buf); err != nil {
					return
				}
				s.got.Add(1)
			}
		}()
	}
	t.Cleanup(func() {
		for _, s := range sinks {
			_ = s.conn.Close()
		}
		wg.Wait()
	})
	return sinks
}

func (s *sink) candidate(foundation int) string {
	return fmt.Sprintf("%d 1 udp 2130706431 127.0.0.1 %d typ host", foundation, s.conn.LocalAddr().(*net.UDPAddr).Port)
}

// received returns the datagrams the sinks got and how many sinks got any.
func received(sinks []*sink) (packets, destinations int) {
	for _, s := range sinks {
		if n := s.got.Load(); n > 0 {
			packets += int(n)
			destinations++
		}
	}
	return packets, destinations
}

// unconnectedSession answers a real pion client's offer in which the
// client's own candidates are replaced by cands, as a WHEP session does:
// the session can never connect, and every check it sends goes to an
// address the client chose.
func unconnectedSession(t *testing.T, e *Engine, cands []string) (*ICESession, *webrtc.PeerConnection) {
	t.Helper()
	client, _ := recvClient(t)
	var b strings.Builder
	for l := range strings.Lines(client.LocalDescription().SDP) {
		if !strings.HasPrefix(l, "a=candidate:") && !strings.HasPrefix(l, "a=end-of-candidates") {
			b.WriteString(l)
		}
	}
	for _, c := range cands { // the offer's one media section is last
		b.WriteString("a=candidate:" + c + "\r\n")
	}
	ice, server, _ := vp8Session(t, e, b.String())
	return ice, server
}

// trickleBody is the body of a trickle PATCH carrying cands for the
// session's ICE session.
func trickleBody(ufrag string, cands []string) string {
	var b strings.Builder
	b.WriteString("a=ice-ufrag:" + ufrag + "\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n")
	for _, c := range cands {
		b.WriteString("a=candidate:" + c + "\r\n")
	}
	return b.String()
}

// remoteCandidates returns the remote candidates pc's ICE agent has.
func remoteCandidates(pc *webrtc.PeerConnection) int {
	n := 0
	for _, s := range pc.GetStats() {
		if c, ok := s.(webrtc.ICECandidateStats); ok && c.Type == webrtc.StatsTypeRemoteCandidate {
			n++
		}
	}
	return n
}

// TestICECandidateLimit: the remote candidates of a session are counted
// across its offer and its trickle PATCHes together; those over
// ice_candidates, and those at addresses the bridge never probes, are
// dropped and counted, the others reach the agent. A candidate trickled
// again costs nothing more.
func TestICECandidateLimit(t *testing.T) {
	e := testEngine(t, slog.New(slog.DiscardHandler))
	const limit = DefaultICECandidates
	sinks := newSinks(t, 30)
	var offered []string
	for i, s := range sinks[:15] {
		offered = append(offered, s.candidate(i))
	}
	never := []string{
		"90 1 udp 2130706431 0.0.0.0 5000 typ host",
		"91 1 udp 2130706431 224.0.0.251 5353 typ host",
		"92 1 udp 2130706431 255.255.255.255 5000 typ host",
		"93 1 udp 2130706431 :: 5000 typ host",
		"94 1 udp 2130706431 ff02::1 5000 typ host",
		"95 1 udp 2130706431 127.0.0.1 0 typ host",
	}
	ice, pc := unconnectedSession(t, e, append(offered, never[:3]...))

	var trickled []string
	for i, s := range sinks[15:] {
		trickled = append(trickled, s.candidate(15+i))
	}
	// The offer's candidates again (free), 15 new ones (5 over the
	// limit), the rest of the never-probed ones.
	frag, err := ParseSdpfrag(trickleBody(ice.RemoteICEUfrag(), append(append(offered[:3:3], trickled...), never[3:]...)))
	if err != nil {
		t.Fatal(err)
	}
	if err := ice.Trickle(frag); err != nil {
		t.Fatal(err)
	}
	wantDropped := uint64(len(offered) + len(trickled) - limit + len(never))
	if got := e.ICEStats().CandidatesDropped; got != wantDropped {
		t.Errorf("%d candidates dropped, want %d (%d offered and trickled, limit %d, %d at addresses never probed)",
			got, wantDropped, len(offered)+len(trickled), limit, len(never))
	}
	// pion adds trickled candidates on goroutines of its own.
	deadline := time.Now().Add(5 * time.Second)
	for remoteCandidates(pc) < limit && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if n := remoteCandidates(pc); n != limit {
		t.Errorf("the ICE agent has %d remote candidates, want the limit, %d", n, limit)
	}
}

// TestUnprobeable: the addresses no client may make the bridge probe.
func TestUnprobeable(t *testing.T) {
	for addr, want := range map[string]bool{
		"0.0.0.0": true, "0.1.2.3": true, "::": true, "224.0.0.1": true, "239.255.255.250": true,
		"255.255.255.255": true, "240.0.0.1": true, "ff02::1": true, "::ffff:224.0.0.1": true,
		"127.0.0.1": true, "::1": true,
		"192.0.2.1": false, "10.0.0.2": false, "192.168.1.7": false, "fe80::1": false, "2001:db8::5": false,
	} {
		if got := unprobeable(netip.MustParseAddr(addr), false) != ""; got != want {
			t.Errorf("%s: unprobeable %v, want %v", addr, got, want)
		}
	}
	if r := unprobeable(netip.MustParseAddr("127.0.0.1"), true); r != "" {
		t.Errorf("loopback with loopback candidates gathered: %q, want probed", r)
	}
}

// patchSession is an ICESession as a session resource of a Sessions
// table.
type patchSession struct {
	*ICESession
	pc *webrtc.PeerConnection
}

func (s patchSession) Close(string) { _ = s.pc.Close() }

// TestPatchFlood: PATCHes over patch_rate per second on one session are
// answered 429 with Retry-After, and the candidates they carry never reach
// the agent.
func TestPatchFlood(t *testing.T) {
	e := testEngine(t, slog.New(slog.DiscardHandler))
	ice, pc := unconnectedSession(t, e, nil)
	table := NewSessions(Limits{}, slog.New(slog.DiscardHandler))
	id, err := table.Reserve(Claim{Peer: "127.0.0.1:40000"})
	if err != nil {
		t.Fatal(err)
	}
	if !table.Set(id, patchSession{ice, pc}) {
		t.Fatal("session not stored")
	}
	mux := http.NewServeMux()
	table.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	sinks := newSinks(t, 1)
	body := trickleBody(ice.RemoteICEUfrag(), []string{sinks[0].candidate(1)})
	const patches = 4 * DefaultPatchRate
	statuses := map[int]int{}
	var retryAfter string
	for range patches {
		req, err := http.NewRequest(http.MethodPatch, srv.URL+SessionPathPrefix+id, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", SdpfragType)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		statuses[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests {
			retryAfter = resp.Header.Get("Retry-After")
		}
	}
	// The burst is PatchRate; a few more may pass as the bucket refills
	// while the requests go out.
	if statuses[http.StatusNoContent] < DefaultPatchRate || statuses[http.StatusTooManyRequests] == 0 ||
		statuses[http.StatusNoContent]+statuses[http.StatusTooManyRequests] != patches {
		t.Fatalf("%d PATCHes at once answered %v, want %d or a few more 204 and the rest 429", patches, statuses, DefaultPatchRate)
	}
	if retryAfter == "" || retryAfter == "0" {
		t.Errorf("429 with Retry-After %q", retryAfter)
	}
	if got := e.ICEStats().PatchesRefused; got != uint64(statuses[http.StatusTooManyRequests]) {
		t.Errorf("%d PATCHes counted refused, %d answered 429", got, statuses[http.StatusTooManyRequests])
	}
}

// TestCheckBound: a session that never connects, whose client offers and
// trickles candidates at many addresses (sockets of the test that never
// answer), sends connectivity checks to at most ice_candidates of them and
// at most ice_check_rate per second (plus one second's burst). The review
// measured 32,500 datagrams in 8 s from 5,320 trickled candidates.
func TestCheckBound(t *testing.T) {
	const (
		limit     = DefaultICECandidates
		checkRate = 10 // per second: the limit's checks would fit in the default
		measure   = 8 * time.Second
	)
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Settings{UDP: udp, IncludeLoopback: true, Log: slog.New(slog.DiscardHandler), ICECheckRate: checkRate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })

	sinks := newSinks(t, 200)
	var offered []string
	for i, s := range sinks[:40] {
		offered = append(offered, s.candidate(i))
	}
	start := time.Now()
	ice, _ := unconnectedSession(t, e, offered)
	// 20 PATCHes of 8 candidates each, within the PATCH rate: what bounds
	// the datagrams is the candidate limit and the check rate.
	rest := sinks[40:]
	for p := 0; p < 20; p++ {
		var cands []string
		for i, s := range rest[p*8 : p*8+8] {
			cands = append(cands, s.candidate(40+p*8+i))
		}
		frag, err := ParseSdpfrag(trickleBody(ice.RemoteICEUfrag(), cands))
		if err != nil {
			t.Fatal(err)
		}
		if err := ice.Trickle(frag); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second / DefaultPatchRate)
	}
	time.Sleep(measure - time.Since(start))
	packets, destinations := received(sinks)
	elapsed := time.Since(start)
	t.Logf("%d datagrams to %d of %d addresses in %v", packets, destinations, len(sinks), elapsed.Round(time.Millisecond))
	if destinations > limit {
		t.Errorf("checks went to %d addresses the client chose, want at most %d (ice_candidates)", destinations, limit)
	}
	if max := int(float64(checkRate) * (elapsed.Seconds() + 1)); packets > max {
		t.Errorf("%d checks in %v, want at most %d (ice_check_rate %d/s and a second's burst)", packets, elapsed, max, checkRate)
	}
}

// bindingRequest is a STUN Binding request as an ICE agent sends it:
// USERNAME (padded), then an attribute after it.
func bindingRequest(username string) []byte {
	attr := func(typ uint16, v []byte) []byte {
		b := binary.BigEndian.AppendUint16(nil, typ)
		b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
		b = append(b, v...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	body := append(attr(stunUsername, []byte(username)), attr(0x8028, []byte{1, 2, 3, 4})...) // FINGERPRINT
	p := binary.BigEndian.AppendUint16(nil, stunBindingRequest)
	p = binary.BigEndian.AppendUint16(p, uint16(len(body)))
	p = binary.BigEndian.AppendUint32(p, stunMagicCookie)
	p = append(p, make([]byte, 12)...) // transaction ID
	return append(p, body...)
}

func TestCheckUfrag(t *testing.T) {
	if u, ok := checkUfrag(bindingRequest("remote7:LoCaL")); !ok || u != "LoCaL" {
		t.Errorf("binding request: %q %v, want LoCaL", u, ok)
	}
	resp := bindingRequest("a:b")
	resp[0], resp[1] = 0x01, 0x01 // a Binding success response: not a check
	for name, p := range map[string][]byte{
		"response": resp,
		"RTP":      {0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"short":    bindingRequest("a:b")[:19],
		"cut":      bindingRequest("remote:local")[:26],
	} {
		if u, ok := checkUfrag(p); ok {
			t.Errorf("%s: taken for a check of %q", name, u)
		}
	}
}

func FuzzCheckUfrag(f *testing.F) {
	f.Add(bindingRequest("remote:local"))
	f.Add(bindingRequest(""))
	f.Fuzz(func(t *testing.T, p []byte) {
		_, _ = checkUfrag(p) // must not panic
	})
}

// TestCheckBudget: an agent's checks pass up to the burst, then at the
// rate; an ICE restart's new credentials draw from the same budget; idle
// budgets are forgotten.
func TestCheckBudget(t *testing.T) {
	b := newCheckBudget(10)
	now := time.Now()
	sent := 0
	for range 30 {
		if b.allow("agent1", now) {
			sent++
		}
	}
	if sent != 10 || b.dropped.Load() != 20 {
		t.Fatalf("%d of 30 checks at once sent, %d dropped: want the burst, 10", sent, b.dropped.Load())
	}
	if !b.allow("agent2", now) {
		t.Error("another agent's check refused: budgets are per agent")
	}
	b.carryOver("agent1", "agent1-restarted")
	if b.allow("agent1-restarted", now) {
		t.Error("a restart refilled the budget")
	}
	if !b.allow("agent1-restarted", now.Add(100*time.Millisecond)) {
		t.Error("no check 100 ms later at 10/s")
	}
	b.allow("agent3", now.Add(time.Hour)) // sweeps
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.byUfrag) != 1 {
		t.Errorf("%d budgets kept after an hour idle, want only the one in use", len(b.byUfrag))
	}
}
