module github.com/wishbridge/bridge

go 1.26

require (
	github.com/bluenviron/mediacommon/v2 v2.9.3
	github.com/pion/rtp v1.10.6
)

require github.com/pion/randutil v0.1.0 // indirect
