package bounded

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"short", "eth0", `"eth0"`},
		{"at the prefix", strings.Repeat("a", 64), `"` + strings.Repeat("a", 64) + `"`},
		{"over the prefix", strings.Repeat("a", 65), `"` + strings.Repeat("a", 64) + `"… (65 bytes)`},
		{"cut at a rune boundary", strings.Repeat("a", 63) + "é" + "b", `"` + strings.Repeat("a", 63) + `"… (66 bytes)`},
		{"control characters escaped", "a\nb", `"a\nb"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Quote(tc.in); got != tc.want {
				t.Errorf("Quote = %s, want %s", got, tc.want)
			}
		})
	}
	if got := Quote(strings.Repeat("x", 1_400_000)); len(got) > 100 {
		t.Errorf("Quote of 1.4 MB is %d bytes long", len(got))
	}
}

func TestString(t *testing.T) {
	if err := String("f", strings.Repeat("a", 10), 10); err != nil {
		t.Errorf("at the limit: %v", err)
	}
	err := String("f", strings.Repeat("a", 1_400_000), 10)
	if !errors.Is(err, ErrOverLimit) || len(err.Error()) > 200 {
		t.Errorf("over the limit: %v", err)
	}
}

func TestStrings(t *testing.T) {
	if err := Strings("f", []string{"a", "b"}, 2, 1); err != nil {
		t.Errorf("at the limits: %v", err)
	}
	if err := Strings("f", []string{"a", "b", "c"}, 2, 1); !errors.Is(err, ErrOverLimit) {
		t.Errorf("one entry too many: %v", err)
	}
	if err := Strings("f", []string{"a", "bb"}, 2, 1); !errors.Is(err, ErrOverLimit) || !strings.Contains(err.Error(), "f[1]") {
		t.Errorf("one entry too long: %v", err)
	}
}

// bigMap returns a map whose keys and values take exactly total bytes.
func bigMap(total int) map[string]string {
	m := map[string]string{}
	for i := 0; total > 0; i++ {
		k := "k" + strings.Repeat("0", 5) + string(rune('a'+i%26)) + strings.Repeat("z", i/26)
		v := strings.Repeat("v", min(1000, max(0, total-len(k))))
		m[k] = v
		total -= len(k) + len(v)
	}
	return m
}

func TestMaps(t *testing.T) {
	long := strings.Repeat("a", 63)
	for _, tc := range []struct {
		name  string
		check func(string, map[string]string) error
		in    map[string]string
		ok    bool
	}{
		{"labels at the limits", Labels, map[string]string{strings.Repeat("p", 253) + "/" + long: long}, true},
		{"label value one over", Labels, map[string]string{"a": long + "b"}, false},
		{"label name one over", Labels, map[string]string{long + "b": ""}, false},
		{"label prefix one over", Labels, map[string]string{strings.Repeat("p", 254) + "/a": ""}, false},
		{"empty key", Labels, map[string]string{"": "a"}, false},
		{"empty prefix", Labels, map[string]string{"/a": "a"}, false},
		{"annotations at 256 KiB", Annotations, bigMap(MapBytes), true},
		{"annotations one byte over", Annotations, bigMap(MapBytes + 1), false},
		{"annotation value of 200 KiB", Annotations, map[string]string{"a": strings.Repeat("v", 200<<10)}, true},
		{"free-form map at the limit", func(f string, m map[string]string) error { return Map(f, m, 10) }, map[string]string{"IgnoreUnknown": "1"}, true},
		{"free-form value one over", func(f string, m map[string]string) error { return Map(f, m, 10) }, map[string]string{"a": strings.Repeat("v", 11)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.check("m", maps.Clone(tc.in))
			if tc.ok && err != nil {
				t.Fatalf("want no error, got %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrOverLimit) {
				t.Fatalf("want ErrOverLimit, got %v", err)
			}
			if err != nil && len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	if got := Truncate("short", 10); got != "short" {
		t.Errorf("Truncate of a short string = %q", got)
	}
	if got, want := Truncate("0123456789ab", 10), "0123456789… (12 bytes)"; got != want {
		t.Errorf("Truncate = %q, want %q", got, want)
	}
}
