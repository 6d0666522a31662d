// Package errinfo holds the google.rpc.ErrorInfo reasons axon-ipam attaches
// to its errors, so that callers tell one cause of a code from another (an
// exhausted pool from gRPC's own RESOURCE_EXHAUSTED for an oversized
// message) by a structured detail rather than by the code or message text.
// The reasons are part of the IPAM contract (proto/axon/ipam/v1alpha1); the
// package is part of IPAM's client library, which other services may import.
package errinfo

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// Domain is the ErrorInfo domain of every reason below.
const Domain = "ipam.axon-cni.io"

// ReasonPoolExhausted: a pool, or a node's pod CIDR, has no free address or
// block (RESOURCE_EXHAUSTED).
const ReasonPoolExhausted = "POOL_EXHAUSTED"

// With returns st with an ErrorInfo detail of reason in Domain; st itself
// if reason is empty.
func With(st *status.Status, reason string) *status.Status {
	if reason == "" {
		return st
	}
	with, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: Domain})
	if err != nil {
		// Only an OK status or an unmarshalable detail fail; neither
		// happens here, and the status without its detail is still right.
		return st
	}
	return with
}

// Reason returns the reason of err's ErrorInfo detail in Domain, or "".
func Reason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return info.GetReason()
		}
	}
	return ""
}
