package embedetcd

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"

	"go.uber.org/zap/zapcore"
)

// LevelPanic is the slog level of etcd's DPanic, Panic and Fatal entries,
// above slog.LevelError so that a handler can tell them apart: a panic
// follows them.
const LevelPanic = slog.LevelError + 4

// ZapCore returns a zap core that sends etcd's log entries at level and
// above to log, so that etcd logs like the rest of the process. While mute
// is set, entries below DPanic are dropped: a stopping member reports its
// own closing listeners and connections as errors. mute may be nil.
func ZapCore(log *slog.Logger, level zapcore.Level, mute *atomic.Bool) zapcore.Core {
	if mute == nil {
		mute = new(atomic.Bool)
	}
	return &slogCore{log: log, level: level, mute: mute}
}

type slogCore struct {
	log    *slog.Logger
	level  zapcore.Level
	fields []zapcore.Field
	mute   *atomic.Bool
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	return l >= zapcore.DPanicLevel || l >= c.level && !c.mute.Load()
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	clone := *c
	clone.fields = append(slices.Clip(c.fields), fields...)
	return &clone
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]any, 0, 2*len(enc.Fields))
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		attrs = append(attrs, k, enc.Fields[k])
	}
	c.log.Log(context.Background(), slogLevel(e.Level), e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l >= zapcore.DPanicLevel:
		return LevelPanic
	case l == zapcore.ErrorLevel:
		return slog.LevelError
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}
