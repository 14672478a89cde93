package testkit

import (
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

// FreeTCPPort returns a TCP port that was free a moment ago.
func FreeTCPPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// FreeUDPPort returns a UDP port that was free a moment ago.
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.LocalAddr().(*net.UDPAddr).Port
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
