package rtc

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/ice/v4"
)

// TestAddressAddedAndRemoved: with listen.webrtc_udp on a wildcard
// address, an address added to the host after start (IPv4 and IPv6, on a
// the loopback interface: a kernel without dummy interfaces still has it)
// is offered to the sessions that
// start after the watcher finds it, and a connectivity check sent to it is
// answered from it; once the address is removed, its socket is closed and
// new sessions no longer offer it. Before, only the addresses present at
// start were listened on.
func TestAddressAddedAndRemoved(t *testing.T) {
	// Unique per run: tests run in parallel on one host, and every
	// Engine with loopback that starts while the addresses exist listens
	// on them too (harmless: they are local).
	v4 := netip.AddrFrom4([4]byte{198, 18, randByte(), randByte() | 1})
	v6 := netip.MustParseAddr(fmt.Sprintf("fd00:77::%x", uint16(randByte())<<8|uint16(randByte())|1))
	const link = "lo"

	e, port := wildcardEngine(t)

	t.Cleanup(func() {
		_ = exec.Command("ip", "addr", "del", v4.String()+"/32", "dev", link).Run()
		_ = exec.Command("ip", "addr", "del", v6.String()+"/128", "dev", link).Run()
	})
	ipCmd(t, "addr", "add", v4.String()+"/32", "dev", link)
	ipCmd(t, "addr", "add", v6.String()+"/128", "dev", link, "nodad")
	for _, a := range []netip.Addr{v4, v6} {
		to := netip.AddrPortFrom(a, port)
		waitFor(t, func() bool { return slices.Contains(answerCandidates(t, e), to) },
			"a new session's answer offers "+to.String())
	}

	_, offer := recvClient(t)
	_, server, _ := vp8Session(t, e, offer)
	ad := mustParse(t, server.LocalDescription().SDP)
	user := iceAttr(ad, "ice-ufrag") + ":" + iceAttr(mustParse(t, offer), "ice-ufrag")
	for _, a := range []netip.Addr{v4, v6} {
		to := netip.AddrPortFrom(a, port)
		from := "127.0.0.1:0"
		if a.Is6() {
			from = "[::1]:0"
		}
		if got := checkReplySource(t, from, to, user, iceAttr(ad, "ice-pwd")); got != to {
			t.Errorf("check to the new address %s: reply came from %s", to, got)
		}
		if !udpBound(t, to) {
			t.Errorf("no socket bound to %s", to)
		}
	}

	ipCmd(t, "addr", "del", v4.String()+"/32", "dev", link)
	ipCmd(t, "addr", "del", v6.String()+"/128", "dev", link)
	for _, a := range []netip.Addr{v4, v6} {
		to := netip.AddrPortFrom(a, port)
		waitFor(t, func() bool { return !udpBound(t, to) }, "the socket of removed address "+to.String()+" is closed")
	}
	for _, c := range answerCandidates(t, e) {
		if c.Addr() == v4 || c.Addr() == v6 {
			t.Errorf("after removal, a new session's answer still offers %s", c)
		}
	}
}

// answerCandidates returns the UDP host candidates of the answer of a new
// session of e.
func answerCandidates(t *testing.T, e *Engine) []netip.AddrPort {
	t.Helper()
	_, offer := recvClient(t)
	_, server, _ := vp8Session(t, e, offer)
	var cands []netip.AddrPort
	for _, m := range mustParse(t, server.LocalDescription().SDP).MediaDescriptions {
		for _, a := range m.Attributes {
			if a.Key != "candidate" {
				continue
			}
			c, err := ice.UnmarshalCandidate(a.Value)
			if err != nil {
				t.Fatalf("answer candidate %q: %v", a.Value, err)
			}
			if c.Type() == ice.CandidateTypeHost && !c.NetworkType().IsTCP() {
				cands = append(cands, netip.AddrPortFrom(netip.MustParseAddr(c.Address()), uint16(c.Port())))
			}
		}
	}
	_ = server.Close()
	return cands
}

// udpBound reports whether a UDP socket of this host is bound to ap, as
// ss(8) lists them.
func udpBound(t *testing.T, ap netip.AddrPort) bool {
	t.Helper()
	out, err := exec.Command("ss", "-Huan", "src", ap.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ss -Huan src %s: %v: %s", ap, err, out)
	}
	return len(strings.TrimSpace(string(out))) > 0
}

// waitFor polls cond for up to 5 scans of the address watcher and fails
// the test naming what did not happen.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * addrScanInterval)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", 5*addrScanInterval, what)
		}
		time.Sleep(addrScanInterval / 4)
	}
}

// ipCmd runs ip(8) with args. Refused (not root, no ip, a kernel without
// address changes), it fails the test with CI=true and skips it
// elsewhere, naming the reason.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func randByte() byte {
	var b [1]byte
	_, _ = rand.Read(b[:])
	return b[0]
}
