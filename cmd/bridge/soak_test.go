package main

import (
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/config"
)

// The soak's shape (issue 12: one publisher reconnecting every minute, 100
// viewers joining and leaving).
const (
	// soakViewers is how many viewers join over the soak, whatever its
	// length.
	soakViewers = 100
	// soakConcurrent caps the viewers at once: each is a whole pion
	// PeerConnection in this process, and 100 of them under -race on the
	// two shared cores of CI starve each other, which would test the
	// machine rather than the bridge.
	soakConcurrent = 20
	// soakMinStay is the shortest stay, and how long a connected viewer
	// may go without a picture: a join shows the cached GOP at once.
	soakMinStay = 3 * time.Second
	// soakReconnectPause is how long the publisher is away on each
	// reconnect, well inside the route's grace (config.DefaultGrace).
	soakReconnectPause = time.Second
	// soakMaxUnconnected is how many viewers may fail to connect at all:
	// on a machine starved of CPU (the test's own peers share it with the
	// bridge, under -race) the bridge rightly ends a session whose ICE and
	// DTLS did not complete within soakConnectTimeout. More than this is a
	// bridge that does not let viewers in.
	soakMaxUnconnected = soakViewers / 20
	// soakConnectTimeout replaces limits.webrtc_connect_timeout (5 s) for
	// the soak, which the issue allows: on the shared CI cores under -race,
	// with the viewers' own ICE and DTLS in this process, a handshake
	// sometimes takes longer (seen: 8 s with a load average of 10), and
	// the soak looks for leaks and starved viewers, not at the connect
	// timeout (rtc and egress/whep limits tests cover it).
	soakConnectTimeout = 15 * time.Second
	// soakResume is how long after a reconnect a viewer that watched
	// across it must have had a frame from the new publisher: ffmpeg's
	// start, the RTMP handshake and its first keyframe (1 s GOP).
	soakResume = 5 * time.Second
	// soakDefault is the soak's length when SOAK is unset, so that plain
	// `go test` runs it as `make test` does.
	soakDefault = 60 * time.Second
)

