package daemon

import (
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/bastiond/bastiond/daemon/config"
)

// newLogger builds the operational logger: JSON under systemd (journald
// keeps the fields) or whenever stderr is not a terminal, coloured console
// text on a terminal. The level can be changed on reload through the
// returned AtomicLevel.
func newLogger(l config.Logging) (*zap.Logger, zap.AtomicLevel, error) {
	level, err := zap.ParseAtomicLevel(l.Level)
	if err != nil {
		return nil, level, err
	}
	tty := os.Getenv("JOURNAL_STREAM") == "" && isTerminal(os.Stderr)
	format := l.Format
	if format == "auto" {
		format = "json"
		if tty {
			format = "console"
		}
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.TimeKey = "time"
	var encoder zapcore.Encoder
	if format == "console" {
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		if tty {
			enc.EncodeLevel = zapcore.CapitalColorLevelEncoder
		}
		encoder = zapcore.NewConsoleEncoder(enc)
	} else {
		encoder = zapcore.NewJSONEncoder(enc)
	}
	core := zapcore.NewCore(encoder, zapcore.Lock(os.Stderr), level)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(os.Stderr))), level, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
