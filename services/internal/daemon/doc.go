// Package daemon is the bootstrap every Axon service binary runs with.
//
// It owns what is the same in every service: flags with environment
// overrides, structured logging, the gRPC server (health, reflection,
// logging/recovery/metrics interceptors, a TCP listener that requires mTLS
// unless --insecure asks for plaintext, a unix socket listener of mode
// 0600), the Prometheus metrics endpoint (plaintext HTTP), dependency health
// checks and graceful shutdown, and [ClientTLS], the flags with which one
// service dials another. A service's main registers its own flags and
// gRPC services through [Spec] and calls [Main].
package daemon
