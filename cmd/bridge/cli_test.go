package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/transcode"
)

// run runs bin with args to its end and returns its exit status, stdout
// and stderr.
func run(t *testing.T, bin string, env []string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if _, exited := err.(*exec.ExitError); err != nil && !exited {
		t.Fatalf("run %s %q: %v", bin, args, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// testCheck: bridge -check -config FILE says "valid" and exits 0 for the
// documented example, and exits 1 with every problem as file:line on
// stderr, a missing environment variable included; without a file it is a
// usage error (2).
func testCheck(t *testing.T, bin string) {
	code, stdout, stderr := run(t, bin, nil, "-check", "-config", "../../config.yaml")
	if code != 0 || stdout != "../../config.yaml: valid\n" || stderr != "" {
		t.Errorf("valid file: status %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("log:\n  level: loud\nroutes:\n  - path: a\n    publish_key: ${BRIDGE_TEST_UNSET_KEY}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = run(t, bin, nil, "-check", "-config", bad)
	want := bad + `:5: routes[0].publish_key: ${BRIDGE_TEST_UNSET_KEY}: environment variable BRIDGE_TEST_UNSET_KEY is not set (export it to the bridge's environment, or write $$ for a literal "$")` + "\n"
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("missing variable: status %d, stdout %q, stderr:\n%s\nwant status 1 and:\n%s", code, stdout, stderr, want)
	}
	code, _, stderr = run(t, bin, []string{"BRIDGE_TEST_UNSET_KEY=k"}, "-check", "-config", bad)
	want = bad + `:2: log.level: "loud" is not a log level (expected debug, info, warn or error)` + "\n"
	if code != 1 || stderr != want {
		t.Errorf("invalid level: status %d, stderr:\n%s\nwant status 1 and:\n%s", code, stderr, want)
	}

	if code, _, stderr = run(t, bin, nil, "-check"); code != 2 || !strings.Contains(stderr, "expected -check -config FILE") {
		t.Errorf("-check without a file: status %d, stderr %q", code, stderr)
	}
}

// testVersion: bridge -version names the version given at build time, the
// commit checked out, the Go release and the FFmpeg linked in.
func testVersion(t *testing.T, bin string) {
	code, stdout, stderr := run(t, bin, nil, "-version")
	if code != 0 || stderr != "" {
		t.Fatalf("status %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) > 1 && strings.HasPrefix(lines[1], "commit: "+builtFrom[1]) {
		builtFrom[0] = builtFrom[1]
	}
	want := []string{
		"bridge " + stampedVersion,
		"commit: " + builtFrom[0], // "+modified" may follow
		fmt.Sprintf("go: %s %s/%s", runtime.Version(), runtime.GOOS, runtime.GOARCH),
		"ffmpeg: " + transcode.FFmpegVersion(),
	}
	if len(lines) != len(want) {
		t.Fatalf("-version printed:\n%s\nwant %d lines", stdout, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("line %d: %q, want %q", i+1, lines[i], want[i])
		}
	}
	if !strings.Contains(lines[3], "libavcodec") {
		t.Errorf("no FFmpeg version: %q", lines[3])
	}
}

// testHealthcheck: bridge -healthcheck URL exits 0 on a 2xx answer (a
// running bridge's page) and 1 on an error status (with the reason the
// server gave), a refused connection, or no answer within 5 s.
func testHealthcheck(t *testing.T, bin string) {
	p := startProcess(t, bin, nil, "routes:\n  - path: \"{path...}\"\n")
	if code, stdout, stderr := run(t, bin, nil, "-healthcheck", "http://"+p.http+"/"); code != 0 || !strings.HasPrefix(stdout, "200 OK") {
		t.Errorf("running bridge: status %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/draining":
			http.Error(w, `{"ready":false,"reason":"shutting down"}`, http.StatusServiceUnavailable)
		case "/hang":
			<-r.Context().Done()
		}
	}))
	defer srv.Close()
	for _, tt := range []struct{ url, want string }{
		{srv.URL + "/draining", `503 Service Unavailable: {"ready":false,"reason":"shutting down"}`},
		{srv.URL + "/hang", "no answer within 5s"},
		{fmt.Sprintf("http://127.0.0.1:%d/readyz", testkit.FreeTCPPort(t)), "connection refused"},
	} {
		code, _, stderr := run(t, bin, nil, "-healthcheck", tt.url)
		if code != 1 || !strings.Contains(stderr, tt.want) {
			t.Errorf("%s: status %d, stderr %q, want 1 and %q", tt.url, code, stderr, tt.want)
		}
	}
}

// testJSONLogs: log.format json makes every line a JSON object; log.level
// applies at start and on SIGHUP, while a format change waits for a
// restart (and says so); the -log-level flag overrides log.level, at start
// and across reloads.
func testJSONLogs(t *testing.T, bin string) {
	const routes = "routes:\n  - path: \"{path...}\"\n"
	p := startProcess(t, bin, nil, "log:\n  format: json\n  level: error\n"+routes)
	p.rewrite(t, "log:\n  format: text\n  level: info\n"+routes)
	p.signal(t, syscall.SIGHUP)
	p.log.WaitLog(t, 10*time.Second, `"level":"INFO"`, `"msg":"config reloaded"`)
	if n := p.log.Count(`"level":"WARN"`, "need a restart", `"restart_needed":["log.format"]`); n != 1 {
		t.Errorf("%d lines saying that the format changes at the next start", n)
	}
	if n := p.log.Count("bridge started"); n != 0 {
		t.Error("info line logged at level error")
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t, 30*time.Second); code != 0 {
		t.Errorf("exit status %d", code)
	}
	for _, line := range strings.Split(strings.TrimSpace(p.log.String()), "\n") {
		var rec struct{ Time, Level, Msg string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Time == "" || rec.Level == "" || rec.Msg == "" {
			t.Errorf("not a JSON log record with time, level and msg: %s", line)
		}
	}

	q := startProcess(t, bin, nil, "log:\n  level: error\n"+routes, "-log-level", "info")
	q.signal(t, syscall.SIGHUP)
	q.log.WaitLog(t, 10*time.Second, "level=INFO", "config reloaded: unchanged")
	if q.log.Count("level=INFO", "bridge started") != 1 {
		t.Error("-log-level info did not override log.level error at start")
	}
}
