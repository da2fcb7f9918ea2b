package etcdmember

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger gives etcd, which logs through zap, a logger that feeds haagent's slog
// handler, so that one process writes one log format.
// Once quiet is set (haagent is stopping etcd on purpose), etcd's complaints about its
// own closed listeners are demoted to debug: they are expected and would only alarm.
func newZapLogger(lg *slog.Logger, min slog.Level, quiet *atomic.Bool) *zap.Logger {
	return zap.New(&slogCore{lg: lg.With("component", "etcd"), min: min, quiet: quiet})
}

// slogCore is a zapcore.Core that re-emits each entry as an slog record.
type slogCore struct {
	lg     *slog.Logger
	min    slog.Level
	quiet  *atomic.Bool
	fields []zapcore.Field
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return slogLevel(l) >= c.min }

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	return &slogCore{lg: c.lg, min: c.min, quiet: c.quiet, fields: append(append([]zapcore.Field{}, c.fields...), fs...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fs {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	lvl := slogLevel(e.Level)
	if c.quiet != nil && c.quiet.Load() {
		lvl = min(lvl, slog.LevelDebug)
	}
	c.lg.LogAttrs(context.Background(), lvl, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}
