package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wishbridge/bridge/config"
	egressrtmp "github.com/wishbridge/bridge/egress/rtmp"
	egresssrt "github.com/wishbridge/bridge/egress/srt"
	egresswhip "github.com/wishbridge/bridge/egress/whip"
	"github.com/wishbridge/bridge/metrics"
)

// forwardScan is how often the forward manager looks for newly published
// paths on pattern routes.
const forwardScan = 500 * time.Millisecond

// forwardIdle is how long a forward to a pattern route's path keeps
// waiting after its stream has gone before it is stopped.
const forwardIdle = time.Minute

// forwards runs the routes' forward targets: one runner per (stream path,
// target). Routes with an exact path forward from start; pattern routes
// forward each path that gets published. Runners reconnect on their own; the
// manager only starts and stops them. One goroutine (run) owns the table.
type forwards struct {
	b       *Bridge
	running map[string]*forwardRun // key: path + "\x00" + kind + "\x00" + URL
	wg      sync.WaitGroup
	// live is the running runners as of the last scan, for metrics: the
	// table itself belongs to run's goroutine.
	live atomic.Pointer[[]metrics.Runner]
}

type forwardRun struct {
	cancel   context.CancelFunc
	lastSeen time.Time
	exact    bool
	runner   metrics.Runner
	failed   bool // not started (newForwarder failed); kept so it is not retried every scan
}

func (f *forwards) run(ctx context.Context) {
	defer f.wg.Wait()
	f.running = make(map[string]*forwardRun)
	t := time.NewTicker(forwardScan)
	defer t.Stop()
	for {
		f.scan(ctx)
		select {
		case <-ctx.Done():
			for _, r := range f.running {
				r.cancel()
			}
			f.live.Store(nil)
			return
		case <-t.C:
		}
	}
}

func (f *forwards) scan(ctx context.Context) {
	cfg := f.b.cfg.Load()
	now := time.Now()
	live := f.b.registry.Paths()
	wanted := make(map[string]bool)
	for i := range cfg.Routes {
		r := &cfg.Routes[i]
		if len(r.Forward) == 0 {
			continue
		}
		exact := !strings.Contains(r.Path, "{")
		var paths []string
		if exact {
			paths = []string{r.Path}
		} else {
			for _, p := range live {
				if m, ok := cfg.Match(p); ok && m == r {
					paths = append(paths, p)
				}
			}
		}
		for _, path := range paths {
			for _, target := range r.Forward {
				key := path + "\x00" + target.Kind() + "\x00" + target.URL()
				wanted[key] = true
				if run, ok := f.running[key]; ok {
					run.lastSeen = now
					continue
				}
				runner, err := f.b.newForwarder(path, r, target)
				if err != nil {
					f.b.log.Error("forward not started", "route", r.Path, "stream", path, "err", err)
					// Remember the failure so it is not retried every scan.
					f.running[key] = &forwardRun{cancel: func() {}, lastSeen: now, exact: true, failed: true}
					continue
				}
				rctx, cancel := context.WithCancel(ctx)
				f.running[key] = &forwardRun{cancel: cancel, lastSeen: now, exact: exact,
					runner: metrics.Runner{Path: path, Kind: target.Kind()}}
				f.b.log.Info("forward started", "route", r.Path, "stream", path, "target", config.RedactURL(target.URL()))
				f.wg.Add(1)
				go func() {
					defer f.wg.Done()
					runner(rctx)
				}()
			}
		}
	}
	// Stop forwards a reloaded config no longer has, and those of
	// pattern-route paths that have not been live for a while.
	for key, run := range f.running {
		removed := run.exact && !wanted[key]
		stale := !run.exact && now.Sub(run.lastSeen) > forwardIdle
		if removed || stale {
			run.cancel()
			delete(f.running, key)
		}
	}
	runners := make([]metrics.Runner, 0, len(f.running))
	for _, run := range f.running {
		if !run.failed {
			runners = append(runners, run.runner)
		}
	}
	f.live.Store(&runners)
}

// newForwarder builds the runner pushing path to one target.
func (b *Bridge) newForwarder(path string, r *config.Route, f config.Forward) (func(context.Context), error) {
	switch f.Kind() {
	case config.ForwardRTMP:
		p, err := egressrtmp.NewPusher(egressrtmp.PushConfig{Registry: b.registry, Path: path, URL: f.RTMP,
			AACBitrate: r.AACBitrate(), AAC: b.aac, Log: b.log})
		if err != nil {
			return nil, err
		}
		return p.Run, nil
	case config.ForwardSRT:
		p, err := egresssrt.NewPusher(egresssrt.PushConfig{Registry: b.registry, Path: path, URL: f.SRT,
			Audio: f.AudioCodec(), AACBitrate: r.AACBitrate(), AAC: b.aac, Log: b.log})
		if err != nil {
			return nil, err
		}
		return p.Run, nil
	case config.ForwardWHIP:
		p := egresswhip.NewForwarder(egresswhip.Config{Registry: b.registry, Engine: b.engine, Path: path,
			URL: f.WHIP, Token: f.Token, OpusBitrate: r.OpusBitrate(), Log: b.log})
		return p.Run, nil
	}
	return nil, fmt.Errorf("forward target of unknown kind %q", f.Kind())
}
