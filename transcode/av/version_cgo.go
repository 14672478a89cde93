//go:build cgo

package av

/*
#cgo pkg-config: libavcodec libavutil
#include <libavcodec/avcodec.h>
#include <libavutil/avutil.h>
*/
import "C"

import "fmt"

// Version names the FFmpeg linked in: its release (av_version_info) and
// the libavcodec version the process runs with (which may differ from the
// one it was built against when the shared library was upgraded).
func Version() string {
	v := uint(C.avcodec_version())
	return fmt.Sprintf("%s (libavcodec %d.%d.%d)", C.GoString(C.av_version_info()), v>>16, v>>8&0xff, v&0xff)
}
