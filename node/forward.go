package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/config"
	egressrtmp "github.com/wishbridge/bridge/egress/rtmp"
	egresssrt "github.com/wishbridge/bridge/egress/srt"
	egresswhip "github.com/wishbridge/bridge/egress/whip"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/rawurl"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/metrics"
	"github.com/wishbridge/bridge/webrtccodec"
)

// forwardIdle is how long a forward to a pattern route's path keeps
// waiting after its stream has gone before it is stopped. It covers a
// publisher's reconnect; a forward whose route is removed or changed stops
// at once.
const forwardIdle = time.Minute

// forwardSpec is everything a forward runner is built from, and so its
// identity: the stream path, the target exactly as configured and the route
// settings the pushers read. A reload that changes any of it restarts the
// forward (a rotated WHIP token, a new SRT audio codec), one that changes
// none leaves it running. newForwarder reads nothing else, so a setting a
// pusher uses cannot be left out of the identity; config.Forward is held
// whole and compared with ==, so a field added to it takes part (one that
// is not comparable fails to compile here, the spec being a map key).
type forwardSpec struct {
	path        string
	route       string // the route's path (a pattern's, for a path it matched), for the log
	target      config.Forward
	opusBitrate int    // bit/s, the route's effective audio.opus_bitrate
	aacBitrate  int    // bit/s, the route's effective audio.aac_bitrate
	bframes     string // the route's effective B-frame policy (WHIP targets)
}

// forwardSpecs are the forwards r asks for on path.
func forwardSpecs(path string, r *config.Route) []forwardSpec {
	out := make([]forwardSpec, len(r.Forward))
	for i, target := range r.Forward {
		out[i] = forwardSpec{path: path, route: r.Path, target: target, opusBitrate: r.OpusBitrate(), aacBitrate: r.AACBitrate(), bframes: r.BFramesPolicy()}
	}
	return out
}

// forwards runs the routes' forward targets: one runner per forwardSpec.
// Routes with an exact path forward from start; pattern routes forward each
// path that gets published. Runners reconnect on their own; the manager only
// starts and stops them. It looks at the config and the registry's paths
// (scan) when told to: by the hub's events (a stream ready or ended), by
// Reload, and when a gone path's forwardIdle runs out. One goroutine (run)
// owns the table.
type forwards struct {
	n       *Node
	running map[forwardSpec]*forwardRun // owned by run's goroutine
	wg      sync.WaitGroup              // the runners and the readiness waiters
	// live is the running runners as of the last scan, for metrics, and
	// liveRuns the same runs, for the admin API (sessions.go): the table
	// itself belongs to run's goroutine.
	live     atomic.Pointer[[]metrics.Runner]
	liveRuns atomic.Pointer[[]*forwardRun]

	kick chan struct{} // buffered 1: a scan is due; made by start

	// waitMu orders the readiness waiters' wg.Add before the final
	// wg.Wait: once stopped, no waiter starts.
	waitMu  sync.Mutex
	stopped bool // guarded by waitMu
}

type forwardRun struct {
	// stop ends the runner; its cause is the reason its session's end
	// line gives.
	stop context.CancelCauseFunc
	done chan struct{} // closed when the runner has returned (at once if it never started)
	// goneSince is when the scans stopped finding its path live (a
	// pattern route's publisher left); zero while it is.
	goneSince time.Time
	exact     bool
	runner    metrics.Runner
	// session is what the admin API lists (sessions.go); kicked is set
	// when an operator ended the run, which the next scan then restarts.
	session access.Session
	kicked  atomic.Bool
}

// ended reports whether the runner is over without having been stopped:
// newForwarder failed or the runner panicked. It stays in the table so it is
// not restarted every scan; a config change gives it a new spec.
func (r *forwardRun) ended() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// start runs the manager until ctx ends; wg waits for it and its runners.
func (f *forwards) start(ctx context.Context, wg *sync.WaitGroup) {
	f.kick = make(chan struct{}, 1)
	f.running = make(map[forwardSpec]*forwardRun)
	unsubscribe := f.n.reg.Subscribe(func(e media.Event) { f.onEvent(ctx, e) })
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer panics.Recover("forward manager", f.n.log, nil)
		f.run(ctx)
		unsubscribe()
		f.waitMu.Lock()
		f.stopped = true
		f.waitMu.Unlock()
		f.wg.Wait()
	}()
}

