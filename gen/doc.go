// Package gen holds the Go code generated from Axon's protobuf contracts in
// proto/. Nothing here is written by hand: run `make generate`.
package gen
