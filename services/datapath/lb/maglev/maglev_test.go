package maglev

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// testBackends returns n backends of equal weight with distinct keys shaped
// like the load balancer's (address:port/protocol).
func testBackends(n int) []Backend {
	bs := make([]Backend, n)
	for i := range bs {
		bs[i] = Backend{Key: fmt.Sprintf("10.%d.%d.%d:8080/TCP", i/62500, i/250%250, i%250+1)}
	}
	return bs
}

// checkTable fails t unless table has m entries, each an index into
// backends, and returns how many entries each backend got.
func checkTable(t testing.TB, table []uint16, backends []Backend, m uint32) []int {
	t.Helper()
	if len(table) != int(m) {
		t.Fatalf("table has %d entries, want %d", len(table), m)
	}
	counts := make([]int, len(backends))
	for e, i := range table {
		if int(i) >= len(backends) {
			t.Fatalf("entry %d = %d, not an index of %d backends", e, i, len(backends))
		}
		counts[i]++
	}
	return counts
}

// byKey returns the key of every entry of table.
func byKey(table []uint16, backends []Backend) []string {
	keys := make([]string, len(table))
	for e, i := range table {
		keys[e] = backends[i].Key
	}
	return keys
}

func TestTableEqualWeights(t *testing.T) {
	tests := []struct {
		n int
		m uint32
	}{
		{1, MinSize},
		{2, MinSize},
		{3, DefaultSize},
		{10, DefaultSize},
		{100, DefaultSize},
		{1000, DefaultSize},
		{DefaultSize, DefaultSize}, // one entry each
		{MaxBackends, MaxSize},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("n=%d/m=%d", tt.n, tt.m), func(t *testing.T) {
			bs := testBackends(tt.n)
			table, err := Table(bs, tt.m)
			if err != nil {
				t.Fatal(err)
			}
			// One turn per backend and round: every backend gets ⌊m/n⌋ or
			// ⌈m/n⌉ entries.
			lo := int(tt.m) / tt.n
			hi := lo
			if int(tt.m)%tt.n != 0 {
				hi++
			}
			for i, c := range checkTable(t, table, bs, tt.m) {
				if c < lo || c > hi {
					t.Errorf("backend %d (%s) has %d entries, want %d..%d", i, bs[i].Key, c, lo, hi)
				}
			}
		})
	}
}

func TestTableWeights(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		m       uint32
	}{
		{"1:2:3:4", []uint32{1, 2, 3, 4}, DefaultSize},
		{"zero is one", []uint32{0, 1, 2}, DefaultSize},
		{"one heavy", []uint32{1, 1, 1, 1, 1, 1, 1, 1, 1, 100}, DefaultSize},
		{"one light", []uint32{100, 100, 100, 100, 1}, DefaultSize},
		{"extreme", []uint32{math.MaxUint32, 1, 1000}, MinSize},
		{"large equal", []uint32{math.MaxUint32, math.MaxUint32}, MinSize},
		{"many", slices.Repeat([]uint32{1, 2, 5, 10}, 25), DefaultSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := testBackends(len(tt.weights))
			var sum float64
			for i, w := range tt.weights {
				bs[i].Weight = w
				sum += float64(max(w, 1))
			}
			table, err := Table(bs, tt.m)
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range checkTable(t, table, bs, tt.m) {
				// A partial last round and turns rounded to whole rounds
				// shift a share by up to about 2 + n·w/W entries.
				share := float64(max(tt.weights[i], 1)) / sum
				want := share * float64(tt.m)
				tolerance := 2 + share*float64(len(bs))
				if math.Abs(float64(c)-want) > tolerance {
					t.Errorf("backend %d (weight %d) has %d entries, want %.1f ± %.1f", i, tt.weights[i], c, want, tolerance)
				}
			}
		})
	}
}

// TestTableScaledWeights checks that only the ratios of weights matter: 0
// and 1 are the same weight, and weights multiplied by one factor give the
// same table.
func TestTableScaledWeights(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32 // of 50 backends, repeated
		factors []uint32
	}{
		{"equal", []uint32{1}, []uint32{0, 7, math.MaxUint32}},
		{"weighted", []uint32{1, 2, 3, 5}, []uint32{7, 1 << 29}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			table := func(factor uint32) []uint16 {
				t.Helper()
				bs := testBackends(50)
				for i := range bs {
					bs[i].Weight = tt.weights[i%len(tt.weights)] * factor
				}
				table, err := Table(bs, DefaultSize)
				if err != nil {
					t.Fatal(err)
				}
				return table
			}
			want := table(1)
			for _, f := range tt.factors {
				if !slices.Equal(table(f), want) {
					t.Errorf("weights multiplied by %d give another table", f)
				}
			}
		})
	}
}

