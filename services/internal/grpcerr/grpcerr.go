// Package grpcerr maps a service's sentinel errors to gRPC status codes
// through one table, so each gRPC handler validates, delegates and returns
// the domain's error through [Table.Status].
package grpcerr

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Entry maps errors that wrap Err (errors.Is) to Code.
type Entry struct {
	Err  error
	Code codes.Code
}

// Table is a service's errors and their codes; the first entry an error
// wraps decides its code, so more specific entries come first.
type Table []Entry

// Code returns the code of err: OK for nil, the first matching entry's,
// the code of an error that already carries a gRPC status (one returned by
// another service, whose code the caller should see), else Internal.
func (t Table) Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	for _, e := range t {
		if errors.Is(err, e.Err) {
			return e.Code
		}
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return codes.Internal
}

// Status returns err as a gRPC status error with [Table.Code]'s code; nil
// for nil. An error that already carries a status is returned as that
// status, keeping its message.
func (t Table) Status(err error) error {
	if err == nil {
		return nil
	}
	code := t.Code(err)
	if st, ok := status.FromError(err); ok && st.Code() == code {
		return st.Err()
	}
	return status.Error(code, err.Error())
}
