package bench

import (
	"fmt"
	"strings"
	"testing"
)

func TestCacheCopies(t *testing.T) {
	prof := func(blocks int64, snapshot float64) *profileSummary {
		return &profileSummary{Blocks: blocks, Funcs: []profileFunc{
			{Name: "allocator.(*watchCache[...]).snapshot", Cum: snapshot},
			{Name: "allocator.(*Allocator).commitBatch", Cum: 5.3},
		}}
	}
	tests := []struct {
		name         string
		small, large *profileSummary
		want         string // "" for no paragraph
	}{
		{"worth mentioning", prof(3919, 0.7), prof(5000, 1.2), "took 0.7% of the process's CPU with 3919 blocks in the cluster and\n1.2% with 5000 (profiles above). After the scale run that is against the commit transaction's 5.3%."},
		{"small share", prof(3919, 0.2), prof(5000, 0.4), ""},
		{"a profile missing", nil, prof(5000, 1.2), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			cacheCopies(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }, tt.small, tt.large)
			if got := b.String(); tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("cacheCopies() = %q, want it to contain %q", got, tt.want)
			}
		})
	}
}