// TestTableOrderIndependent is the property two nodes rely on: the same
// backends in any order give a table naming the same backend in every entry.
func TestTableOrderIndependent(t *testing.T) {
	tests := []struct {
		name     string
		backends []Backend
	}{
		{"equal", testBackends(100)},
		{"weighted", []Backend{{Key: "10.0.0.1:80/TCP", Weight: 3}, {Key: "10.0.0.2:80/TCP"}, {Key: "[fd00::2]:80/TCP", Weight: 2}, {Key: "10.0.0.3:80/UDP", Weight: 7}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			table, err := Table(tt.backends, DefaultSize)
			if err != nil {
				t.Fatal(err)
			}
			want := byKey(table, tt.backends)
			rng := rand.New(rand.NewPCG(1, 2))
			for range 5 {
				shuffled := slices.Clone(tt.backends)
				rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
				got, err := Table(shuffled, DefaultSize)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(byKey(got, shuffled), want) {
					t.Fatal("a shuffled backend list gives another table")
				}
			}
		})
	}
}

// TestTableGolden pins the hash and the order of turns: nodes running two
// releases must build the same tables. If this fails, the change breaks
// consistent backend choice across a rolling upgrade.
func TestTableGolden(t *testing.T) {
	bs := []Backend{
		{Key: "10.0.2.17:8080/TCP"},
		{Key: "10.0.3.4:8080/TCP"},
		{Key: "[fd00:42::1b:51c0]:8080/TCP", Weight: 2},
		{Key: "10.0.9.1:8080/TCP"},
	}
	// The entries of the table, as indices of bs; checked against an
	// implementation written separately from the package documentation.
	const want = "2000332123230022133221302300221312000231232230121232212123301213" +
		"1200012322122002123322210233122213200102311222002221232111033022" +
		"1322000221222210222132312100332212322001213222130322012321200332" +
		"12132001213312220232012231100032221323000223322210132102232"
	table, err := Table(bs, MinSize)
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	for _, i := range table {
		got.WriteByte(byte('0' + i))
	}
	if got.String() != want {
		t.Errorf("table = %q, want %q", got.String(), want)
	}
}

// moved compares two tables, as keys, around one backend that changed: it
// returns how many entries it gained and lost, and how many moved between
// the other backends.
func moved(before, after []string, changed string) (gained, lost, others int) {
	for e := range before {
		switch {
		case before[e] == after[e]:
		case after[e] == changed:
			gained++
		case before[e] == changed:
			lost++
		default:
			others++
		}
	}
	return gained, lost, others
}

// TestTableDisruption measures what a backend change moves besides the
// entries it must: removing a backend reassigns its entries and a few
// others; adding one, or doubling its weight, takes about its share and
// moves a few others. Maglev trades some of this for even shares; the
// fraction grows with n/m (at m = 16381: about 0.7% of the table at n = 10,
// 1.4% at 100).
func TestTableDisruption(t *testing.T) {
	const m = DefaultSize
	const maxOthers = m / 50 // entries moved that did not have to: 2% of the table
	for _, n := range []int{10, 20, 50, 100} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			all := testBackends(n + 1)
			before := all[:n]
			table, err := Table(before, m)
			if err != nil {
				t.Fatal(err)
			}
			oldKeys := byKey(table, before)
			share := float64(m) / float64(n)
			// check builds the table of backends after a change of
			// backend changed and checks what moved: what the changed one
			// gains and loses within 2 entries of its change of share (a
			// partial last round, rounding of weighted turns), at most
			// maxOthers between the others.
			check := func(change string, backends []Backend, changed string, wantGained, wantLost float64) {
				t.Helper()
				table, err := Table(backends, m)
				if err != nil {
					t.Fatal(err)
				}
				gained, lost, others := moved(oldKeys, byKey(table, backends), changed)
				t.Logf("%s %s: gains %d, loses %d, moves %d others (%.2f%% of m)", change, changed, gained, lost, others, 100*float64(others)/m)
				if math.Abs(float64(gained)-wantGained) > 2 || math.Abs(float64(lost)-wantLost) > 2 {
					t.Errorf("%s %s: it gains %d entries and loses %d, want %.0f and %.0f", change, changed, gained, lost, wantGained, wantLost)
				}
				if others > maxOthers {
					t.Errorf("%s %s moves %d entries between the other backends, want at most %d", change, changed, others, maxOthers)
				}
			}

			// Remove a spread of backends, one at a time.
			for r := 0; r < n; r += max(1, n/5) {
				check("removing", slices.Delete(slices.Clone(before), r, r+1), before[r].Key, 0, share)
			}
			check("adding", all, all[n].Key, float64(m)/float64(n+1), 0)
			heavier := slices.Clone(before)
			heavier[n/2].Weight = 2
			check("doubling the weight of", heavier, heavier[n/2].Key, 2*float64(m)/float64(n+1)-share, 0)
		})
	}
}

