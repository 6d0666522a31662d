package errinfo

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestReason(t *testing.T) {
	exhausted := With(status.New(codes.ResourceExhausted, "pool full"), ReasonPoolExhausted).Err()
	foreign, err := status.New(codes.ResourceExhausted, "quota").WithDetails(&errdetails.ErrorInfo{Reason: ReasonPoolExhausted, Domain: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"with reason", exhausted, ReasonPoolExhausted},
		{"wrapped", fmt.Errorf("allocate: %w", exhausted), ReasonPoolExhausted},
		{"code alone", status.Error(codes.ResourceExhausted, "message too large"), ""},
		{"empty reason adds nothing", With(status.New(codes.ResourceExhausted, "x"), "").Err(), ""},
		{"another domain", foreign.Err(), ""},
		{"not a status", errors.New("plain"), ""},
		{"nil", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Reason(tc.err); got != tc.want {
				t.Errorf("Reason = %q, want %q", got, tc.want)
			}
		})
	}
}
