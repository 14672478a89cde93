package testkit

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os/exec"
	"testing"
	"time"
)

// FFmpegBin returns the path of name (ffmpeg or ffprobe); a missing binary
// fails the test.
func FFmpegBin(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required for this test (%v): apt-get install ffmpeg", name, err)
	}
	return p
}

// Proc is a running ffmpeg.
type Proc struct {
	Cmd    *exec.Cmd
	Stderr *LogBuf // its stderr and stdout
	done   chan struct{}
	err    error
}

// StartFFmpeg starts ffmpeg -hide_banner -nostdin -loglevel error with
// args; it is killed when the test ends.
func StartFFmpeg(t testing.TB, args ...string) *Proc {
	t.Helper()
	bin := FFmpegBin(t, "ffmpeg")
	f := &Proc{Stderr: &LogBuf{}, done: make(chan struct{})}
	f.Cmd = exec.Command(bin, append([]string{"-hide_banner", "-nostdin", "-loglevel", "error"}, args...)...)
	f.Cmd.Stderr = f.Stderr
	f.Cmd.Stdout = f.Stderr
	if err := f.Cmd.Start(); err != nil {
		t.Fatalf("start ffmpeg: %v", err)
	}
	go func() {
		f.err = f.Cmd.Wait()
		close(f.done)
	}()
	t.Cleanup(func() { f.Kill() })
	return f
}

// Kill kills ffmpeg (if still running) and waits for it to exit.
func (f *Proc) Kill() {
	select {
	case <-f.done:
	default:
		_ = f.Cmd.Process.Kill()
		<-f.done
	}
}

// Wait waits for ffmpeg to exit and returns its exit error.
func (f *Proc) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-f.done:
		return f.err
	case <-time.After(timeout):
		t.Fatalf("ffmpeg still running after %v; stderr:\n%s", timeout, f.Stderr.String())
		return nil
	}
}

// FreeTCPPort returns a TCP port that was free a moment ago, for a process
// that binds it itself (ffmpeg as a listener): see freePort.
func FreeTCPPort(t testing.TB) int {
	t.Helper()
	return freePort(t, func(addr string) (io.Closer, error) { return net.Listen("tcp", addr) })
}

// FreeUDPPort returns a UDP port that was free a moment ago; see freePort.
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	return freePort(t, func(addr string) (io.Closer, error) { return net.ListenPacket("udp", addr) })
}

// freePort picks a port below Linux's ephemeral range (32768-60999) that
// bind can take on every address. Between the check and the other
// process's bind, a socket bound to port 0 by a test running in parallel
// can only get an ephemeral port, so it cannot take this one (a port from
// the ephemeral range could be, and was: "Address already in use").
func freePort(t testing.TB, bind func(addr string) (io.Closer, error)) int {
	t.Helper()
	for range 200 {
		port := 20000 + rand.IntN(12000)
		if c, err := bind(fmt.Sprintf(":%d", port)); err == nil {
			c.Close()
			return port
		}
	}
	t.Fatal("no free port found in 20000-31999")
	return 0
}

// KillWait kills ffmpeg and fails the test if it has not exited within
// timeout.
func (f *Proc) KillWait(t testing.TB, timeout time.Duration) {
	t.Helper()
	_ = f.Cmd.Process.Kill()
	select {
	case <-f.done:
	case <-time.After(timeout):
		t.Fatal("ffmpeg did not exit after kill")
	}
}

// Done is closed when ffmpeg has exited.
func (f *Proc) Done() <-chan struct{} { return f.done }

// Err is ffmpeg's exit error, once Done is closed.
func (f *Proc) Err() error { return f.err }
