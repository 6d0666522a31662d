package datapath

// Regenerate with `go generate ./...` from bpf/ (or `make generate`). The
// output (pod_bpfel.*, overlay_bpfel.*, underlay_bpfel.*, sock_bpfel.*) is committed; CI
// fails if regenerating changes it. See bpf/probe/gen.go for why the
// invocation looks like this (pinned bpf2go, GOWORK=off, reproducible
// objects).
//
// One object per attach point, each from its own source in bpf/src. All
// declare the same maps (axon/maps.h), so the Go types of the shared
// layout (bpf/include/axon/datapath.h) would be generated once per object:
// only the pod object exports them (hence their pod prefix), the others
// are built with -no-global-types. The sock object's own maps
// (axon/sock.h) have their Go types written by hand in sock.go. Map keys and values are exported
// by bpf2go by itself; -type adds the enums (-type axon_config would be
// ambiguous: it names both the struct and the map).
//
//go:generate env GOWORK=off go tool -modfile=../../tools/go.mod bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type axon_mode -type axon_stat -type axon_lb_scope -type axon_ct_dir pod ../src/pod.c -- -I../include -I/usr/include/x86_64-linux-gnu
//go:generate env GOWORK=off go tool -modfile=../../tools/go.mod bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -no-global-types overlay ../src/overlay.c -- -I../include -I/usr/include/x86_64-linux-gnu
//go:generate env GOWORK=off go tool -modfile=../../tools/go.mod bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -no-global-types underlay ../src/underlay.c -- -I../include -I/usr/include/x86_64-linux-gnu
//go:generate env GOWORK=off go tool -modfile=../../tools/go.mod bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -no-global-types sock ../src/sock.c -- -I../include -I/usr/include/x86_64-linux-gnu
