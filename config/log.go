package config

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// Logger builds the zerolog logger the settings ask for: pretty on a
// terminal, JSON lines otherwise, on standard error.
func (c *Config) Logger(program string) (zerolog.Logger, error) {
	return NewLogger(os.Stderr, program, c.LogLevel, c.LogFormat)
}

// NewLogger builds a logger writing to w.
func NewLogger(w io.Writer, program, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("log level %q: want trace, debug, info, warn or error", level)
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	out := w
	switch format {
	case "pretty":
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	case "json":
	case "auto", "":
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			out = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
		}
	default:
		return zerolog.Nop(), fmt.Errorf("log format %q: want auto, pretty or json", format)
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Str("program", program).Logger(), nil
}
