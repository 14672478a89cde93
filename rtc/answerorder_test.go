package rtc

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestAnswerListsRoutedAddressFirst: a client whose offer has a candidate
// on a private network of the bridge's host (a LAN, a Docker bridge, a
// veth) gets the bridge's address on that network as the answer's first
// candidate, before the host's other (public) addresses, and with the
// highest priority; the UDP host candidates of a component have unique
// priorities (RFC 8445 section 5.1.2.1). Before, the public address came
// first and every address had one priority: a pion client then took the
// first pair it had formed, which could be one that cannot reach the
// bridge, and nominated one check interval (200 ms) late. The network is
// one end of a veth pair (IPv4 private and IPv6 ULA); ip refused: fails
// with CI=true, else skips.
func TestAnswerListsRoutedAddressFirst(t *testing.T) {
	r := randByte()
	link, peer := fmt.Sprintf("bao%d", r), fmt.Sprintf("bap%d", r)
	local4 := netip.AddrFrom4([4]byte{10, 234, r, 1})
	client4 := netip.AddrFrom4([4]byte{10, 234, r, 2})
	local6 := netip.MustParseAddr(fmt.Sprintf("fd00:78:%x::1", r))
	client6 := netip.MustParseAddr(fmt.Sprintf("fd00:78:%x::2", r))
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", link).Run() })
	ipCmd(t, "link", "add", link, "type", "veth", "peer", "name", peer)
	ipCmd(t, "addr", "add", local4.String()+"/24", "dev", link)
	ipCmd(t, "addr", "add", local6.String()+"/64", "dev", link, "nodad")
	ipCmd(t, "link", "set", link, "up")
	ipCmd(t, "link", "set", peer, "up")

	e, port := wildcardEngine(t)
	for _, a := range []netip.Addr{local4, local6} {
		to := netip.AddrPortFrom(a, port)
		waitFor(t, func() bool { return slices.Contains(answerCandidates(t, e), to) },
			"a new session's answer offers "+to.String())
	}

	for _, c := range []struct{ client, want netip.Addr }{{client4, local4}, {client6, local6}} {
		_, offer := recvClient(t)
		offer += fmt.Sprintf("a=candidate:1 1 udp 2130706431 %s 40000 typ host\r\n", c.client)
		s, server, _ := vp8Session(t, e, offer)
		var first string
		prios := map[string]string{} // priority: candidate, of component 1's UDP host candidates
		for l := range strings.Lines(s.Answer()) {
			if strings.HasPrefix(l, "m=") && first != "" {
				break // the first (bundled) section
			}
			v, ok := strings.CutPrefix(strings.TrimSpace(l), "a=candidate:")
			if !ok {
				continue
			}
			if first == "" {
				first = v
			}
			if f := strings.Fields(v); len(f) >= 8 && f[1] == "1" && f[2] == "udp" && f[7] == "host" {
				if prev, dup := prios[f[3]]; dup {
					t.Errorf("client candidate %s: candidates %q and %q have one priority", c.client, prev, v)
				}
				prios[f[3]] = v
			}
		}
		f := strings.Fields(first)
		if len(f) < 5 || f[4] != c.want.String() {
			t.Errorf("client candidate %s: the answer's first candidate is %q, want the bridge's address on its network, %s", c.client, first, c.want)
		} else if top := slices.MaxFunc(slices.Collect(maps.Keys(prios)), func(a, b string) int {
			x, _ := strconv.ParseUint(a, 10, 32)
			y, _ := strconv.ParseUint(b, 10, 32)
			return cmp.Compare(x, y)
		}); top != f[3] {
			t.Errorf("client candidate %s: the highest priority is %q's, want the first candidate's (%s)", c.client, prios[top], c.want)
		}
		_ = server.Close()
	}
}
