// Package maglev builds the lookup tables of Maglev consistent hashing
// (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
// Balancer", NSDI 2016), with which the service load balancer picks a
// backend for flows to external frontends (NodePort, LoadBalancer addresses,
// externalIPs). It is pure Go: the caller writes the table into a map that
// the datapath reads.
//
// A table has m entries, m prime, each the index of a backend. The datapath
// hashes a new flow (its addresses, ports and protocol) to an entry and sends
// the flow to that entry's backend. Two properties make it the choice for
// traffic from outside the cluster:
//
//   - Every node builds the same table from the same backends, in whatever
//     order it learned them. A flow that an upstream router moves from one
//     node to another (ECMP rehashing after a node or link change) reaches
//     the same backend there, although the new node has no connection
//     tracking entry for it.
//   - A backend change moves few flows: removing a backend reassigns its own
//     entries and only a small fraction of the others; adding one takes
//     about its share from the rest. A hash modulo the backend count would
//     move nearly every flow. Measured on tables of DefaultSize: removing one
//     of 10 backends moves its 10% of the entries and under 1% of the
//     others; one of 100, its 1% and under 1.5% of the others. The fraction
//     grows with n/m: the price of even shares.
//
// Filling follows the paper. Each backend has a permutation of the entries,
// (offset + j·skip) mod m for j = 0, 1, ..., and the backends take turns; in
// its turn a backend claims the first entry of its permutation not claimed
// yet, until every entry is. Weights set how often a backend takes a turn:
// with wmax the largest weight, a backend of weight w takes its k-th turn in
// round ⌈k·wmax/w⌉, so it ends up with about w/W of the entries (W the sum
// of the weights) and may get none if that is below one entry. Within a
// round backends go by weight, heaviest first, then in the order of their
// keys (bytewise). With equal weights every backend takes one turn per
// round, which is the paper's algorithm, and each of n backends gets ⌊m/n⌋
// or ⌈m/n⌉ entries.
//
// The hash is fixed, so tables agree across nodes, processes and releases;
// it never uses Go's randomized hashes. For a backend of key k, with
// h = SHA-256(k):
//
//	offset = uint64(h[0:8], big endian) mod m
//	skip   = uint64(h[8:16], big endian) mod (m-1) + 1
//
// As m is prime, every skip is coprime with it and each permutation visits
// every entry once. Changing the hash or the order of turns changes every
// table, so nodes of two releases would disagree during a rolling upgrade:
// treat both as part of the wire format (TestTableGolden pins them).
package maglev

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Table sizes. A table should be much larger than its backend count (the
// paper suggests m > 100·n) for entries to be shared evenly and for a
// backend change to move few other flows.
const (
	// DefaultSize is the table size to use unless configured: the largest
	// prime below 2^14, good for up to about 160 backends per service.
	DefaultSize = 16381
	// MinSize is the smallest table size ValidSize accepts.
	MinSize = 251
	// MaxSize is the largest table size ValidSize accepts (2^17 − 1, a
	// prime): a table of it holds 256 KiB of entries per service.
	MaxSize = 131071
)

// MaxBackends is the most backends a table can index: entries are uint16.
const MaxBackends = math.MaxUint16 + 1

// Errors of ValidSize and Table, wrapped with the offending value.
var (
	// ErrInvalidSize means the table size is not a prime in
	// [MinSize, MaxSize].
	ErrInvalidSize = errors.New("invalid Maglev table size")
	// ErrNoBackends means Table was given no backends.
	ErrNoBackends = errors.New("no backends")
	// ErrTooManyBackends means more backends than the table has entries or
	// than MaxBackends.
	ErrTooManyBackends = errors.New("too many backends")
	// ErrEmptyKey means a backend has an empty key.
	ErrEmptyKey = errors.New("empty backend key")
	// ErrDuplicateKey means two backends have the same key.
	ErrDuplicateKey = errors.New("duplicate backend key")
)

// Backend is one backend of a table.
type Backend struct {
	// Key identifies the backend the same way on every node, such as
	// "10.0.2.17:8080/TCP": it places the backend's entries. It must not
	// depend on anything local (an index, a map ID), or nodes would build
	// different tables.
	Key string
	// Weight is the backend's share relative to the others; 0 means 1.
	Weight uint32
}

// ValidSize returns nil if m is a valid table size: a prime in
// [MinSize, MaxSize]. A prime makes every skip of the permutations coprime
// with m.
func ValidSize(m uint32) error {
	if m < MinSize || m > MaxSize {
		return fmt.Errorf("%w: %d is outside [%d, %d]", ErrInvalidSize, m, MinSize, MaxSize)
	}
	for d := uint32(2); d*d <= m; d++ {
		if m%d == 0 {
			return fmt.Errorf("%w: %d is not prime (divisible by %d)", ErrInvalidSize, m, d)
		}
	}
	return nil
}

// Table returns the Maglev lookup table of size m for backends: m entries,
// each an index into backends. The same set of backends gives the same
// table, whatever its order, in every process (entries name the same keys;
// the indices are those of the slice given).
func Table(backends []Backend, m uint32) ([]uint16, error) {
	if err := ValidSize(m); err != nil {
		return nil, err
	}
	n := len(backends)
	switch {
	case n == 0:
		return nil, ErrNoBackends
	case n > MaxBackends || n > int(m):
		return nil, fmt.Errorf("%w: %d backends for a table of %d entries (at most %d backends)",
			ErrTooManyBackends, n, m, min(int(m), MaxBackends))
	}
	// The order of turns comes from the keys and weights alone, so the
	// table does not depend on the order of the slice.
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(backends[a].Key, backends[b].Key) })
	for j, i := range order {
		if backends[i].Key == "" {
			return nil, fmt.Errorf("backend %d: %w", i, ErrEmptyKey)
		}
		if j > 0 && backends[order[j-1]].Key == backends[i].Key {
			return nil, fmt.Errorf("backends %d and %d: %w %q", order[j-1], i, ErrDuplicateKey, backends[i].Key)
		}
	}
	weight := func(i int) uint64 { return uint64(max(backends[i].Weight, 1)) }
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(weight(b), weight(a)) })

	size := uint64(m)
	fillers := make([]filler, n)
	for j, i := range order {
		h := sha256.Sum256([]byte(backends[i].Key))
		fillers[j] = filler{
			next:  binary.BigEndian.Uint64(h[0:8]) % size,
			skip:  binary.BigEndian.Uint64(h[8:16])%(size-1) + 1,
			index: uint16(i), // i < n ≤ MaxBackends
		}
	}
	// Backends of one weight take their turns in the same rounds: the
	// queue holds one class per weight, not one entry per backend.
	maxWeight := weight(order[0])
	var turns turnQueue
	for j := 0; j < n; {
		c := class{weight: weight(order[j]), first: j}
		for j < n && weight(order[j]) == c.weight {
			j++
		}
		c.end = j
		c.round = ceilDiv(maxWeight, c.weight)
		turns = append(turns, c)
	}
	turns.init()

	table := make([]uint16, m)
	claimed := make([]bool, m)
	filled := 0
	for {
		c := &turns[0]
		for j := c.first; j < c.end; j++ {
			// The entries left unclaimed are in every permutation, so the
			// search ends.
			f := &fillers[j]
			e := f.next
			for claimed[e] {
				e = f.after(e, size)
			}
			table[e] = f.index
			claimed[e] = true
			f.next = f.after(e, size)
			if filled++; filled == int(m) {
				return table, nil
			}
		}
		c.taken++
		c.round = ceilDiv((c.taken+1)*maxWeight, c.weight) // < 2^17 · 2^32: no overflow
		turns.fixHead()
	}
}

