package testkit

import "path/filepath"

// FixturesDir holds the shared media fixtures (see its README); the repo is
// expected at /work/main beside /work/shared. The path is relative to the
// directory of a package two levels below the module root (egress/rtmp,
// ingest/srt, cmd/bridge, ...), where `go test` runs that package's tests.
const FixturesDir = "../../../shared/media"

// Fixture returns the path of the named fixture.
func Fixture(name string) string { return filepath.Join(FixturesDir, name) }
