package etcdtest

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/zap/zapcore"
)

// testLog writes to t.Log until the test ends; t.Log after that panics,
// and etcd's goroutines may still log while they stop.
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (l *testLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Logf(format, args...)
	}
}

// close drops all later output; it runs in t.Cleanup after the members stop.
func (l *testLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
}

// testCore is a zap core that sends a member's errors to a testLog, except
// while the member stops: then errors about closed connections are normal.
type testCore struct {
	log    *testLog
	member string
	quiet  *atomic.Bool
	fields []zapcore.Field
}

func (c *testCore) Enabled(l zapcore.Level) bool {
	return l >= zapcore.DPanicLevel || l >= zapcore.ErrorLevel && !c.quiet.Load()
}

func (c *testCore) With(fields []zapcore.Field) zapcore.Core {
	clone := *c
	clone.fields = append(slices.Clip(c.fields), fields...)
	return &clone
}

func (c *testCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *testCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		fmt.Fprintf(&b, " %s=%v", k, enc.Fields[k])
	}
	if e.Message == "failed to update storage version" && strings.Contains(fmt.Sprint(enc.Fields["error"]), "missing term information") {
		// A new member's storage version monitor runs before the
		// first raft term is on disk; it retries, and succeeds.
		return nil
	}
	if e.Level >= zapcore.DPanicLevel {
		// A panic follows, and the test's log would be lost with it.
		fmt.Fprintf(os.Stderr, "etcd %s %s: %s%s\n", c.member, e.Level, e.Message, b.String())
		return nil
	}
	c.log.logf("etcd %s %s: %s%s", c.member, e.Level, e.Message, b.String())
	return nil
}

func (c *testCore) Sync() error { return nil }
