package rtc

import (
	"encoding/hex"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestSessionIDsNameTheirNode: in a cluster, a session id is 128 random
// bits then "~" and the node's name, and its Location is on the node's
// public URL whatever host the client asked; alone, neither.
func TestSessionIDsNameTheirNode(t *testing.T) {
	alone := NewSessions(Limits{}, nil)
	id, err := alone.Reserve(Claim{Peer: "192.0.2.1:5000"})
	if err != nil {
		t.Fatal(err)
	}
	defer alone.Remove(id)
	r := httptest.NewRequest("POST", "http://lb.example.com/whep/x", nil)
	if SessionNode(id) != "" || alone.Location(r, id) != "http://lb.example.com/sessions/"+id {
		t.Errorf("alone: id %q names node %q, Location %q", id, SessionNode(id), alone.Location(r, id))
	}

	in := NewSessions(Limits{}, nil)
	in.SetNode("edge-2.eu", "https://edge-2.example.com:8443/")
	id, err = in.Reserve(Claim{Peer: "192.0.2.1:5000"})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Remove(id)
	random, node, ok := strings.Cut(id, "~")
	if b, err := hex.DecodeString(random); !ok || err != nil || len(b) != 16 || node != "edge-2.eu" || SessionNode(id) != "edge-2.eu" {
		t.Errorf("id %q: want 32 hex digits, ~, edge-2.eu (SessionNode: %q)", id, SessionNode(id))
	}
	if got, want := in.Location(r, id), "https://edge-2.example.com:8443/sessions/"+id; got != want {
		t.Errorf("Location = %q, want %q", got, want)
	}
}
