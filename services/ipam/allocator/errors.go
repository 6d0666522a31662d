package allocator

import "errors"

// Sentinel errors; every error the allocator returns wraps exactly one, and
// the gRPC server maps each to a status code.
var (
	// ErrInvalid: the request is malformed (InvalidArgument).
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound: a named object does not exist (NotFound).
	ErrNotFound = errors.New("not found")
	// ErrExists: the object exists with a different spec, or an address is
	// taken by someone else (AlreadyExists).
	ErrExists = errors.New("already exists")
	// ErrPrecondition: the request conflicts with stored state (FailedPrecondition).
	ErrPrecondition = errors.New("failed precondition")
	// ErrExhausted: no free address or block (ResourceExhausted).
	ErrExhausted = errors.New("exhausted")
	// ErrConflict: an expected revision did not match, or contention did not
	// settle within the retry bound (Aborted).
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: etcd could not be reached (Unavailable).
	ErrUnavailable = errors.New("store unavailable")
)
