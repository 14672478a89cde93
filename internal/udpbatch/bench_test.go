package udpbatch

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

const (
	benchReceivers = 100
	benchSize      = 1200
)

// benchSetup opens the sending socket the way the bridge does (dual stack,
// wildcard) and benchReceivers loopback receivers drained by goroutines.
func benchSetup(b *testing.B) (*net.UDPConn, []netip.AddrPort) {
	b.Helper()
	sender := listen(b, "udp", ":0")
	_ = sender.SetWriteBuffer(4 << 20)
	dsts := make([]netip.AddrPort, benchReceivers)
	for i := range dsts {
		rc := listen(b, "udp4", "127.0.0.1:0")
		dsts[i] = addrOf(rc)
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := rc.ReadFromUDPAddrPort(buf); err != nil {
					return
				}
			}
		}()
	}
	return sender, dsts
}

// benchWriters are the writer goroutine counts: one stream, and a fan-out
// where every viewer's goroutine writes.
var benchWriters = []int{1, 32}

// benchWrite writes b.N packets of benchSize bytes from writers goroutines,
// round robin over dsts. One op is one packet.
func benchWrite(b *testing.B, writers int, dsts []netip.AddrPort, write func([]byte, netip.AddrPort) (int, error)) {
	var next atomic.Uint64
	b.SetBytes(benchSize)
	b.ReportAllocs()
	run := func(pb *testing.PB) {
		pkt := make([]byte, benchSize)
		for pb.Next() {
			i := next.Add(1)
			if _, err := write(pkt, dsts[i%uint64(len(dsts))]); err != nil {
				b.Error(err)
				return
			}
		}
	}
	if writers == 1 {
		pkt := make([]byte, benchSize)
		for i := range b.N {
			if _, err := write(pkt, dsts[i%len(dsts)]); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	// RunParallel starts parallelism*GOMAXPROCS goroutines.
	b.SetParallelism((writers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.RunParallel(run)
}

// BenchmarkSendto is today's path: one sendto per packet, from the
// writers' goroutines, on the shared socket.
func BenchmarkSendto(b *testing.B) {
	for _, w := range benchWriters {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			sender, dsts := benchSetup(b)
			b.ResetTimer()
			benchWrite(b, w, dsts, sender.WriteToUDPAddrPort)
		})
	}
}

// BenchmarkBatch is the same load through Conn; the time includes
// waiting for the last packet to leave.
func BenchmarkBatch(b *testing.B) {
	for _, w := range benchWriters {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			sender, dsts := benchSetup(b)
			c := New(sender, Options{Logger: quiet})
			defer c.Close()
			b.ResetTimer()
			benchWrite(b, w, dsts, c.WriteToUDPAddrPort)
			for {
				st := c.Stats()
				if st.Sent+st.Dropped >= uint64(b.N) {
					break
				}
				time.Sleep(20 * time.Microsecond)
			}
			b.StopTimer()
			st := c.Stats()
			b.ReportMetric(float64(st.Sent)/float64(max(st.Batches, 1)), "pkts/syscall")
			if st.Dropped != 0 {
				b.Errorf("%d packets dropped", st.Dropped)
			}
		})
	}
}

// benchFrame is a video frame as the fan-out writes it to one viewer: three
// full packets and a shorter last one. Its mean packet size is
// benchFrameBytes / len(benchFrame).
var benchFrame = []int{1200, 1200, 1200, 400}

const benchFrameBytes = 1200*3 + 400

// benchWriteFrames writes b.N packets from writers goroutines, as frames:
// each writer writes a whole frame to one destination, then the next frame
// to the next destination (round robin over dsts, shared by the writers).
// One op is one packet.
func benchWriteFrames(b *testing.B, writers int, dsts []netip.AddrPort, write func([]byte, netip.AddrPort) (int, error)) {
	var nextFrame atomic.Uint64
	b.SetBytes(benchFrameBytes / int64(len(benchFrame)))
	b.ReportAllocs()
	if writers == 1 {
		pkt := make([]byte, benchSize)
		for i := range b.N {
			k := i % len(benchFrame)
			if _, err := write(pkt[:benchFrame[k]], dsts[(i/len(benchFrame))%len(dsts)]); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism((writers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.RunParallel(func(pb *testing.PB) {
		pkt := make([]byte, benchSize)
		var to netip.AddrPort
		for k := 0; pb.Next(); k = (k + 1) % len(benchFrame) {
			if k == 0 {
				to = dsts[nextFrame.Add(1)%uint64(len(dsts))]
			}
			if _, err := write(pkt[:benchFrame[k]], to); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkBatchRuns is the fan-out's video through Conn, with UDP GSO
// (each frame can leave as one message) and without; the time includes
// waiting for the last packet to leave. gso/frame is the share of frames
// that left as one GSO message: concurrent writers interleave frames in a
// shard's queue, and then only their neighbours are merged.
func BenchmarkBatchRuns(b *testing.B) {
	for _, gso := range []bool{false, true} {
		for _, w := range benchWriters {
			b.Run(fmt.Sprintf("gso=%v/writers=%d", gso, w), func(b *testing.B) {
				sender, dsts := benchSetup(b)
				c := New(sender, Options{NoGSO: !gso, Logger: quiet})
				defer c.Close()
				b.ResetTimer()
				benchWriteFrames(b, w, dsts, c.WriteToUDPAddrPort)
				for {
					st := c.Stats()
					if st.Sent+st.Dropped >= uint64(b.N) {
						break
					}
					time.Sleep(20 * time.Microsecond)
				}
				b.StopTimer()
				st := c.Stats()
				b.ReportMetric(float64(st.Sent)/float64(max(st.Batches, 1)), "pkts/syscall")
				b.ReportMetric(float64(st.GSOSends)/float64(max(st.Sent/uint64(len(benchFrame)), 1)), "gso/frame")
				if st.Dropped != 0 {
					b.Errorf("%d packets dropped", st.Dropped)
				}
				if !gso && st.GSOSends != 0 {
					b.Errorf("%d GSO sends with NoGSO", st.GSOSends)
				}
			})
		}
	}
}
