package rtc

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wishbridge/bridge/media"
)

// refusal returns err's *Error, failing the test if it is not one with
// status.
func refusal(t *testing.T, err error, status int) *Error {
	t.Helper()
	var he *Error
	if !errors.As(err, &he) || he.Status != status {
		t.Fatalf("got %v, want a %d refusal", err, status)
	}
	return he
}

// TestSessionsPerAddress: one address cannot take more than its share of
// connecting sessions (429, retry after the connect timeout) or of
// sessions (429), while another address still gets in; IPv6 counts per /64.
func TestSessionsPerAddress(t *testing.T) {
	tab := NewSessions(Limits{SessionsPerAddress: 3, PendingPerAddress: 2, ConnectTimeout: time.Minute}, slog.New(slog.DiscardHandler))
	a1, err := tab.Reserve(Claim{Peer: "192.0.2.1:1000"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tab.Reserve(Claim{Peer: "192.0.2.1:1001"}); err != nil {
		t.Fatal(err)
	}
	he := refusal(t, func() error { _, err := tab.Reserve(Claim{Peer: "192.0.2.1:1002"}); return err }(), http.StatusTooManyRequests)
	if he.RetryAfter != time.Minute {
		t.Errorf("Retry-After %v for a pending slot, want the connect timeout", he.RetryAfter)
	}
	if _, err := tab.Reserve(Claim{Peer: "192.0.2.2:1000"}); err != nil {
		t.Fatalf("another address refused: %v", err)
	}
	// A connected session frees its pending slot, not its session slot.
	tab.Connected(a1)
	tab.Connected(a1) // twice is harmless
	if _, err := tab.Reserve(Claim{Peer: "192.0.2.1:1003"}); err != nil {
		t.Fatalf("after one connected: %v", err)
	}
	tab.Connected(a1)
	refusal(t, func() error { _, err := tab.Reserve(Claim{Peer: "192.0.2.1:1004"}); return err }(), http.StatusTooManyRequests)

	if _, err := tab.Reserve(Claim{Peer: "[2001:db8:0:1::1]:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tab.Reserve(Claim{Peer: "[2001:db8:0:1::2]:1"}); err != nil {
		t.Fatal(err)
	}
	refusal(t, func() error { _, err := tab.Reserve(Claim{Peer: "[2001:db8:0:1:ffff::3]:1"}); return err }(), http.StatusTooManyRequests)

	got := tab.Refused()
	if got[LimitPendingPerAddress] != 2 || got[LimitSessionsPerAddress] != 1 || got[LimitSessions] != 0 {
		t.Errorf("refusals %v", got)
	}
}

// TestSessionsSetAfterRemove: a session that ended before its handler
// stored it (Remove before Set) is not stored and holds no slot.
func TestSessionsSetAfterRemove(t *testing.T) {
	tab := NewSessions(Limits{Sessions: 1}, slog.New(slog.DiscardHandler))
	id, err := tab.Reserve(Claim{Peer: "192.0.2.1:1000"})
	if err != nil {
		t.Fatal(err)
	}
	tab.Remove(id)
	if tab.Set(id, &fakeSession{closed: make(chan string, 1)}) {
		t.Error("Set after Remove stored the session")
	}
	if n := tab.Len(); n != 0 {
		t.Fatalf("%d sessions after Remove then Set", n)
	}
	if id, err = tab.Reserve(Claim{Peer: "192.0.2.1:1000"}); err != nil {
		t.Fatalf("the slot was not freed: %v", err)
	}
	tab.Remove(id)
}

// TestSessionsConnectTimeout: sessions that do not connect in time are
// closed and forgotten, with their slots; a connected one stays.
func TestSessionsConnectTimeout(t *testing.T) {
	tab := NewSessions(Limits{ConnectTimeout: 100 * time.Millisecond, PendingPerAddress: 3}, slog.New(slog.DiscardHandler))
	const peer = "192.0.2.1:1000"
	stuck := &fakeSession{closed: make(chan string, 1)}
	id, _ := tab.Reserve(Claim{Peer: peer})
	tab.Set(id, stuck)
	ok := &fakeSession{closed: make(chan string, 1)}
	okID, _ := tab.Reserve(Claim{Peer: peer})
	tab.Set(okID, ok)
	tab.Connected(okID)
	unset, _ := tab.Reserve(Claim{Peer: peer}) // its handler is still answering

	select {
	case reason := <-stuck.closed:
		t.Logf("closed: %s", reason)
	case <-time.After(10 * time.Second):
		t.Fatal("a session that never connected was not closed")
	}
	deadline := time.Now().Add(10 * time.Second)
	for (tab.Len() != 1 || tab.Pending() != 0) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if tab.Len() != 1 || tab.Pending() != 0 || tab.TimedOut() != 2 {
		t.Fatalf("%d sessions, %d pending, %d timed out; want 1, 0, 2", tab.Len(), tab.Pending(), tab.TimedOut())
	}
	if tab.Set(unset, &fakeSession{}) {
		t.Error("a session stored after its id timed out")
	}
	select {
	case <-ok.closed:
		t.Error("the connected session was closed")
	default:
	}
	tab.Remove(okID)
}

// TestSessionsReadersPerStream: viewers still connecting count toward the
// stream's reader limit, with its attached readers.
func TestSessionsReadersPerStream(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	reg := media.NewRegistry(log)
	pub, err := reg.Publish("live/x", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	st := pub.Stream
	r, err := st.NewReader(media.ReaderOptions{Name: "rtmp play"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tab := NewSessions(Limits{ReadersPerStream: 3}, log)
	v1, err := tab.Reserve(Claim{Peer: "192.0.2.1:1", Joins: st})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := tab.Reserve(Claim{Peer: "192.0.2.2:1", Joins: st})
	if err != nil {
		t.Fatal(err)
	}
	refusal(t, func() error { _, err := tab.Reserve(Claim{Peer: "192.0.2.3:1", Joins: st}); return err }(), http.StatusServiceUnavailable)
	// A route's max_readers overrides the table's limit.
	v3, err := tab.Reserve(Claim{Peer: "192.0.2.3:1", Joins: st, MaxReaders: 10})
	if err != nil {
		t.Fatalf("with max_readers 10: %v", err)
	}
	tab.Remove(v3)
	tab.Remove(v1) // gave up before connecting
	if _, err := tab.Reserve(Claim{Peer: "192.0.2.4:1", Joins: st}); err != nil {
		t.Fatalf("after a joining viewer left: %v", err)
	}
	tab.Remove(v2)
	if got := tab.Refused()[LimitReadersPerStream]; got != 1 {
		t.Errorf("%d refusals for readers_per_stream, want 1", got)
	}
}

// TestSessionsDrain: while draining, every new claim gets Drain's refusal
// (503 with its Retry-After through WriteError) and the running sessions
// stay; CloseAll then ends those and forgets a reserved one not stored
// yet, whose Set fails; Drain(nil) admits again.
func TestSessionsDrain(t *testing.T) {
	tab := NewSessions(Limits{Sessions: 2}, slog.New(slog.DiscardHandler))
	running, err := tab.Reserve(Claim{Peer: "192.0.2.1:1000"})
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeSession{closed: make(chan string, 1)}
	tab.Set(running, s)
	tab.Connected(running)
	storing, err := tab.Reserve(Claim{Peer: "192.0.2.1:1001"})
	if err != nil {
		t.Fatal(err)
	}

	tab.Drain(&Error{Status: http.StatusServiceUnavailable, Msg: "server shutting down", RetryAfter: 3 * time.Second})
	_, err = tab.Reserve(Claim{Peer: "192.0.2.2:1000"})
	he := refusal(t, err, http.StatusServiceUnavailable)
	if tab.Refusal() == nil {
		t.Error("Refusal is nil while draining")
	}
	rec := httptest.NewRecorder()
	WriteError(rec, he)
	if got := rec.Header().Get("Retry-After"); got != "3" || !strings.Contains(rec.Body.String(), "server shutting down") {
		t.Errorf("refusal answered Retry-After %q, body %q; want 3 and the reason", got, rec.Body.String())
	}
	if n := tab.Len(); n != 2 {
		t.Errorf("%d sessions while draining, want the 2 there before", n)
	}

	tab.CloseAll("server shutting down")
	if reason := <-s.closed; reason != "server shutting down" {
		t.Errorf("running session closed with %q", reason)
	}
	tab.Remove(running) // as the session does when it ends
	if tab.Set(storing, &fakeSession{closed: make(chan string, 1)}) {
		t.Error("a session reserved before CloseAll was stored after it: nothing would end it")
	}
	if n := tab.Len(); n != 0 {
		t.Errorf("%d sessions after CloseAll", n)
	}

	tab.Drain(nil)
	if tab.Refusal() != nil {
		t.Error("Refusal is set after Drain(nil)")
	}
	if _, err := tab.Reserve(Claim{Peer: "192.0.2.2:1000"}); err != nil {
		t.Errorf("after Drain(nil): %v", err)
	}
}
