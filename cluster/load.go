package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// cpuMeter measures the process's CPU use between two samples, as a share
// of the machine's CPUs. The zero value is ready; not safe for concurrent
// use (the heartbeat alone samples it).
type cpuMeter struct {
	lastCPU  time.Duration
	lastWall time.Time
}

// sample returns the share of the CPUs the process used since the last
// sample (0 at the first), 0-1.
func (m *cpuMeter) sample() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	now := time.Now()
	var share float64
	if wall := now.Sub(m.lastWall); !m.lastWall.IsZero() && wall > 0 {
		share = min(1, float64(cpu-m.lastCPU)/float64(wall)/float64(runtime.NumCPU()))
	}
	m.lastCPU, m.lastWall = cpu, now
	return share
}

// quietRedisLog sends the Redis client's own log lines (a failed dial at
// every heartbeat while Redis is down, pool notices) to slog at debug:
// the cluster logs the state changes that matter once. The client's
// logger is process-wide, hence once.
var quietRedisLog = sync.OnceFunc(func() { redis.SetLogger(redisLog{}) })

type redisLog struct{}

func (redisLog) Printf(ctx context.Context, format string, v ...any) {
	slog.Default().DebugContext(ctx, fmt.Sprintf(format, v...), "component", "redis client")
}
