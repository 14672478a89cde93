package srt

import (
	"testing"

	gosrt "github.com/datarhei/gosrt"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/testkit"
)

// TestElsewhereRefused: SRT cannot redirect, so a publisher or reader of
// a stream another node serves (*access.Elsewhere) is rejected with 1404,
// as is a reader of a stream that is not there (access.ErrNoStream).
func TestElsewhereRefused(t *testing.T) {
	moved := func(access.Request) error { return &access.Elsewhere{Location: "srt://node2.internal:8890"} }
	ts := startServer(t, Config{Authorize: testkit.Authorizer(moved), Read: &ReadHandler{
		Admit: testkit.Authorizer(func(r access.Request) error {
			if r.Path == "live/none" {
				return access.ErrNoStream
			}
			return moved(r)
		}),
	}}, nil)
	for _, sid := range []string{"publish:live/x", "read:live/x", "read:live/none"} {
		if _, err := dial(t, ts, sid, ""); rejectCode(err) != int(gosrt.REJX_NOTFOUND) {
			t.Errorf("%s: %v, want a rejection with %d", sid, err, gosrt.REJX_NOTFOUND)
		}
	}
}
