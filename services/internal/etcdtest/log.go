package etcdtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/axon-cni/axon/services/internal/embedetcd"
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

// testHandler is the slog handler behind a member's etcd log (through
// embedetcd.ZapCore): lines go to the test's log, panics to stderr.
type testHandler struct {
	log    *testLog
	member string
	attrs  []slog.Attr
}

func (h *testHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *testHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clone := *h
	clone.attrs = append(slices.Clip(h.attrs), attrs...)
	return &clone
}

// WithGroup is not needed: the zap adapter passes flat attributes.
func (h *testHandler) WithGroup(string) slog.Handler { return h }

func (h *testHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	var errText string
	add := func(a slog.Attr) bool {
		if a.Key == "error" {
			errText = a.Value.String()
		}
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	if r.Message == "failed to update storage version" && strings.Contains(errText, "missing term information") {
		// A new member's storage version monitor runs before the
		// first raft term is on disk; it retries, and succeeds.
		return nil
	}
	if r.Level >= embedetcd.LevelPanic {
		// A panic follows, and the test's log would be lost with it.
		fmt.Fprintf(os.Stderr, "etcd %s %s: %s%s\n", h.member, r.Level, r.Message, b.String())
		return nil
	}
	h.log.logf("etcd %s %s: %s%s", h.member, r.Level, r.Message, b.String())
	return nil
}
