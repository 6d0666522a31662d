package nodedev

import (
	"errors"
	"testing"
)

func TestCheckNATPorts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"32768\t60999\n", nil},
		{"1024 65535", ErrNATPortsOverlap},
		{"61000 61001", ErrNATPortsOverlap},
	} {
		if err := checkNATPorts(tc.in); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("checkNATPorts(%q) = %v, want %v", tc.in, err, tc.want)
		}
	}
	if err := checkNATPorts("nonsense"); err == nil {
		t.Error("checkNATPorts accepted nonsense")
	}
}
