package paging

import (
	"encoding/base64"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestParse(t *testing.T) {
	const list = `ipam.ListBlocks pool="a" node="n1"`
	valid := Token(list, "10.0.0.0/26")
	raw, err := base64.RawURLEncoding.DecodeString(valid)
	if err != nil {
		t.Fatal(err)
	}
	tampered := append([]byte(nil), raw...)
	tampered[len(tampered)-1] ^= 1
	for _, tc := range []struct {
		name      string
		list      string
		size      int32
		token     string
		wantCode  codes.Code
		wantLimit int
		wantAfter string
	}{
		{name: "first page, default size", list: list, wantLimit: 100},
		{name: "size capped", list: list, size: 5000, wantLimit: 1000},
		{name: "negative size", list: list, size: -1, wantCode: codes.InvalidArgument},
		{name: "valid", list: list, size: 10, token: valid, wantLimit: 10, wantAfter: "10.0.0.0/26"},
		{name: "garbage", list: list, token: "!!not base64!!", wantCode: codes.InvalidArgument},
		{name: "plain base64 of a key", list: list, token: base64.RawURLEncoding.EncodeToString([]byte("10.0.0.0/26")), wantCode: codes.InvalidArgument},
		{name: "check only", list: list, token: base64.RawURLEncoding.EncodeToString(raw[:checkLen]), wantCode: codes.InvalidArgument},
		{name: "truncated", list: list, token: valid[:len(valid)-2], wantCode: codes.InvalidArgument},
		{name: "key changed", list: list, token: base64.RawURLEncoding.EncodeToString(tampered), wantCode: codes.InvalidArgument},
		{name: "foreign list", list: `ipam.ListAllocations pool="a" node="n1"`, token: valid, wantCode: codes.InvalidArgument},
		{name: "other filter", list: `ipam.ListBlocks pool="a" node="n2"`, token: valid, wantCode: codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit, after, err := Parse(tc.list, tc.size, tc.token)
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("Parse: code %v (%v), want %v", got, err, tc.wantCode)
			}
			if err != nil {
				return
			}
			if limit != tc.wantLimit || after != tc.wantAfter {
				t.Errorf("Parse = %d, %q; want %d, %q", limit, after, tc.wantLimit, tc.wantAfter)
			}
		})
	}
}

func TestTokenEmpty(t *testing.T) {
	if got := Token("any", ""); got != "" {
		t.Errorf(`Token("any", "") = %q, want "" (no next page)`, got)
	}
}

func TestErrorDoesNotEchoToken(t *testing.T) {
	long := string(make([]byte, 4096))
	_, _, err := Parse("l", 0, long)
	if msg := status.Convert(err).Message(); len(msg) > 100 {
		t.Errorf("error message is %d bytes long, want a short one not echoing the token", len(msg))
	}
}

func TestBudget(t *testing.T) {
	item := func(n int) proto.Message { return wrapperspb.String(strings.Repeat("x", n)) }
	for _, tc := range []struct {
		name     string
		maxBytes int
		sizes    []int
		want     int // items taken
	}{
		{name: "all fit", maxBytes: 1000, sizes: []int{100, 100, 100}, want: 3},
		{name: "cut at the budget", maxBytes: 250, sizes: []int{100, 100, 100}, want: 2},
		{name: "first item always fits", maxBytes: 10, sizes: []int{100, 1}, want: 1},
		{name: "full stays full", maxBytes: 150, sizes: []int{100, 100, 1}, want: 1},
		{name: "default: MaxPageBytes", sizes: []int{MaxPageBytes / 2, MaxPageBytes / 2, 1}, want: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBudget(tc.maxBytes)
			got, total, full := 0, 0, false
			for _, n := range tc.sizes {
				m := item(n)
				switch took := b.Take(m); {
				case took && full:
					t.Fatalf("took a %d-byte item after the page was full", n)
				case took:
					got++
					total += proto.Size(m)
				default:
					full = true
				}
			}
			if got != tc.want {
				t.Errorf("took %d items, want %d", got, tc.want)
			}
			limit := tc.maxBytes
			if limit == 0 {
				limit = MaxPageBytes
			}
			if got > 1 && total > limit {
				t.Errorf("took %d bytes in %d items, over the budget of %d", total, got, limit)
			}
		})
	}
}
