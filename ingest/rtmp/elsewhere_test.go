package rtmp

import (
	"context"
	"strings"
	"testing"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/testkit"
)

// TestElsewhereRefused: RTMP cannot redirect, so a publish or play of a
// stream another node serves (*access.Elsewhere) is refused, without the
// other node's address in the status.
func TestElsewhereRefused(t *testing.T) {
	moved := &access.Elsewhere{Location: "rtmp://node2.internal/live/x"}
	ts := startServer(t, testkit.Authorizer(func(access.Request) error { return moved }), func(s *Server) {
		s.play = func(context.Context, PlayRequest, PlayWriter) error { return moved }
	})
	for _, tc := range []struct {
		play bool
		code string
	}{
		{false, "NetStream.Publish.Failed"},
		{true, "NetStream.Play.StreamNotFound"},
	} {
		c := dialRaw(t, ts.addr)
		id := c.connect("live")
		var st status
		if tc.play {
			c.command(8, id, "play", 0, args{nil, "x", float64(-2000)})
			st = c.waitStatus()
		} else {
			st = c.publish(id, "x")
		}
		if st.Level != "error" || st.Code != tc.code || strings.Contains(st.Description, "node2") {
			t.Errorf("play %v: status %+v, want an error %s not naming the other node", tc.play, st, tc.code)
		}
	}
}
