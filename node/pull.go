package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/config"
	ingestrtmp "github.com/wishbridge/bridge/ingest/rtmp"
	ingestsrt "github.com/wishbridge/bridge/ingest/srt"
	ingestwhep "github.com/wishbridge/bridge/ingest/whep"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/rawurl"
)

// pullIdle is how long an on-demand pull runs with nobody reading.
const pullIdle = 30 * time.Second

// pulls runs the routes' pull sources. A route pulls from start, or, with
// on_demand, from the first reader's request until nobody has read for
// pullIdle. Pullers reconnect on their own; readers ride out a reconnect
// through the route's grace.
type pulls struct {
	n  *Node
	wg sync.WaitGroup

	mu      sync.Mutex
	ctx     context.Context     // guarded by mu; set by start: nil until then
	running map[string]*pullRun // guarded by mu; by path
}

// pullSpec is everything a puller is built from, and so its identity: a
// reload that changes any of it (the source, its token, on_demand) restarts
// the pull, one that changes none leaves it running. pulls.run reads
// nothing else from the route, so a setting a puller uses cannot be left
// out of the identity.
type pullSpec struct {
	path     string
	url      string
	kind     string // config.PullSRT, PullRTMP or PullWHEP, from url
	token    string // bearer token for a whep+ source
	onDemand bool
}

// pullSpecOf is what r asks to pull; the zero pullSpec if r pulls nothing.
func pullSpecOf(r *config.Route) pullSpec {
	if r.Pull == "" {
		return pullSpec{}
	}
	return pullSpec{path: r.Path, url: r.Pull, kind: r.PullKind(), token: r.PullToken, onDemand: r.OnDemand}
}

type pullRun struct {
	spec pullSpec
	// stop ends the puller; its cause is the reason its session's end
	// line gives.
	stop    context.CancelCauseFunc
	done    chan struct{}
	srt     *ingestsrt.Puller // for its connection statistics; nil unless spec.kind is srt
	session access.Session    // what the admin API lists (sessions.go)
}

func (p *pulls) start(ctx context.Context) {
	p.mu.Lock()
	p.ctx, p.running = ctx, make(map[string]*pullRun)
	p.mu.Unlock()
	p.reconcile()
}

// reconcile makes the running pulls match the current config: pulls whose
// route is gone or changed in anything the puller uses stop (and are waited
// for, so a replacement can publish the path), and routes that pull from
// start get their puller.
func (p *pulls) reconcile() {
	cfg := p.n.Config()
	p.mu.Lock()
	var stopped []*pullRun
	for path, run := range p.running {
		if run.spec.kind == pullRelay && relayWanted(cfg, path) {
			continue // not the route's pull: a relay from another node (relay.go)
		}
		if r, ok := cfg.Match(path); !ok || r.Path != path || pullSpecOf(r) != run.spec {
			p.n.log.Debug("pull stopped: its route changed or is gone", "session", run.session.ID, "stream", path)
			run.stop(errors.New("pull stopped: its route changed or is gone"))
			stopped = append(stopped, run)
			delete(p.running, path)
		}
	}
	p.mu.Unlock()
	for _, run := range stopped {
		<-run.done
	}
	for i := range cfg.Routes {
		if spec := pullSpecOf(&cfg.Routes[i]); spec.url != "" && !spec.onDemand {
			p.run(spec)
		}
	}
}

// demand starts path's on-demand pull if it has one (and it is not
// running yet); readers call it when they find no stream. It reports
// whether path has an on-demand pull, so the reader should wait.
func (p *pulls) demand(path string) bool {
	r, ok := p.n.Config().Match(path)
	if !ok || r.Pull == "" || !r.OnDemand || r.Path != path {
		return false
	}
	if !p.n.leaseFree(context.Background(), path) {
		return false // another node runs it: a relay from there (ownership.go)
	}
	p.run(pullSpecOf(r))
	return true
}

func (p *pulls) run(spec pullSpec) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.running[spec.path]; ok || p.ctx == nil || p.ctx.Err() != nil {
		return
	}
	pr := &pullRun{spec: spec, done: make(chan struct{}), session: access.Session{ID: p.n.sessionID("pull"),
		Kind: access.SessionPull, Stream: spec.path, Peer: rawurl.Redact(spec.url), State: "running", Since: time.Now()}}
	// Every line of the pull's story carries the id the admin API lists
	// (a pull's route is its path); the puller adds stream and source.
	plog := p.n.log.With("session", pr.session.ID, "route", spec.path)
	log := plog.With("stream", spec.path, "source", rawurl.Redact(spec.url))
	var run func(context.Context)
	switch spec.kind {
	case config.PullSRT:
		pr.srt = ingestsrt.NewPuller(ingestsrt.PullConfig{Registry: p.n.reg, Path: spec.path, URL: spec.url, Log: plog})
		run = pr.srt.Run
	case config.PullRTMP:
		run = ingestrtmp.NewPuller(ingestrtmp.PullConfig{Registry: p.n.reg, Path: spec.path, URL: spec.url, Log: plog}).Run
	case config.PullWHEP:
		run = ingestwhep.NewPuller(ingestwhep.Config{Registry: p.n.reg, Engine: p.n.engine, Path: spec.path,
			URL: spec.url, Token: spec.token, Log: plog}).Run
	case pullRelay:
		run = p.n.newRelay(spec, plog)
	default:
		log.Error("pull not started: unknown scheme")
		return
	}
	run = p.n.leased(spec, run, log) // in a cluster, under the pull's lease (ownership.go)
	ctx, stop := context.WithCancelCause(p.ctx)
	pr.stop = stop
	p.running[spec.path] = pr
	// The puller logs the sessions (internal/reconnect's story).
	log.Debug("pull started", "on_demand", spec.onDemand)
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		defer close(pr.done)
		// A panicking puller ends its pull (the watcher below then drops
		// it from the table, so a reader's demand or a reload starts it
		// again).
		defer panics.Recover("pull", log, func() { stop(errPullPanicked) })
		run(ctx)
	}()
	go func() {
		defer p.wg.Done()
		var why error // nil: ctx's cause
		defer func() { p.forget(pr, why) }()
		defer panics.Recover("pull watcher", log, nil)
		if spec.onDemand {
			why = p.stopWhenIdle(ctx, spec.path, idleOf(spec.kind))
		} else {
			<-ctx.Done()
		}
	}()
}

// errPullPanicked ends a pull whose puller panicked.
var errPullPanicked = errors.New("internal error: the puller panicked (logged with its stack)")

// forget stops run for why (nil: as it was stopped already) and takes it
// out of the table, unless it was replaced.
func (p *pulls) forget(run *pullRun, why error) {
	run.stop(why)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running[run.spec.path] == run {
		delete(p.running, run.spec.path)
	}
}

// stopWhenIdle returns once path has had no reader for idle, with that
// reason, or nil once ctx ends.
func (p *pulls) stopWhenIdle(ctx context.Context, path string, idle time.Duration) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if s, ok := p.n.reg.Get(path); ok && s.Readers() > 0 {
				last = now
			} else if now.Sub(last) > idle {
				return fmt.Errorf("on-demand pull stopped: nobody has read for %v", idle)
			}
		}
	}
}

// wait waits for every puller to end (after the context passed to start).
func (p *pulls) wait() { p.wg.Wait() }
