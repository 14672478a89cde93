package testkit

import (
	"path/filepath"
	"runtime"
)

// FixturesDir holds the shared media fixtures (see its README); the repo is
// expected at /work/main beside /work/shared. It is found from this file's
// own location, so tests of a package at any depth (node, egress/rtmp,
// ...) find it whatever directory `go test` runs them in.
var FixturesDir = fixturesDir()

func fixturesDir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "../../../shared/media" // from a package two levels below the root
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "shared", "media")
}

// Fixture returns the path of the named fixture.
func Fixture(name string) string { return filepath.Join(FixturesDir, name) }
