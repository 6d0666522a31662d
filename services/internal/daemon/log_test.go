package daemon

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
)

// An RPC's log line never carries a long error or field whole.
func TestInterceptorLoggerBoundsFields(t *testing.T) {
	var out bytes.Buffer
	l := interceptorLogger(slog.New(slog.NewTextHandler(&out, nil)))
	huge := strings.Repeat("x", 1_400_000)
	l.Log(t.Context(), logging.LevelWarn, "finished call", "grpc.error", "rpc error: "+huge, "err", errors.New(huge), "grpc.code", "InvalidArgument")
	if out.Len() > 4*maxLogField {
		t.Errorf("log line is %d bytes long", out.Len())
	}
	if !strings.Contains(out.String(), "InvalidArgument") || !strings.Contains(out.String(), "(1400000 bytes)") {
		t.Errorf("log line lost its short fields or the length of the long ones: %.300s", out.String())
	}
}