// filler is a backend while its table is filled.
type filler struct {
	next  uint64 // the next entry of its permutation to try
	skip  uint64 // the step of its permutation
	index uint16 // its index in the caller's slice
}

// after returns the entry after e in f's permutation.
func (f *filler) after(e, size uint64) uint64 {
	e += f.skip
	if e >= size {
		e -= size
	}
	return e
}

func ceilDiv(a, b uint64) uint64 {
	return (a + b - 1) / b
}

// class is the backends of one weight: fillers[first:end], in key order.
type class struct {
	weight uint64 // 1 or more
	taken  uint64 // turns each of them has taken
	round  uint64 // the round of their next turn
	first  int
	end    int
}

// turnQueue is a binary min-heap of classes ordered by their next turn: by
// round, then heaviest first. Its length never changes: a class taking its
// turn stays at the head with a later round and sinks to its place.
type turnQueue []class

// turnOrder compares classes by their next turn. Classes are built from
// backends sorted by weight, heaviest first: a lower first index is a
// heavier class.
func turnOrder(a, b *class) int {
	if c := cmp.Compare(a.round, b.round); c != 0 {
		return c
	}
	return cmp.Compare(a.first, b.first)
}

// init orders the queue; a sorted slice is a heap.
func (q turnQueue) init() {
	slices.SortFunc(q, func(a, b class) int { return turnOrder(&a, &b) })
}

// fixHead moves the head, whose round just grew, down to its place.
func (q turnQueue) fixHead() {
	i := 0
	for {
		child, right := 2*i+1, 2*i+2
		if child >= len(q) {
			return
		}
		if right < len(q) && turnOrder(&q[right], &q[child]) < 0 {
			child = right
		}
		if turnOrder(&q[child], &q[i]) >= 0 {
			return
		}
		q[i], q[child] = q[child], q[i]
		i = child
	}
}
