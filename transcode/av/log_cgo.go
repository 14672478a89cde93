//go:build cgo

package av

/*
#include <stdarg.h>
#include <libavutil/log.h>

// Declared by cgo in _cgo_export.h from the //export below.
extern void bavLog(int level, char *line);

// bav_log is FFmpeg's log callback: it drops what FFmpeg's level filters
// out (FFmpeg calls the callback for every level; its default callback
// filters itself), formats the line as FFmpeg's default callback would
// ("[libopus @ 0x...] message") and hands it to Go. print_prefix is per
// thread, as the default callback's is per process: a message logged in
// parts gets the prefix once, at its start.
static inline void bav_log(void *avcl, int level, const char *fmt, va_list vl) {
	static _Thread_local int print_prefix = 1;
	char line[1024];
	if (level > av_log_get_level()) return;
	av_log_format_line2(avcl, level, fmt, vl, line, sizeof line, &print_prefix);
	bavLog(level, line);
}

static inline void bav_log_install(int on) { av_log_set_callback(on ? bav_log : av_log_default_callback); }
*/
import "C"

import "log/slog"

// SetLogger sends FFmpeg's log to log from now on, instead of stderr:
// errors at ERROR, warnings at WARN (known-benign ones at DEBUG), FFmpeg's
// info and chattier levels at DEBUG, repeats of one kind rate-limited. It
// sets FFmpeg's level to LogInfo (what the mapping can use); SetLogLevel
// after it still quiets FFmpeg. FFmpeg's log is process-wide: call it once,
// from the process owner. SetLogger(nil) gives FFmpeg back its own
// callback (stderr).
func SetLogger(log *slog.Logger) {
	if log == nil {
		C.bav_log_install(0)
		logTo.Store(nil)
		return
	}
	logTo.Store(&ffmpegLog{log: log})
	C.av_log_set_level(C.AV_LOG_INFO)
	C.bav_log_install(1)
}

//export bavLog
func bavLog(level C.int, line *C.char) { logLine(LogLevel(level), C.GoString(line)) }
