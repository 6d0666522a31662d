package embedetcd

import (
	"bytes"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestZapCore(t *testing.T) {
	tests := []struct {
		name  string
		muted bool
		log   func(*zap.Logger)
		want  string // a substring of the output; empty: no output
	}{
		{name: "error with fields", log: func(l *zap.Logger) { l.Error("boom", zap.String("b", "2"), zap.Int("a", 1)) }, want: "level=ERROR msg=boom a=1 b=2"},
		{name: "below the level", log: func(l *zap.Logger) { l.Warn("meh") }},
		{name: "muted error", muted: true, log: func(l *zap.Logger) { l.Error("closing") }},
		{name: "muted DPanic still logged", muted: true, log: func(l *zap.Logger) { l.DPanic("bad") }, want: "level=ERROR+4 msg=bad"},
		{name: "fields from With", log: func(l *zap.Logger) { l.With(zap.String("member", "m1")).Error("x") }, want: "msg=x member=m1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			mute := new(atomic.Bool)
			mute.Store(tc.muted)
			h := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
			tc.log(zap.New(ZapCore(slog.New(h), zapcore.ErrorLevel, mute)))
			got := buf.String()
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("logged %q, want %q", got, tc.want)
			}
		})
	}
}
