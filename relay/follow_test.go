package relay

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wishbridge/bridge/media"
)

// edgeReader waits for path in the edge's registry and reads it from its
// cached keyframe (closed at the test's end).
func edgeReader(t *testing.T, ctx context.Context, reg *media.Registry, path string) *media.Reader {
	t.Helper()
	st, err := reg.WaitReady(ctx, path, 10*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := st.NewReader(media.ReaderOptions{Name: "edge reader", StartAtKeyframe: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rd.Close)
	return rd
}

// TestEdgeFollowsOwner: an edge relays live/f from origin A, its Source
// naming the path's owner. A publisher on B takes the path over (A's left,
// its stream waits in grace) and A, as a node that lost the path does,
// relays it from B: A ends its relay to the edge (only owners serve
// relays), and the edge opens the next one from B, the Source's new
// answer, at once. The edge's reader goes from A's frames to B's without
// its stream ending, and A serves no relay any more.
func TestEdgeFollowsOwner(t *testing.T) {
	grace := func(string) time.Duration { return 20 * time.Second }
	regA, regB, regE := media.NewRegistry(nil), media.NewRegistry(nil), media.NewRegistry(nil)
	regA.SetGrace(grace)
	regE.SetGrace(grace)
	var ca, cb Counters
	srvA, srvB := origin(t, regA, &ca), origin(t, regB, &cb)
	var owner atomic.Value
	owner.Store(srvA.URL)
	src := func(context.Context, string) (string, bool) { return owner.Load().(string), true }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := func(p *Puller) chan struct{} {
		done := make(chan struct{})
		go func() { defer close(done); p.Run(ctx) }()
		return done
	}
	pubA, tracksA := source(t, regA, "live/f")
	pubA.Write(frame(tracksA[0], 0, []byte{0xA}))
	edge := run(NewPuller(PullConfig{Registry: regE, Path: "live/f", Base: srvA.URL, Source: src, Token: testToken}))

	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	rd := edgeReader(t, wctx, regE, "live/f")
	// marker reads the edge until a video frame whose payload ends with
	// want arrives.
	marker := func(want byte, write func(i int)) {
		t.Helper()
		got := make(chan error, 1)
		go func() {
			for {
				u, err := rd.Read(wctx)
				if err != nil {
					got <- err
					return
				}
				if u.Track.IsVideo() {
					nalu := u.NALUs[len(u.NALUs)-1]
					if nalu[len(nalu)-1] == want {
						got <- nil
						return
					}
				}
			}
		}()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case err := <-got:
				if err != nil {
					t.Fatalf("edge reader, waiting for a frame %#x: %v", want, err)
				}
				return
			case <-tick.C:
				write(i)
			}
		}
	}
	marker(0xA, func(i int) { pubA.Write(frame(tracksA[0], i, []byte{0xA})) })

	// B's publisher takes the path over; A's leaves and A relays from B.
	pubB, tracksB := source(t, regB, "live/f")
	owner.Store(srvB.URL)
	pubA.Close()
	fromB := run(NewPuller(PullConfig{Registry: regA, Path: "live/f", Base: srvB.URL, Token: testToken}))
	marker(0xB, func(i int) { pubB.Write(frame(tracksB[0], i, []byte{0xB})) })

	deadline := time.Now().Add(10 * time.Second)
	for ca.Stats().Out != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("A still serves %d relays: the edge reads B's stream through A", ca.Stats().Out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := cb.Stats().Out; n != 2 {
		t.Errorf("B serves %d relays, want 2 (the edge and A)", n)
	}
	if _, _, err := rd.TryRead(); errors.Is(err, media.ErrStreamEnded) {
		t.Error("the edge's stream ended in the move")
	}
	cancel()
	<-edge
	<-fromB
}

// TestOriginPublisherReturns: the origin's publisher leaves and a new one
// takes the stream over within its grace (a reconnecting encoder): the
// edge's reader, which stays on the same relay, gets the new publisher's
// frames. The origin tells the edge of the new tracks and that what
// follows is live (the edge holds units back until it is told so).
func TestOriginPublisherReturns(t *testing.T) {
	grace := func(string) time.Duration { return 20 * time.Second }
	regA, regE := media.NewRegistry(nil), media.NewRegistry(nil)
	regA.SetGrace(grace)
	regE.SetGrace(grace)
	var ca Counters
	srvA := origin(t, regA, &ca)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub, tracks := source(t, regA, "live/r")
	pub.Write(frame(tracks[0], 0, []byte{0x1}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		NewPuller(PullConfig{Registry: regE, Path: "live/r", Base: srvA.URL, Token: testToken}).Run(ctx)
	}()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	rd := edgeReader(t, wctx, regE, "live/r")
	if _, err := rd.Read(wctx); err != nil {
		t.Fatal(err)
	}

	pub.Close() // waits in grace
	pub2, tracks2 := source(t, regA, "live/r")
	for i := range 10 {
		pub2.Write(frame(tracks2[0], i, []byte{0x2}))
	}
	for {
		u, err := rd.Read(wctx)
		if err != nil {
			t.Fatalf("edge reader after the origin's new publisher: %v (the relay holds its units back)", err)
		}
		if nalu := u.NALUs[len(u.NALUs)-1]; u.Track.IsVideo() && nalu[len(nalu)-1] == 0x2 {
			break
		}
	}
	if n := ca.Stats().Out; n != 1 {
		t.Errorf("the origin serves %d relays, want the one it had", n)
	}
	cancel()
	<-done
}
