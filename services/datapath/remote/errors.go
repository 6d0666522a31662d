package remote

import "errors"

// Sentinel errors; the gRPC server maps each to a status code.
var (
	// ErrInvalid: the remote node is malformed (InvalidArgument).
	ErrInvalid = errors.New("invalid remote node")
	// ErrNotReady: the node is not set up yet (Unavailable).
	ErrNotReady = errors.New("node not set up yet")
	// ErrConflict: an expected revision did not match (Aborted).
	ErrConflict = errors.New("revision mismatch")
)