// soakDuration reads the soak's length from SOAK (a Go duration: 60s, 10m).
func soakDuration(t *testing.T) time.Duration {
	t.Helper()
	s := os.Getenv("SOAK")
	if s == "" {
		return soakDefault
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 30*time.Second {
		t.Fatalf("SOAK=%q: want a duration of at least 30s (e.g. 60s, 10m)", s)
	}
	return d
}

// soakViewer is one viewer of the soak and when it comes and goes.
type soakViewer struct {
	v         *viewer
	joined    time.Time
	connected time.Time // when its PeerConnection was first seen connected; zero if never
	leaves    time.Time
	delete    bool // leaves with a DELETE as a WHEP player does, or just goes away as a closed tab does
}

// seen notes when the viewer's PeerConnection is first seen connected.
func (sv *soakViewer) seen(now time.Time) {
	if sv.connected.IsZero() && sv.v.pc.ConnectionState() == webrtc.PeerConnectionStateConnected {
		sv.connected = now
	}
}

// soakResult is what a viewer saw.
type soakResult struct {
	stayed    time.Duration // from connected to leaving; 0 if it never connected
	frames    int
	maxFreeze time.Duration // longest time without a frame after the first one
}

// TestSoak runs one stream for SOAK (default 60s; `make soak` runs 10m)
// while its RTMP publisher (ffmpeg) reconnects every min(1 min, SOAK/3) and
// 100 WHEP viewers join and leave, at most soakConcurrent at once, each
// staying a random 3 s to tens of seconds, half of them leaving with a
// DELETE and half just vanishing. Every viewer that stayed soakMinStay
// connected must have received frames, and one that watched across a
// reconnect must have had frames from the new publisher; at most
// soakMaxUnconnected may fail to connect. Afterwards the bridge must give
// back what the viewers took: goroutines, fds and live heap within the
// slack of the baseline measured with the publisher live and no viewer.
func TestSoak(t *testing.T) {
	soak := soakDuration(t)
	const path = "live/soak"
	cfg := config.Default()
	cfg.Limits.WebRTCConnectTimeout = soakConnectTimeout
	b := startBridge(t, cfg)
	url := "rtmp://" + b.RTMPAddr().String() + "/" + path
	_, stopPublisher := publish(t, "h264-aac.flv", url)
	waitStream(t, b, path)
	time.Sleep(2 * time.Second) // a full GOP (1 s) in the cache: heap the stream keeps anyway
	base := measure(t)

	// Joins are spread evenly over 90% of the soak; stays average 3/4 of
	// what the concurrency cap allows at that rate, so joins rarely wait.
	joinEvery := soak * 9 / 10 / soakViewers
	meanStay := max(joinEvery*soakConcurrent*3/4, 5*time.Second)
	maxStay := soakMinStay + 2*(meanStay-soakMinStay)
	reconnectEvery := min(time.Minute, soak/3)
	t.Logf("soak: %v, a viewer joins every %v and stays %v to %v, the publisher reconnects every %v",
		soak, joinEvery, soakMinStay, maxStay, reconnectEvery)

	start := time.Now()
	deadline := start.Add(soak)
	nextJoin, nextReconnect := start, start.Add(reconnectEvery)
	var (
		active     []*soakViewer
		results    []soakResult
		reconnects []time.Time // when each new publisher was started
		peak       int
	)
	unconnected := 0
	leave := func(sv *soakViewer, now time.Time) {
		sv.seen(now)
		if sv.connected.IsZero() {
			// Its session was ended by the connect timeout: nothing to
			// DELETE, nothing it could have seen.
			unconnected++
			t.Logf("viewer %s did not connect in %v", sv.v.location, now.Sub(sv.joined).Round(time.Millisecond))
			_ = sv.v.pc.Close()
			results = append(results, soakResult{})
			return
		}
		if sv.delete {
			req, _ := http.NewRequest(http.MethodDelete, sv.v.location, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("viewer %s: DELETE: %v", sv.v.location, err)
			} else {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("viewer %s: DELETE answered %d, want 200: the session ended under it", sv.v.location, resp.StatusCode)
				}
			}
		}
		_ = sv.v.pc.Close()
		frames := sv.v.frames()

		r := soakResult{stayed: now.Sub(sv.connected), frames: len(frames)}
		for i := 1; i < len(frames); i++ {
			r.maxFreeze = max(r.maxFreeze, frames[i].at.Sub(frames[i-1].at))
		}
		results = append(results, r)
		if r.stayed >= soakMinStay && r.frames == 0 {
			t.Errorf("viewer %s stayed %v and received no frame: starved", sv.v.location, r.stayed.Round(time.Millisecond))
		}
		for _, rc := range reconnects {
			if sv.connected.After(rc) || now.Before(rc.Add(soakResume)) {
				continue
			}
			if !slices.ContainsFunc(frames, func(au accessUnit) bool { return au.at.After(rc) }) {
				t.Errorf("viewer %s watched across the reconnect at +%v and had no frame in the %v after it: it did not resume",
					sv.v.location, rc.Sub(start).Round(time.Second), now.Sub(rc).Round(time.Millisecond))
			}
		}
	}

	t.Cleanup(func() { // the viewers still there if the test stopped early
		for _, sv := range active {
			_ = sv.v.pc.Close()
		}
	})
	for joined := 0; joined < soakViewers || time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		now := time.Now()
		active = slices.DeleteFunc(active, func(sv *soakViewer) bool {
			sv.seen(now)
			if now.Before(sv.leaves) {
				return false
			}
			leave(sv, now)
			return true
		})
		// No reconnect in the last soakResume, so that viewers can show
		// they resumed before the soak ends.
		if !now.Before(nextReconnect) && nextReconnect.Add(soakResume).Before(deadline) {
			stopPublisher()
			time.Sleep(soakReconnectPause)
			_, stopPublisher = publish(t, "h264-aac.flv", url)
			reconnects = append(reconnects, time.Now())
			nextReconnect = nextReconnect.Add(reconnectEvery)
		}
		if joined < soakViewers && !now.Before(nextJoin) && len(active) < soakConcurrent {
			v := join(t, http.DefaultClient, b, path, nil) // closed by leave
			joinedAt := time.Now()
			stay := soakMinStay + rand.N(maxStay-soakMinStay)
			active = append(active, &soakViewer{v: v, joined: joinedAt, leaves: joinedAt.Add(stay), delete: joined%2 == 0})
			joined++
			peak = max(peak, len(active))
			nextJoin = nextJoin.Add(joinEvery)
		}
	}
	for _, sv := range active {
		leave(sv, time.Now())
	}
	active = nil

	// Frames of the viewers that stayed long enough to be judged.
	var frames []int
	var freeze time.Duration
	for _, r := range results {
		if r.stayed >= soakMinStay {
			frames = append(frames, r.frames)
			freeze = max(freeze, r.maxFreeze)
		}
	}
	slices.Sort(frames)
	if len(frames) > 0 {
		t.Logf("soak: %d viewers in %v (at most %d at once, %d never connected), %d publisher reconnects; frames per viewer that stayed %v+: min %d, median %d; longest freeze %v",
			len(results), time.Since(start).Round(time.Second), peak, unconnected, len(reconnects), soakMinStay, frames[0], frames[len(frames)/2], freeze.Round(time.Millisecond))
	}
	if len(results) < soakViewers {
		t.Errorf("only %d viewers joined, want %d", len(results), soakViewers)
	}
	if unconnected > soakMaxUnconnected {
		t.Errorf("%d of %d viewers never connected (at most %d may, on a starved machine)", unconnected, len(results), soakMaxUnconnected)
	}

	after := waitResources(t, base, 30*time.Second)
	mib := func(r resources) float64 { return float64(r.heapInuse) / (1 << 20) }
	t.Logf("soak: start goroutines %d fds %d heap %.1f MiB; end goroutines %d fds %d heap %.1f MiB",
		base.goroutines, base.fds, mib(base), after.goroutines, after.fds, mib(after))
}
