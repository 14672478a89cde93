package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

// Coturn's relay ports in TestForwardThroughTURN: below the kernel's
// ephemeral range (32768-60999), so no socket of the bridges can have one.
const relayPortMin, relayPortMax = 21000, 21999

// TestForwardThroughTURN (issue 14 item 2): a WHIP forward and a WHEP
// pull use the configured TURN server when the remote server's media port
// cannot be reached directly. An nftables rule drops UDP to the remote
// bridge's WebRTC port unless it comes from coturn's relay ports; the
// bridge allocates relays with its static TURN credentials, the remote
// bridge gets the forwarded video and the bridge pulls it back.
func TestForwardThroughTURN(t *testing.T) {
	remote := startBridge(t, nil)
	tc := startCoturn(t, "--lt-cred-mech", "--user=bridge-user:static-pass",
		fmt.Sprintf("--min-port=%d", relayPortMin), fmt.Sprintf("--max-port=%d", relayPortMax))
	blockUDPExceptRelay(t, remote.UDPAddr().(*net.UDPAddr).Port)

	cfg := config.Default()
	cfg.WebRTC.ICEServers = []config.ICEServer{{URLs: []string{"turn:" + tc.addr + "?transport=udp"},
		Username: "bridge-user", Credential: "static-pass"}}
	remoteURL := "http://" + remote.HTTPAddr().String()
	cfg.Routes = append([]config.Route{
		{Path: "live/a", Forward: []config.Forward{{WHIP: remoteURL + "/whip/from/a"}}},
		{Path: "pulled/a", Pull: "whep+" + remoteURL + "/whep/from/a"},
	}, cfg.Routes...)
	local := startBridge(t, cfg)
	publish(t, "h264-aac.flv", "rtmp://"+local.RTMPAddr().String()+"/live/a")

	// The hubs, not viewers: the rule blocks viewers of the remote too.
	t.Run("forward", func(t *testing.T) { waitHubFrames(t, remote.registry, "from/a", 60) })
	t.Run("pull", func(t *testing.T) { waitHubFrames(t, local.registry, "pulled/a", 60) })
	if n := tc.log.Count("user <bridge-user>", "ALLOCATE processed, success"); n == 0 {
		t.Errorf("coturn logged no allocation for the bridge")
	}
}

// blockUDPExceptRelay drops UDP to 127.0.0.1:port unless it comes from
// coturn's relay ports, in an nftables table of the test's own, deleted
// when the test ends. Without nft (or the right to use it) the test fails:
// it would otherwise pass without showing the relay is used.
func blockUDPExceptRelay(t *testing.T, port int) {
	t.Helper()
	nftDrop(t, fmt.Sprintf("bridge_test_turn_%d", port),
		fmt.Sprintf("ip daddr 127.0.0.1 udp dport %d udp sport != %d-%d", port, relayPortMin, relayPortMax))
}

// nftDrop drops outgoing packets that match rule (nft syntax), in an
// nftables table of the test's own, named table, deleted when the test
// ends. Without nft (or the right to use it) the test fails.
func nftDrop(t *testing.T, table, rule string) {
	t.Helper()
	nft := func(args ...string) error {
		out, err := exec.Command("nft", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("nft %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := nft("add", "table", "inet", table); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nft("delete", "table", "inet", table); err != nil {
			t.Error(err)
		}
	})
	if err := nft("add", "chain", "inet", table, "out", "{ type filter hook output priority 0 ; }"); err != nil {
		t.Fatal(err)
	}
	if err := nft(append([]string{"add", "rule", "inet", table, "out"}, append(strings.Fields(rule), "drop")...)...); err != nil {
		t.Fatal(err)
	}
}

// waitHubFrames waits for n video frames of the stream at path on reg.
func waitHubFrames(t *testing.T, reg *media.Registry, path string, n int) {
	t.Helper()
	st := testkit.WaitReady(t, reg, path, 30*time.Second)
	r, err := st.NewReader(media.ReaderOptions{Name: "test", QueueSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for frames := 0; frames < n; {
		u, err := r.Read(ctx)
		if err != nil {
			t.Fatalf("%d video frames of %s, want %d: %v", frames, path, n, err)
		}
		if _, ok := u.Track.Codec.(media.H264); ok && u.NALUs != nil {
			frames++
		}
	}
}
