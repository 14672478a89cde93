//go:build !cgo

package av

// Version says that no FFmpeg is linked in this build.
func Version() string { return "none (built without cgo)" }
