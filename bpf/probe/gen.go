package probe

// Regenerate with `go generate ./...` from bpf/ (or `make generate`). The
// output (probe_bpfel.go, probe_bpfel.o) is committed; CI fails if
// regenerating changes it.
//
//   - bpf2go is pinned in tools/go.mod. GOWORK=off because `go tool -modfile`
//     refuses to run in workspace mode.
//   - bpf2go compiles with -fdebug-prefix-map and -fdebug-compilation-dir and
//     strips DWARF (keeping BTF), so the object holds no machine paths and is
//     byte-identical wherever it is built.
//   - /usr/include/x86_64-linux-gnu provides <asm/types.h> on Debian; the
//     object is the same for every little-endian target.
//
//go:generate env GOWORK=off go tool -modfile=../../tools/go.mod bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type counter probe ../src/probe.c -- -I../include -I/usr/include/x86_64-linux-gnu
