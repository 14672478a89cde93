package node

import (
	"context"
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
	spec    pullSpec
	cancel  context.CancelFunc
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
			p.n.log.Info("pull stopped: its route changed or is gone", "stream", path)
			run.cancel()
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
	p.run(pullSpecOf(r))
	return true
}

func (p *pulls) run(spec pullSpec) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.running[spec.path]; ok || p.ctx == nil || p.ctx.Err() != nil {
		return
	}
	log := p.n.log.With("stream", spec.path, "source", rawurl.Redact(spec.url))
	var run func(context.Context)
	pr := &pullRun{spec: spec, done: make(chan struct{}), session: access.Session{ID: p.n.sessionID("pull"),
		Kind: access.SessionPull, Stream: spec.path, Peer: rawurl.Redact(spec.url), State: "running", Since: time.Now()}}
	switch spec.kind {
	case config.PullSRT:
		pr.srt = ingestsrt.NewPuller(ingestsrt.PullConfig{Registry: p.n.reg, Path: spec.path, URL: spec.url, Log: p.n.log})
		run = pr.srt.Run
	case config.PullRTMP:
		run = ingestrtmp.NewPuller(ingestrtmp.PullConfig{Registry: p.n.reg, Path: spec.path, URL: spec.url, Log: p.n.log}).Run
	case config.PullWHEP:
		run = ingestwhep.NewPuller(ingestwhep.Config{Registry: p.n.reg, Engine: p.n.engine, Path: spec.path,
			URL: spec.url, Token: spec.token, Log: p.n.log}).Run
	case pullRelay:
		run = p.n.newRelay(spec, p.n.log)
	default:
		log.Error("pull not started: unknown scheme")
		return
	}
	ctx, cancel := context.WithCancel(p.ctx)
	pr.cancel = cancel
	p.running[spec.path] = pr
	log.Info("pull started", "on_demand", spec.onDemand)
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		defer close(pr.done)
		// A panicking puller ends its pull (the watcher below then drops
		// it from the table, so a reader's demand or a reload starts it
		// again).
		defer panics.Recover("pull", log, cancel)
		run(ctx)
	}()
	go func() {
		defer p.wg.Done()
		defer p.forget(pr)
		defer panics.Recover("pull watcher", log, nil)
		if spec.onDemand {
			p.stopWhenIdle(ctx, spec.path, idleOf(spec.kind))
		} else {
			<-ctx.Done()
		}
	}()
}

// forget stops run and takes it out of the table, unless it was replaced.
func (p *pulls) forget(run *pullRun) {
	run.cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running[run.spec.path] == run {
		delete(p.running, run.spec.path)
	}
}

// stopWhenIdle returns once path has had no reader for idle.
func (p *pulls) stopWhenIdle(ctx context.Context, path string, idle time.Duration) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if s, ok := p.n.reg.Get(path); ok && s.Readers() > 0 {
				last = now
			} else if now.Sub(last) > idle {
				p.n.log.Info("on-demand pull stopped: nobody is reading", "stream", path)
				return
			}
		}
	}
}

// wait waits for every puller to end (after the context passed to start).
func (p *pulls) wait() { p.wg.Wait() }
