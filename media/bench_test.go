package media

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// BenchmarkWriteFanout measures one Write handed to n readers; ns/op and
// allocs/op are per Write, for all n readers together.
//
//   - drained: every queue has room and nobody waits; the benchmark drains
//     the queues with the timer stopped. The hub's own cost.
//   - reading: each reader drains its queue on its own goroutine, so a
//     Write also wakes waiting readers. The writer never blocks here (a real
//     one waits on its network connection), so the readers get less CPU
//     than they would live, and drops/push depends on the scheduler.
//   - stuck: readers never read, so every push is a drop (the slow-viewer
//     path).
func BenchmarkWriteFanout(b *testing.B) {
	for _, mode := range []string{"drained", "reading", "stuck"} {
		for _, n := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("%s/readers=%d", mode, n), func(b *testing.B) {
				benchmarkWriteFanout(b, n, mode)
			})
		}
	}
}

func benchmarkWriteFanout(b *testing.B, n int, mode string) {
	const queue = 512
	s, video, audio := newTestStream(b)
	// A few distinct units reused: the benchmark measures the hub, not the
	// allocation of units.
	units := interleaved(video, audio, 60, 30)
	readers := make([]*Reader, n)
	var wg sync.WaitGroup
	for i := range readers {
		readers[i] = newTestReader(b, s, queue)
		if mode != "reading" {
			continue
		}
		wg.Go(func() {
			for {
				if _, err := readers[i].Read(context.Background()); err != nil {
					return
				}
			}
		})
	}
	if mode == "stuck" {
		for i := range queue { // fill every queue first
			s.Write(units[i%len(units)])
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if mode == "drained" && i%queue == queue-1 {
			b.StopTimer()
			for _, r := range readers {
				readQueued(b, r)
			}
			b.StartTimer()
		}
		s.Write(units[i%len(units)])
	}
	b.StopTimer()
	var dropped uint64
	for _, r := range readers {
		dropped += r.Dropped()
	}
	b.ReportMetric(float64(dropped)/float64(b.N)/float64(n), "drops/push")
	s.Close()
	wg.Wait()
}

// BenchmarkWriteProcessors is Write with no reader and k processors on the
// unit's track: the cost a processor adds to every unit besides its own
// work (its call under the panic boundary, see Processor).
func BenchmarkWriteProcessors(b *testing.B) {
	for _, k := range []int{0, 1, 4} {
		b.Run(fmt.Sprintf("processors=%d", k), func(b *testing.B) {
			s, video, _ := newTestStream(b)
			for i := range k {
				defer addProc(b, s.Stream, video, fmt.Sprint("p", i), func(*Track) Processor { return procFunc(func(*Unit) error { return nil }) })()
			}
			u := vunit(video, 0, false)
			b.ReportAllocs()
			for b.Loop() {
				s.Write(u)
			}
		})
	}
}
