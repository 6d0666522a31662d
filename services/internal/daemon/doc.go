// Package daemon is the bootstrap every Axon service binary runs with.
//
// It owns what is the same in every service: flags with environment
// overrides, structured logging, the gRPC server (health, reflection,
// logging/recovery/metrics interceptors, optional TLS or mTLS, TCP and unix
// socket listeners), the Prometheus metrics endpoint, dependency health
// checks and graceful shutdown, and [ClientTLS], the flags with which one
// service dials another. A service's main registers its own flags and
// gRPC services through [Spec] and calls [Main].
package daemon