// onEvent asks for a scan when a stream becomes live (its tracks known:
// it is then in the registry's Paths) or ends. It does not block the hub:
// a stream still negotiating its tracks is waited for on a goroutine.
func (f *forwards) onEvent(ctx context.Context, e media.Event) {
	if e.Kind == media.Ended {
		f.reconcile()
		return
	}
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	if f.stopped {
		return
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer panics.Recover("forward manager", f.n.log, nil)
		select {
		case <-e.Stream.Ready():
			f.reconcile()
		case <-e.Stream.Done():
		case <-ctx.Done():
		}
	}()
}

// reconcile asks the manager to apply the current config and the live
// paths now (Reload and the hub's events call it). It does not wait.
func (f *forwards) reconcile() {
	select {
	case f.kick <- struct{}{}:
	default: // a scan is already due
	}
}

func (f *forwards) run(ctx context.Context) {
	idle := time.NewTimer(time.Hour)
	defer idle.Stop()
	for {
		// A panic in one scan is logged and the next scan goes on from
		// the table as it was left; the runners are not affected.
		var next time.Duration
		panics.Do("forward manager", f.n.log, func() { next = f.scan(ctx) })
		idle.Stop()
		if next > 0 {
			idle.Reset(next)
		}
		select {
		case <-ctx.Done():
			for _, r := range f.running {
				r.stop(nil) // the node is stopping: ctx's cause
			}
			f.live.Store(nil)
			return
		case <-idle.C:
		case <-f.kick:
		}
	}
}

// scan starts and stops runners to match the config and the live paths.
// It returns when the next pattern-route forward whose path is gone will
// have idled for forwardIdle (0: none is waiting), for the manager to scan
// again then.
func (f *forwards) scan(ctx context.Context) (next time.Duration) {
	cfg := f.n.Config()
	now := time.Now()
	live := make(map[string]bool)
	for _, p := range f.n.reg.Paths() {
		live[p] = true
	}
	// A pattern route's forwards are looked for on its live paths and on
	// the paths forwarded already (which may be between publishers).
	candidates := maps.Clone(live)
	for spec, run := range f.running {
		if !run.exact {
			candidates[spec.path] = true
		}
	}
	// configured: every forward the config asks for, true where its path
	// is wanted now (an exact route's, or a live one).
	configured := make(map[forwardSpec]bool)
	exact := make(map[forwardSpec]bool)
	for i := range cfg.Routes {
		r := &cfg.Routes[i]
		if len(r.Forward) > 0 && !strings.Contains(r.Path, "{") {
			for _, spec := range forwardSpecs(r.Path, r) {
				configured[spec], exact[spec] = true, true
			}
		}
	}
	for p := range candidates {
		r, ok := cfg.Match(p)
		if !ok || len(r.Forward) == 0 || !strings.Contains(r.Path, "{") {
			continue
		}
		for _, spec := range forwardSpecs(p, r) {
			configured[spec] = configured[spec] || live[p]
		}
	}

	elsewhere := f.n.ownedOnly(configured) // ownership.go
	if elsewhere != nil {
		next = ownershipRecheck
	}

	// Stop forwards the config no longer has (removed, or changed: the
	// changed one starts below under its new spec once the old has ended),
	// and those of pattern-route paths that have not been live for a while.
	ending := make(map[string][]chan struct{}) // by path
	for spec, run := range f.running {
		if run.kicked.Load() && run.ended() {
			delete(f.running, spec) // started again below
			continue
		}
		wanted, ok := configured[spec]
		switch {
		case wanted:
			run.goneSince, run.exact = time.Time{}, exact[spec]
		case run.goneSince.IsZero():
			run.goneSince = now
		}
		idleFor := now.Sub(run.goneSince)
		if ok && (run.exact || run.goneSince.IsZero() || idleFor < forwardIdle) {
			if !run.exact && !run.goneSince.IsZero() && (next == 0 || forwardIdle-idleFor < next) {
				next = forwardIdle - idleFor
			}
			continue
		}
		reason := "forward stopped: its route changed or is gone"
		switch {
		case elsewhere[spec.path]:
			reason = "forward stopped: another node of the cluster owns the stream (the forward runs there)"
		case ok:
			reason = "forward stopped: its stream has been gone for " + forwardIdle.String()
		}
		run.stop(errors.New(reason))
		delete(f.running, spec)
		ending[spec.path] = append(ending[spec.path], run.done)
		// The runner's own last line (the session's end, or its outage's)
		// says why at INFO.
		f.n.log.Debug("forward stopped", "session", run.session.ID, "stream", spec.path, "target", rawurl.Redact(spec.target.URL()), "reason", reason)
	}
	for spec, wanted := range configured {
		if _, ok := f.running[spec]; ok || !wanted {
			continue
		}
		f.startRunner(ctx, spec, exact[spec], ending[spec.path])
	}

	runners := make([]metrics.Runner, 0, len(f.running))
	runs := make([]*forwardRun, 0, len(f.running))
	for _, run := range f.running {
		if !run.ended() {
			runners = append(runners, run.runner)
			runs = append(runs, run)
		}
	}
	f.live.Store(&runners)
	f.liveRuns.Store(&runs)
	return next
}

