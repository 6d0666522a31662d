package datapath

// Regenerate with `go generate ./...` from bpf/ (or `make generate`). The
// output (datapath_bpfel.go, datapath_bpfel.o) is committed; CI fails if
// regenerating changes it. See bpf/probe/gen.go for why the invocation looks
// like this (pinned bpf2go, GOWORK=off, reproducible objects).
//
// The structs of the shared layout (bpf/include/axon/datapath.h) are map keys
// and values, which bpf2go exports by itself; -type adds the enums (-type
// axon_config would be ambiguous: it names both the struct and the map).
//
//go:generate env GOWORK=off go tool -modfile=../../tools/go.mod bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type axon_mode -type axon_stat datapath ../src/datapath.c -- -I../include -I/usr/include/x86_64-linux-gnu
