package node

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/media"
)

// TestBanRefusesPublisher: Evict with a ban refuses that address on that
// path only, for the ban's time, and gives the path no grace meanwhile.
func TestBanRefusesPublisher(t *testing.T) {
	n := New(&config.Config{Routes: []config.Route{{Path: "{path...}"}}}, Options{Registry: media.NewRegistry(nil)})
	req := access.Request{Action: access.Publish, Protocol: access.RTMP, Path: "live/cam", Remote: "203.0.113.5:40000"}
	if g := n.Policy("live/cam").Grace; g == 0 {
		t.Fatal("no grace before the eviction")
	}
	n.Evict("live/cam", "203.0.113.5:51234", time.Minute)
	var banned *ErrBanned
	if _, err := n.Authorize(req); !errors.As(err, &banned) {
		t.Errorf("banned address, another port: %v, want *ErrBanned", err)
	}
	if g := n.Policy("live/cam").Grace; g != 0 {
		t.Errorf("grace %v right after the eviction, want 0", g)
	}
	other := req
	other.Remote = "203.0.113.6:40000"
	if _, err := n.Authorize(other); err != nil {
		t.Errorf("another address: %v", err)
	}
	other = req
	other.Path = "live/other"
	if _, err := n.Authorize(other); err != nil {
		t.Errorf("the banned address on another path: %v", err)
	}
	// Expired: the entry goes at the next look.
	now := time.Now().Add(2 * time.Minute)
	if err := n.bans.banned("live/cam", req.Remote, now); err != nil {
		t.Errorf("after the ban's end: %v", err)
	}
	if len(n.bans.until) != 0 {
		t.Errorf("expired ban kept: %v", n.bans.until)
	}
}

// TestBansBounded: the table holds at most maxBans; a new ban over it
// pushes out the one that ends soonest.
func TestBansBounded(t *testing.T) {
	var b bans
	now := time.Now()
	for i := range maxBans {
		b.ban("p", fmt.Sprintf("10.0.%d.%d:1", i/256, i%256), time.Hour+time.Duration(i)*time.Second, now)
	}
	b.ban("p", "192.0.2.1:1", time.Hour, now)
	if len(b.until) != maxBans {
		t.Fatalf("%d bans, want %d", len(b.until), maxBans)
	}
	if b.banned("p", "10.0.0.0:1", now) != nil {
		t.Error("the ban ending soonest was kept over the bound")
	}
	if b.banned("p", "192.0.2.1:1", now) == nil || b.banned("p", "10.0.0.1:1", now) == nil {
		t.Error("the new ban or a later one was dropped")
	}
}

// TestPreviewNeedsAPIToken: a preview reader is admitted with api.token on
// a private route whose protocol allows reading, never with the read key
// or without api.token, and not where WHEP may not read.
func TestPreviewNeedsAPIToken(t *testing.T) {
	off := false
	cfg := &config.Config{API: config.API{Token: "admin-token-0123456789"}, Routes: []config.Route{
		{Path: "private/{name}", ReadKey: "viewer-key"},
		{Path: "nowhep/{name}", WHEP: config.WHEP{Enabled: &off}},
	}}
	n := New(cfg, Options{Registry: media.NewRegistry(nil)})
	req := func(path, cred string) access.Request {
		return access.Request{Action: access.Read, Protocol: access.WHEP, Path: path, Credential: cred, Preview: true, Remote: "127.0.0.1:1"}
	}
	if _, err := n.Authorize(req("private/cam", "admin-token-0123456789")); err != nil {
		t.Errorf("preview with the API token: %v", err)
	}
	if _, err := n.Authorize(req("private/cam", "viewer-key")); !errors.Is(err, access.ErrBadKey) {
		t.Errorf("preview with the read key: %v, want ErrBadKey", err)
	}
	if _, err := n.Authorize(req("nowhep/cam", "admin-token-0123456789")); !errors.Is(err, access.ErrProtocolNotAllowed) {
		t.Errorf("preview where WHEP is off: %v, want ErrProtocolNotAllowed", err)
	}
	cfg2 := *cfg
	cfg2.API.Token = ""
	n.Reload(&cfg2)
	if _, err := n.Authorize(req("private/cam", "")); !errors.Is(err, access.ErrBadKey) {
		t.Errorf("preview without api.token: %v, want ErrBadKey", err)
	}
}
