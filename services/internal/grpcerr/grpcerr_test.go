package grpcerr

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestTable(t *testing.T) {
	errMissing := errors.New("missing")
	errBusy := errors.New("busy")
	table := Table{
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errMissing, codes.NotFound},
		{errBusy, codes.Unavailable},
	}
	upstream := status.Error(codes.ResourceExhausted, "pool \"p\" is full")
	for _, tc := range []struct {
		name    string
		err     error
		code    codes.Code
		message string
	}{
		{"nil", nil, codes.OK, ""},
		{"sentinel", fmt.Errorf("endpoint c/eth0: %w", errMissing), codes.NotFound, "endpoint c/eth0: missing"},
		{"first entry wins", fmt.Errorf("%w: %w", errBusy, context.DeadlineExceeded), codes.DeadlineExceeded, "busy: context deadline exceeded"},
		{"status of another service kept", upstream, codes.ResourceExhausted, "pool \"p\" is full"},
		{"wrapped status keeps its code", fmt.Errorf("allocate: %w", upstream), codes.ResourceExhausted, "allocate: rpc error: code = ResourceExhausted desc = pool \"p\" is full"},
		{"anything else", errors.New("disk on fire"), codes.Internal, "disk on fire"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := table.Code(tc.err); got != tc.code {
				t.Errorf("Code = %v, want %v", got, tc.code)
			}
			err := table.Status(tc.err)
			if tc.err == nil {
				if err != nil {
					t.Errorf("Status(nil) = %v", err)
				}
				return
			}
			st, ok := status.FromError(err)
			if !ok || st.Code() != tc.code || st.Message() != tc.message {
				t.Errorf("Status = %v, want code %v message %q", err, tc.code, tc.message)
			}
		})
	}
}
