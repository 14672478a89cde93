package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/rawurl"
	"github.com/wishbridge/bridge/transcode"
)

// version is the release, set at build time:
// go build -ldflags "-X main.version=1.2.3" ./cmd/bridge
var version = "dev"

// flags are the command line.
type flags struct {
	config   string
	logLevel string // "" means log.level
	pprof    string
	// One of these runs instead of the bridge.
	check       bool
	version     bool
	healthcheck string
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	var f flags
	fs := flag.NewFlagSet("bridge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.config, "config", "", "YAML config file (default: embedded defaults)")
	fs.StringVar(&f.logLevel, "log-level", "", "log level: debug, info, warn or error; overrides log.level, also across reloads")
	fs.StringVar(&f.pprof, "pprof", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060); off by default, never expose it publicly")
	fs.BoolVar(&f.check, "check", false, "validate the -config file and exit: 0 if valid, 1 with file:line messages on stderr")
	fs.BoolVar(&f.version, "version", false, "print the version, commit, Go and FFmpeg versions and exit")
	fs.StringVar(&f.healthcheck, "healthcheck", "", "GET this URL (e.g. http://127.0.0.1:8080/readyz) and exit: 0 on a 2xx answer within 5 s, 1 otherwise")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected argument %q (options start with -)", fs.Arg(0))
		fmt.Fprintln(stderr, "bridge:", err)
		fs.Usage()
		return nil, err
	}
	if _, ok := config.ParseLogLevel(f.logLevel); f.logLevel != "" && !ok {
		err := fmt.Errorf("-log-level: %q is not a log level (expected debug, info, warn or error)", f.logLevel)
		fmt.Fprintln(stderr, "bridge:", err)
		return nil, err
	}
	return &f, nil
}

// loadConfig reads path, or the embedded defaults when path is "".
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

// printVersion writes what `bridge -version` prints: the release, the
// commit it was built from, and the Go and FFmpeg it runs with.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "bridge %s\ncommit: %s\ngo: %s %s/%s\nffmpeg: %s\n",
		version, commit(), runtime.Version(), runtime.GOOS, runtime.GOARCH, transcode.FFmpegVersion())
}

// commit is the VCS revision the Go toolchain stamped into the binary,
// "+modified" when the tree had uncommitted changes; "unknown" for a build
// outside a checkout (or with -buildvcs=false).
func commit() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, modified := "unknown", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified {
		rev += "+modified"
	}
	return rev
}

// check validates the config file at path for `bridge -check`: 0 when
// valid, 1 with every problem (file:line: key: what) on stderr, 2 without
// a file to check.
func check(path string, stdout, stderr io.Writer) int {
	if path == "" {
		fmt.Fprintln(stderr, "bridge -check: no file to check (expected -check -config FILE)")
		return 2
	}
	if _, err := config.Load(path); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: valid\n", path)
	return 0
}

// Health check bounds: Docker runs the check every interval and counts a
// check that outlasts its own timeout (30 s by default) as failed; 5 s
// answers well before that, and a bridge that takes longer to answer is
// not healthy.
const (
	healthcheckTimeout = 5 * time.Second
	// healthcheckBody is how much of a failing answer is printed: the
	// reason /readyz gives fits, a misdirected page does not flood.
	healthcheckBody = 512
)

// healthcheck GETs url for `bridge -healthcheck` (the runtime image has no
// curl): 0 on a 2xx answer within healthcheckTimeout, 1 otherwise, with
// the status and the start of the body, or the error, on stderr.
func healthcheck(target string, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), healthcheckTimeout)
	defer cancel()
	shown := rawurl.Redact(target)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		fmt.Fprintf(stderr, "bridge -healthcheck: %s: %v\n", shown, err)
		return 1
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var ue *url.Error // says the URL again, unredacted
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s", healthcheckTimeout)
		}
		fmt.Fprintf(stderr, "bridge -healthcheck: GET %s: %v\n", shown, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, healthcheckBody))
	text := strings.TrimSpace(string(body))
	if resp.StatusCode/100 != 2 {
		fmt.Fprintf(stderr, "bridge -healthcheck: GET %s: %s: %s\n", shown, resp.Status, text)
		return 1
	}
	fmt.Fprintf(stdout, "%s %s\n", resp.Status, text)
	return 0
}
