// Package testkit holds helpers shared by the bridge's tests: paths of the
// shared media fixtures, goroutine-safe log capture, running ffmpeg and
// ffprobe, tone and A/V-sync analysis of decoded audio, FLV fixtures read
// into hub units, and goroutine-leak checks.
//
// It is a normal package so that tests in several packages can import it,
// but it is meant only for _test.go files: production code must not import
// it. To stay importable from the tests of any package, it must not import
// the bridge's protocol packages (ingest/..., egress/..., cmd/...); it
// depends only on media, access (the adapters' small contract), transcode
// and transcode/av.
package testkit
