package cluster

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
)

// BenchmarkHeartbeat measures the registry traffic of one node's
// heartbeat (registration, claims refreshed, nodes listed) with 0, 10 and
// 100 owned streams in a 3-node cluster: Redis commands and bytes sent to
// Redis per step, and per second at the default heartbeat.
func BenchmarkHeartbeat(b *testing.B) {
	for _, streams := range []int{0, 10, 100} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			r := testkit.StartRedis(b)
			// The other two nodes' heartbeats are long, so that the counts
			// below are a's.
			a := join(b, r, "a", config.DefaultClusterHeartbeat, nil)
			join(b, r, "b", config.DefaultClusterHeartbeat, nil)
			join(b, r, "c", config.DefaultClusterHeartbeat, nil)
			for i := range streams {
				if _, err := a.reg.Publish(fmt.Sprintf("live/s%d", i), "bench"); err != nil {
					b.Fatal(err)
				}
			}
			ctx := context.Background()
			a.c.step(ctx) // claims registered: the steps below refresh them
			rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
			defer rdb.Close()
			cmds0, in0 := redisStats(b, rdb)
			b.ResetTimer()
			for range b.N {
				a.c.step(ctx)
			}
			b.StopTimer()
			cmds1, in1 := redisStats(b, rdb)
			perStep := float64(cmds1-cmds0-1) / float64(b.N) // less the first INFO
			bytesPerStep := float64(in1-in0) / float64(b.N)
			perSecond := float64(config.DefaultClusterHeartbeat.Seconds())
			b.ReportMetric(perStep, "cmds/step")
			b.ReportMetric(bytesPerStep, "B/step")
			b.ReportMetric(perStep/perSecond, "cmds/s")
			b.ReportMetric(bytesPerStep/perSecond, "B/s")
		})
	}
}

// redisStats reads the server's command count and input bytes.
func redisStats(b *testing.B, rdb *redis.Client) (cmds, inBytes int64) {
	b.Helper()
	info, err := rdb.Info(context.Background(), "stats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "total_commands_processed":
			cmds = n
		case "total_net_input_bytes":
			inBytes = n
		}
	}
	return cmds, inBytes
}
