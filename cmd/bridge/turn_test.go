package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/rtc"
)

// coturn is a TURN server (coturn's turnserver) on a loopback UDP port.
type coturn struct {
	addr string // host:port
	log  *testkit.LogBuf
}

// startCoturn runs turnserver on a free loopback UDP port, relaying on
// loopback, with auth (its authentication options) until the test ends.
// A missing turnserver fails the test.
func startCoturn(t *testing.T, auth ...string) *coturn {
	t.Helper()
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		t.Fatal("turnserver (coturn) is required for the TURN tests: apt-get install coturn (.ci/run does)")
	}
	dir := t.TempDir()
	port := testkit.FreeUDPPort(t)
	c := &coturn{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), log: &testkit.LogBuf{}}
	args := append([]string{
		"-n", "--realm=test", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
		"--listening-port=" + strconv.Itoa(port), "--no-tcp", "--no-tls", "--no-dtls", "--no-cli",
		// The bridge and the viewer are loopback peers.
		"--allow-loopback-peers",
		"--log-file=stdout", "--simple-log", "--verbose",
		"--pidfile=" + filepath.Join(dir, "turnserver.pid"), "--userdb=" + filepath.Join(dir, "turndb"),
	}, auth...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = c.log, c.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start turnserver: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("turnserver log:\n%s", c.log.String())
		}
	})
	// Ready once it answers a STUN binding request.
	deadline := time.Now().Add(10 * time.Second)
	for {
		cl, conn := c.client(t, "", "")
		_, err := cl.SendBindingRequest()
		cl.Close()
		conn.Close()
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("turnserver does not answer STUN on %s after 10 s: %v\n%s", c.addr, err, c.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// client returns a pion TURN client of c with those credentials.
func (c *coturn) client(t *testing.T, username, password string) (*turn.Client, net.PacketConn) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: c.addr, TURNServerAddr: c.addr, Conn: conn,
		Username: username, Password: password, Realm: "test", RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Listen(); err != nil {
		t.Fatal(err)
	}
	return cl, conn
}

// allocate asks c for a relay with those credentials.
func (c *coturn) allocate(t *testing.T, username, password string) error {
	t.Helper()
	cl, conn := c.client(t, username, password)
	defer conn.Close()
	defer cl.Close()
	relay, err := cl.Allocate()
	if err == nil {
		relay.Close()
	}
	return err
}

// TestTURNDerivedCredentials (issue 12, defect 14): with a TURN secret
// configured, an admitted WHEP viewer gets TURN credentials derived for
// its session in the answer's Link headers; a real coturn (use-auth-secret)
// allocates a relay with them, and a viewer that may only use that relay
// plays the stream. Coturn refuses the same credentials made with another
// secret or expired. A refused viewer gets no Link header.
func TestTURNDerivedCredentials(t *testing.T) {
	const secret = "coturn-static-auth-secret"
	tc := startCoturn(t, "--use-auth-secret", "--static-auth-secret="+secret)
	cfg := config.Default()
	cfg.WebRTC.ICEServers = []config.ICEServer{{URLs: []string{"turn:" + tc.addr + "?transport=udp"}, Secret: secret}}
	cfg.Routes = append([]config.Route{{Path: "private/{name}", ReadKey: "s3cret-read"}}, cfg.Routes...)
	b := startBridge(t, cfg)
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/private/cam")
	waitStream(t, b, "private/cam")
	endpoint := "http://" + b.HTTPAddr().String() + "/whep/private/cam"

	// Refused: no Link header, so no credentials.
	_, offer := newOffer(t, newViewerAPI(t))
	resp := post(t, endpoint, "application/sdp", offer, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Values("Link") != nil {
		t.Fatalf("POST without the read key: %d with Link %q, want 401 without Link", resp.StatusCode, resp.Header.Values("Link"))
	}

	// Admitted: one TURN server, with credentials derived for the session.
	client, err := rtc.NewClient(nil, endpoint, "s3cret-read")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	answer, session, err := client.Post(ctx, offer)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(answer, "typ relay") {
		t.Errorf("the bridge's answer has no relayed candidate: its own agent did not allocate with derived credentials\n%s", answer)
	}
	servers := client.LastICEServers()
	if len(servers) != 1 || servers[0].Username == "" || servers[0].URLs[0] != cfg.WebRTC.ICEServers[0].URLs[0] {
		t.Fatalf("Link ICE servers = %+v, want the TURN server with derived credentials", servers)
	}
	_ = client.Delete(ctx, session)
	user, cred := servers[0].Username, servers[0].Credential.(string)
	expiry, id, _ := strings.Cut(user, ":")
	exp, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil || !strings.HasPrefix(session.URL.Path, rtc.SessionPathPrefix+id) || len(id) != 8 {
		t.Errorf("username %q, want <unix expiry>:<first 8 digits of the session id> (session %s)", user, session.URL.Path)
	}
	if ttl := time.Until(time.Unix(exp, 0)); ttl < 23*time.Hour || ttl > 24*time.Hour {
		t.Errorf("credentials expire in %v, want the default ttl of 24h", ttl)
	}
	if strings.Contains(user+cred, secret) {
		t.Errorf("credentials %q, %q hold the secret", user, cred)
	}

	// Coturn's verdict on them, and on forged ones.
	if err := tc.allocate(t, user, cred); err != nil {
		t.Errorf("coturn refused the derived credentials: %v", err)
	}
	badUser, badCred := rtc.TURNCredentials("another-secret", id, time.Unix(exp, 0))
	if err := tc.allocate(t, badUser, badCred); err == nil {
		t.Error("coturn allocated with credentials derived from another secret")
	}
	oldUser, oldCred := rtc.TURNCredentials(secret, id, time.Now().Add(-time.Minute))
	if err := tc.allocate(t, oldUser, oldCred); err == nil {
		t.Error("coturn allocated with expired credentials")
	}

	// A viewer whose only candidates are relayed through coturn plays.
	v := watchRelayed(t, endpoint, "s3cret-read", servers)
	v.waitFrames(t, 30, 15*time.Second)
	pair, err := v.pc.GetReceivers()[0].Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil || pair.Local.Typ != webrtc.ICECandidateTypeRelay {
		t.Errorf("selected candidate pair %v (%v), want a relayed local candidate", pair, err)
	}
	if n := tc.log.Count("user <"+user+">", "ALLOCATE processed, success"); n == 0 {
		t.Errorf("coturn logged no allocation for user %q", user)
	}
}

// TestTURNStaticCredentialsNotAdvertised (defect 14): static TURN
// credentials are used by the bridge's own agents (coturn allocates for
// them) but never sent to clients: the Link headers hold the STUN server
// and no TURN URL or credential.
func TestTURNStaticCredentialsNotAdvertised(t *testing.T) {
	tc := startCoturn(t, "--lt-cred-mech", "--user=bridge-user:static-pass")
	cfg := config.Default()
	cfg.WebRTC.ICEServers = []config.ICEServer{
		{URLs: []string{"stun:" + tc.addr}},
		{URLs: []string{"turn:" + tc.addr + "?transport=udp"}, Username: "bridge-user", Credential: "static-pass"},
	}
	b := startBridge(t, cfg)
	publish(t, "h264-aac.flv", "rtmp://"+b.RTMPAddr().String()+"/live/cam")
	waitStream(t, b, "live/cam")

	pc, offer := newOffer(t, newViewerAPI(t))
	defer pc.Close()
	resp := post(t, "http://"+b.HTTPAddr().String()+"/whep/live/cam", "application/sdp", offer, nil)
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d %s", resp.StatusCode, answer)
	}
	if !strings.Contains(string(answer), "typ relay") {
		t.Errorf("the bridge's answer has no relayed candidate: its own agent did not use the static credentials\n%s", answer)
	}
	links := resp.Header.Values("Link")
	want := fmt.Sprintf(`<stun:%s>; rel="ice-server"`, tc.addr)
	if len(links) != 1 || links[0] != want {
		t.Errorf("Link headers = %q, want only %q", links, want)
	}
}

// watchRelayed plays endpoint with token through a PeerConnection that
// may only use relayed candidates from servers.
func watchRelayed(t *testing.T, endpoint, token string, servers []webrtc.ICEServer) *viewer {
	t.Helper()
	pc, sdp := newOfferWith(t, newViewerAPI(t), webrtc.Configuration{ICEServers: servers, ICETransportPolicy: webrtc.ICETransportPolicyRelay})
	t.Cleanup(func() { _ = pc.Close() })
	v := &viewer{pc: pc, gotAU: make(chan struct{}, 1)}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			go v.readVideo(tr)
		}
	})
	if !strings.Contains(sdp, "typ relay") {
		t.Fatalf("the viewer allocated no relay with the Link credentials:\n%s", sdp)
	}
	resp := post(t, endpoint, "application/sdp", sdp, map[string]string{"Authorization": "Bearer " + token})
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d %s", resp.StatusCode, answer)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	return v
}
