// Package paging turns the page_size and page_token of Axon's list RPCs
// into a limit and a resume key, and back: 0 means 100 items, at most 1000,
// and a token is the opaque encoding of the last key returned.
package paging

import (
	"encoding/base64"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	defaultSize = 100
	maxSize     = 1000
)

// Parse returns the page's item limit and the key to resume after ("" for
// the first page). Bad input is an InvalidArgument status.
func Parse(size int32, token string) (limit int, after string, err error) {
	if size < 0 {
		return 0, "", status.Errorf(codes.InvalidArgument, "page_size must not be negative, got %d", size)
	}
	limit = int(size)
	if limit == 0 {
		limit = defaultSize
	}
	limit = min(limit, maxSize)
	if token == "" {
		return limit, "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) == 0 {
		return 0, "", status.Errorf(codes.InvalidArgument, "invalid page_token %q", token)
	}
	return limit, string(b), nil
}

// Token is the page_token that resumes after key ("" when there is no more).
func Token(after string) string {
	if after == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(after))
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