// startRunner runs spec's forward once the runners in after (the same
// path's forwards just stopped) have returned, so a restarted forward does
// not meet its own old session at the target.
func (f *forwards) startRunner(ctx context.Context, spec forwardSpec, exact bool, after []chan struct{}) {
	run := &forwardRun{stop: func(error) {}, done: make(chan struct{}), exact: exact,
		runner: metrics.Runner{Path: spec.path, Kind: spec.target.Kind()},
		session: access.Session{ID: f.n.sessionID("fwd"), Kind: access.SessionForward, Stream: spec.path,
			Peer: rawurl.Redact(spec.target.URL()), State: "running", Since: time.Now()}}
	f.running[spec] = run
	// Every line of the forward's story carries the id the admin API
	// lists; the pusher adds stream and target.
	plog := f.n.log.With("session", run.session.ID, "route", spec.route)
	log := plog.With("stream", spec.path, "target", rawurl.Redact(spec.target.URL()))
	runner, err := f.n.newForwarder(spec, plog)
	if err != nil {
		log.Error("forward not started", "err", err)
		close(run.done)
		return
	}
	rctx, stop := context.WithCancelCause(ctx)
	run.stop = stop
	// The pusher logs the sessions (internal/reconnect's story).
	log.Debug("forward started")
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer f.restartIfKicked(run) // after done is closed: the scan sees it ended
		defer close(run.done)
		defer panics.Recover("forward", log, nil)
		for _, done := range after {
			select {
			case <-done:
			case <-rctx.Done():
				return
			}
		}
		runner(rctx)
	}()
}

// runners lists the running forward runners, as of the manager's last scan.
func (f *forwards) runners() []metrics.Runner {
	if l := f.live.Load(); l != nil {
		return *l
	}
	return nil
}

// newForwarder builds the runner pushing path to one target, logging to
// log.
func (n *Node) newForwarder(spec forwardSpec, log *slog.Logger) (func(context.Context), error) {
	path, f := spec.path, spec.target
	switch f.Kind() {
	case config.ForwardRTMP:
		p, err := egressrtmp.NewPusher(egressrtmp.PushConfig{Registry: n.reg, Path: path, URL: f.RTMP,
			AACBitrate: spec.aacBitrate, AAC: n.aac, Log: log})
		if err != nil {
			return nil, err
		}
		return p.Run, nil
	case config.ForwardSRT:
		p, err := egresssrt.NewPusher(egresssrt.PushConfig{Registry: n.reg, Path: path, URL: f.SRT,
			Audio: f.AudioCodec(), AACBitrate: spec.aacBitrate, AAC: n.aac, Log: log})
		if err != nil {
			return nil, err
		}
		return p.Run, nil
	case config.ForwardWHIP:
		p := egresswhip.NewForwarder(egresswhip.Config{Registry: n.reg, Engine: n.engine, Path: path,
			URL: f.WHIP, Token: f.Token, OpusBitrate: spec.opusBitrate, BFrames: webrtccodec.BFramePolicy(spec.bframes),
			Reencoders: n.reencoders, Log: log})
		return p.Run, nil
	}
	return nil, fmt.Errorf("forward target of unknown kind %q", f.Kind())
}
