package endpoint

import "errors"

// Sentinel errors; the gRPC server maps each to a status code. Failures of
// IPAM keep IPAM's status (and code); any other error is internal.
var (
	// ErrInvalid: the request is malformed (InvalidArgument).
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound: the attachment has no endpoint (NotFound).
	ErrNotFound = errors.New("no such endpoint")
	// ErrExists: the attachment is wired differently, or its interface
	// name is taken in the pod (AlreadyExists).
	ErrExists = errors.New("attachment exists")
	// ErrNetNS: netns_path is missing, no network namespace, or the
	// node's own (FailedPrecondition).
	ErrNetNS = errors.New("netns_path unusable")
	// ErrMapFull: an eBPF map has no room for the endpoint
	// (ResourceExhausted).
	ErrMapFull = errors.New("eBPF map full")
	// ErrNotReady: the node is not set up yet (Unavailable).
	ErrNotReady = errors.New("node not ready")
)
