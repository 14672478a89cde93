package transcode

import "github.com/wishbridge/bridge/transcode/av"

// FFmpegVersion names the FFmpeg this build transcodes with, for
// `bridge -version`; "none (built without cgo)" in a build without it.
func FFmpegVersion() string { return av.Version() }
