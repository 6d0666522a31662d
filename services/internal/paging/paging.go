// Package paging turns the page_size and page_token of Axon's list RPCs
// into a limit and a resume key, and back: 0 means 100 items, at most 1000.
// A Budget also ends a page early by its size, so that no page_size makes a
// response too large for gRPC.
//
// A token is opaque to clients: base64url(check || last key), where check is
// the first 8 bytes of SHA-256(list + "\x00" + last key) and list names the
// RPC and the filters that change its result. A garbage token, a truncated
// one, or one from another list or other filters fails the check and is
// InvalidArgument, instead of silently giving a wrong page. The check holds
// no secret: it catches mistakes, not forgery; a forged token can only name
// a resume key, which the caller could have listed anyway.
package paging

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

const (
	defaultSize = 100
	maxSize     = 1000
	checkLen    = 8
)

// MaxPageBytes bounds the encoded size of the items of one page: half of
// gRPC's default 4 MiB message limit, leaving room for the rest of the
// response, so that a page of large items cannot fail the whole list with
// RESOURCE_EXHAUSTED. The page ends early instead; its next_page_token
// resumes after its last item.
const MaxPageBytes = 2 << 20

// fieldOverhead is the most a repeated message field adds to its item's
// size: the tag and the length prefix.
const fieldOverhead = 1 + 5

// Budget tracks the encoded size of the items put on a page so far.
type Budget struct {
	left  int
	empty bool
}

// NewBudget returns the budget of a page of at most maxBytes encoded bytes
// of items; 0 means MaxPageBytes.
func NewBudget(maxBytes int) *Budget {
	if maxBytes <= 0 {
		maxBytes = MaxPageBytes
	}
	return &Budget{left: maxBytes, empty: true}
}

// Take reports whether item still fits on the page, and counts it if it
// does. The first item always fits (one item alone is bounded by the input
// limits of its API); once Take reports false the page is full, and item
// starts the next one.
func (b *Budget) Take(item proto.Message) bool {
	size := proto.Size(item) + fieldOverhead
	if !b.empty && size > b.left {
		b.left = 0
		return false
	}
	b.empty = false
	b.left -= size
	return true
}

// Parse returns the page's item limit and the key to resume after ("" for
// the first page). list names the listing and its result-changing filters,
// the same string that made the token (see Token); values that a caller
// supplies should be quoted (%q) so distinct filter sets never spell the
// same list. Bad input is an InvalidArgument status.
func Parse(list string, size int32, token string) (limit int, after string, err error) {
	if size < 0 {
		return 0, "", status.Errorf(codes.InvalidArgument, "page_size must not be negative, got %d", size)
	}
	limit = min(int(size), maxSize)
	if limit == 0 {
		limit = defaultSize
	}
	if token == "" {
		return limit, "", nil
	}
	// The token itself is never echoed: it is caller input of any length.
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) <= checkLen {
		return 0, "", status.Error(codes.InvalidArgument, "invalid page_token: not a token of this service")
	}
	after = string(b[checkLen:])
	if !bytes.Equal(b[:checkLen], check(list, after)) {
		return 0, "", status.Error(codes.InvalidArgument, "invalid page_token: not from this list with these filters")
	}
	return limit, after, nil
}

// Token is the page_token that resumes list after key ("" when there is no
// more).
func Token(list, after string) string {
	if after == "" {
		return ""
	}
	b := append(check(list, after), after...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// check is the part of a token that ties it to its list and key.
func check(list, after string) []byte {
	sum := sha256.Sum256([]byte(list + "\x00" + after))
	return sum[:checkLen]
}

// All walks a paged listing from the client side: it calls page with the
// empty token, then with each next-page token page returns, until one
// returns the empty token or an error.
func All(page func(token string) (next string, err error)) error {
	token := ""
	for {
		next, err := page(token)
		if err != nil || next == "" {
			return err
		}
		token = next
	}
}
