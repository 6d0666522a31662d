package lb

import "errors"

// Sentinel errors; the gRPC server maps each to a status code.
var (
	// ErrInvalid: a service, frontend or batch is malformed (InvalidArgument).
	ErrInvalid = errors.New("invalid service")
	// ErrConflict: an expected revision did not match (Aborted).
	ErrConflict = errors.New("revision mismatch")
	// ErrMapFull: the maps cannot hold the result (ResourceExhausted).
	ErrMapFull = errors.New("service map full")
	// ErrNotReady: the services are not restored from the maps yet
	// (Unavailable).
	ErrNotReady = errors.New("services not restored yet")
	// ErrUnavailable: the datapath has no load balancer maps
	// (FailedPrecondition).
	ErrUnavailable = errors.New("service load balancing unavailable on this node")
)
