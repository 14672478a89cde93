package certs

import (
	"context"
	stdlog "log"
	"log/slog"
	"strings"
)

// ServerErrorLog returns the ErrorLog of an http.Server that serves TLS.
// net/http reports every failed TLS handshake there ("http: TLS handshake
// error from ..."): port scanners, clients that do not trust the
// certificate, certmagic's own probe of the port. On a public port that
// is the normal state of things, so those lines go to debug; the rest
// stay at warn, as slog.NewLogLogger(h, slog.LevelWarn) would log them.
func ServerErrorLog(log *slog.Logger) *stdlog.Logger {
	return stdlog.New(errorLog{log}, "", 0)
}

type errorLog struct{ log *slog.Logger }

func (e errorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	level := slog.LevelWarn
	if strings.HasPrefix(msg, "http: TLS handshake error") {
		level = slog.LevelDebug
	}
	e.log.Log(context.Background(), level, msg)
	return len(p), nil
}
