package main

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/wishbridge/bridge/config"
	ingestrtmp "github.com/wishbridge/bridge/ingest/rtmp"
	ingestsrt "github.com/wishbridge/bridge/ingest/srt"
	ingestwhep "github.com/wishbridge/bridge/ingest/whep"
)

// pullIdle is how long an on-demand pull runs with nobody reading.
const pullIdle = 30 * time.Second

// pulls runs the routes' pull sources. A route pulls from start, or, with
// on_demand, from the first reader's request until nobody has read for
// pullIdle. Pullers reconnect on their own; readers ride out a reconnect
// through the route's grace.
type pulls struct {
	b   *Bridge
	ctx context.Context
	wg  sync.WaitGroup

	mu      sync.Mutex
	running map[string]*pullRun // guarded by mu; by path
}

type pullRun struct {
	url    string
	kind   string // the source's protocol: srt, rtmp or whep (metrics)
	cancel context.CancelFunc
	done   chan struct{}
	srt    *ingestsrt.Puller // for its connection statistics; nil unless kind is srt
}

func (p *pulls) start(ctx context.Context, b *Bridge) {
	p.b, p.ctx, p.running = b, ctx, make(map[string]*pullRun)
	p.reconcile()
}

// reconcile makes the running pulls match the current config: pulls whose
// route is gone or changed stop (and are waited for, so a replacement can
// publish the path), and routes that pull from start get their puller.
func (p *pulls) reconcile() {
	cfg := p.b.cfg.Load()
	p.mu.Lock()
	var stopped []*pullRun
	for path, run := range p.running {
		if r, ok := cfg.Match(path); !ok || r.Path != path || r.Pull != run.url {
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
		if r := &cfg.Routes[i]; r.Pull != "" && !r.OnDemand {
			p.run(r, false)
		}
	}
}

// demand starts path's on-demand pull if it has one (and it is not
// running yet); readers call it when they find no stream. It reports
// whether path has an on-demand pull, so the reader should wait.
func (p *pulls) demand(path string) bool {
	r, ok := p.b.cfg.Load().Match(path)
	if !ok || r.Pull == "" || !r.OnDemand || r.Path != path {
		return false
	}
	p.run(r, true)
	return true
}

func (p *pulls) run(r *config.Route, onDemand bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.running[r.Path]; ok || p.ctx.Err() != nil {
		return
	}
	var run func(context.Context)
	pr := &pullRun{url: r.Pull, done: make(chan struct{})}
	switch scheme, _, _ := strings.Cut(strings.ToLower(r.Pull), "://"); scheme {
	case "srt":
		pr.kind = "srt"
		pr.srt = ingestsrt.NewPuller(ingestsrt.PullConfig{Registry: p.b.registry, Path: r.Path, URL: r.Pull, Log: p.b.log})
		run = pr.srt.Run
	case "rtmp", "rtmps":
		pr.kind = "rtmp"
		run = ingestrtmp.NewPuller(ingestrtmp.PullConfig{Registry: p.b.registry, Path: r.Path, URL: r.Pull, Log: p.b.log}).Run
	case "whep+http", "whep+https":
		pr.kind = "whep"
		run = ingestwhep.NewPuller(ingestwhep.Config{Registry: p.b.registry, Engine: p.b.engine, Path: r.Path,
			URL: r.Pull, Token: r.PullToken, Log: p.b.log}).Run
	default:
		p.b.log.Error("pull not started: unknown scheme", "route", r.Path, "source", config.RedactURL(r.Pull))
		return
	}
	ctx, cancel := context.WithCancel(p.ctx)
	pr.cancel = cancel
	p.running[r.Path] = pr
	p.b.log.Info("pull started", "stream", r.Path, "source", config.RedactURL(r.Pull), "on_demand", onDemand)
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		defer close(pr.done)
		run(ctx)
	}()
	path := r.Path
	go func() {
		defer p.wg.Done()
		defer cancel()
		if onDemand {
			p.stopWhenIdle(ctx, path)
		} else {
			<-ctx.Done()
		}
		p.mu.Lock()
		if p.running[path] == pr {
			delete(p.running, path)
		}
		p.mu.Unlock()
	}()
}

// stopWhenIdle returns once path has had no reader for pullIdle.
func (p *pulls) stopWhenIdle(ctx context.Context, path string) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if s, ok := p.b.registry.Get(path); ok && s.Readers() > 0 {
				last = now
			} else if now.Sub(last) > pullIdle {
				p.b.log.Info("on-demand pull stopped: nobody is reading", "stream", path)
				return
			}
		}
	}
}

// wait waits for every puller to end (after the context passed to start).
func (p *pulls) wait() { p.wg.Wait() }