func TestValidSize(t *testing.T) {
	tests := []struct {
		m    uint32
		want error
	}{
		{0, ErrInvalidSize},
		{2, ErrInvalidSize},
		{241, ErrInvalidSize}, // prime, too small
		{MinSize, nil},
		{253, ErrInvalidSize}, // 11·23
		{1021, nil},
		{DefaultSize, nil},
		{16383, ErrInvalidSize}, // 3·43·127
		{65537, nil},
		{65536, ErrInvalidSize},
		{MaxSize, nil},
		{131101, ErrInvalidSize}, // prime, too large
		{math.MaxUint32, ErrInvalidSize},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.m), func(t *testing.T) {
			if err := ValidSize(tt.m); !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Errorf("ValidSize(%d) = %v, want %v", tt.m, err, tt.want)
			}
		})
	}
}

func TestTableErrors(t *testing.T) {
	tests := []struct {
		name     string
		backends []Backend
		m        uint32
		want     error
	}{
		{"nil", nil, DefaultSize, ErrNoBackends},
		{"empty", []Backend{}, DefaultSize, ErrNoBackends},
		{"size not prime", testBackends(3), 16383, ErrInvalidSize},
		{"size too small", testBackends(3), 7, ErrInvalidSize},
		{"more backends than entries", testBackends(MinSize + 1), MinSize, ErrTooManyBackends},
		{"more backends than indices", testBackends(MaxBackends + 1), MaxSize, ErrTooManyBackends},
		{"empty key", []Backend{{Key: "10.0.0.1:80/TCP"}, {}}, DefaultSize, ErrEmptyKey},
		{"duplicate key", []Backend{{Key: "10.0.0.1:80/TCP"}, {Key: "10.0.0.2:80/TCP"}, {Key: "10.0.0.1:80/TCP", Weight: 2}}, DefaultSize, ErrDuplicateKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			table, err := Table(tt.backends, tt.m)
			if !errors.Is(err, tt.want) {
				t.Errorf("Table: err = %v, want %v", err, tt.want)
			}
			if table != nil {
				t.Errorf("Table returned a table with error %v", err)
			}
		})
	}
}

// FuzzTable builds tables of arbitrary backend sets: never a panic; a table
// whenever the set is valid, with every entry an index of it and the same
// entries for the set reversed; otherwise one of the package's errors.
func FuzzTable(f *testing.F) {
	f.Add([]byte("\x0110.0.0.1:80/TCP\x00\x0210.0.0.2:80/TCP"), uint8(0))
	f.Add([]byte("a\x00b\x00c\x00a"), uint8(1))
	f.Add([]byte("\x00\x00"), uint8(2))
	sizes := []uint32{MinSize, 257, 1021, 4093}
	f.Fuzz(func(t *testing.T, data []byte, sizeSel uint8) {
		m := sizes[int(sizeSel)%len(sizes)]
		// Backends are separated by NUL; the first byte of each is its
		// weight too.
		var bs []Backend
		for field := range bytes.SplitSeq(data, []byte{0}) {
			b := Backend{Key: string(field)}
			if len(field) > 0 {
				b.Weight = uint32(field[0]) * uint32(field[0])
			}
			bs = append(bs, b)
		}
		table, err := Table(bs, m)
		if err != nil {
			for _, known := range []error{ErrNoBackends, ErrTooManyBackends, ErrEmptyKey, ErrDuplicateKey} {
				if errors.Is(err, known) {
					return
				}
			}
			t.Fatalf("Table: unexpected error %v", err)
		}
		checkTable(t, table, bs, m)
		reversed := slices.Clone(bs)
		slices.Reverse(reversed)
		again, err := Table(reversed, m)
		if err != nil {
			t.Fatalf("Table of the reversed set: %v", err)
		}
		if !slices.Equal(byKey(again, reversed), byKey(table, bs)) {
			t.Fatal("the reversed set gives another table")
		}
	})
}

func BenchmarkTable(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("m=%d/n=%d", DefaultSize, n), func(b *testing.B) {
			bs := testBackends(n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Table(bs, DefaultSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
