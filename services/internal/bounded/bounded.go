// Package bounded holds the input limits every Axon API documents for its
// strings and maps (Kubernetes' own limits where they exist), their checks,
// and Quote, which echoes user input into error messages and logs with a
// bounded length.
package bounded

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Limits shared by the APIs, in bytes. The proto field comments state the
// same numbers.
const (
	// DNSLabel: a DNS-1123 label, e.g. a Kubernetes namespace name.
	DNSLabel = 63
	// DNSSubdomain: a DNS-1123 subdomain, e.g. a Kubernetes object or
	// node name.
	DNSSubdomain = 253
	// LabelValue: a Kubernetes label value.
	LabelValue = 63
	// QualifiedName: a Kubernetes label or annotation key, an optional
	// DNS-1123 subdomain prefix and '/' and a name of at most 63
	// characters.
	QualifiedName = DNSSubdomain + 1 + 63
	// ContainerID: a CNI container ID. Runtimes use 64 hex characters;
	// the datapath's health endpoints use "axon-health-<node name>".
	ContainerID = 512
	// InterfaceName: a Linux interface name (IFNAMSIZ less the NUL).
	InterfaceName = 15
	// Path: a file system path (PATH_MAX).
	Path = 4096
	// Key: a free-form key such as a sticky key ("namespace/name") or an
	// idempotency key.
	Key = DNSLabel + 1 + DNSSubdomain
	// Address: the text of an IP address or CIDR (the longest IPv6 form
	// with a prefix length is 49 characters).
	Address = 64
	// MapBytes: the keys and values of one map together, Kubernetes'
	// limit on an object's annotations (256 KiB).
	MapBytes = 256 << 10
)

// quotePrefix is how many bytes of user input Quote keeps.
const quotePrefix = 64

// Quote returns s quoted as by %q, cut after about 64 bytes (at a rune
// boundary) with an ellipsis and s's length: the way to put user input into
// an error message or a log line, which must never echo a long input whole.
func Quote(s string) string {
	if len(s) <= quotePrefix {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:runeCut(s, quotePrefix)], len(s))
}

// Truncate returns s cut after about n bytes (at a rune boundary) with an
// ellipsis and s's length, or s itself if it is at most n bytes long: a
// backstop for text that may hold user input, such as an error logged whole.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s… (%d bytes)", s[:runeCut(s, n)], len(s))
}

// runeCut returns the largest rune boundary of s at most n.
func runeCut(s string, n int) int {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}

// ErrOverLimit is wrapped by every error of this package.
var ErrOverLimit = errors.New("input over its limit")

// String checks that s is at most limit bytes long; the error names field.
func String(field, s string, limit int) error {
	if len(s) > limit {
		return fmt.Errorf("%s %s: %d bytes, at most %d allowed: %w", field, Quote(s), len(s), limit, ErrOverLimit)
	}
	return nil
}

// Strings checks a repeated field: at most count entries, each at most
// limit bytes.
func Strings(field string, ss []string, count, limit int) error {
	if err := Count(field, len(ss), count); err != nil {
		return err
	}
	for i, s := range ss {
		if err := String(fmt.Sprintf("%s[%d]", field, i), s, limit); err != nil {
			return err
		}
	}
	return nil
}

// Labels checks a map of Kubernetes labels: keys are qualified names (a
// prefix of at most 253 bytes and '/', then a name of 1 to 63 bytes), values
// at most 63 bytes, all keys and values together at most MapBytes.
func Labels(field string, m map[string]string) error {
	return checkMap(field, m, LabelValue)
}

// Annotations checks a map of Kubernetes annotations: keys as for Labels,
// values of any length, all keys and values together at most MapBytes.
func Annotations(field string, m map[string]string) error {
	return checkMap(field, m, MapBytes)
}

// Map checks a free-form map: keys at most QualifiedName bytes, values at
// most valueLimit bytes, all keys and values together at most MapBytes.
func Map(field string, m map[string]string, valueLimit int) error {
	total := 0
	for _, k := range sortedKeys(m) {
		v := m[k]
		if err := String(field+" key", k, QualifiedName); err != nil {
			return err
		}
		if len(v) > valueLimit {
			return fmt.Errorf("%s[%s]: value of %d bytes, at most %d allowed: %w", field, Quote(k), len(v), valueLimit, ErrOverLimit)
		}
		total += len(k) + len(v)
	}
	return checkTotal(field, total)
}

func checkMap(field string, m map[string]string, valueLimit int) error {
	total := 0
	for _, k := range sortedKeys(m) {
		v := m[k]
		if err := qualifiedName(field, k); err != nil {
			return err
		}
		if len(v) > valueLimit {
			return fmt.Errorf("%s[%s]: value of %d bytes, at most %d allowed: %w", field, Quote(k), len(v), valueLimit, ErrOverLimit)
		}
		total += len(k) + len(v)
	}
	return checkTotal(field, total)
}

func checkTotal(field string, total int) error {
	if total > MapBytes {
		return fmt.Errorf("%s: keys and values take %d bytes, at most %d allowed: %w", field, total, MapBytes, ErrOverLimit)
	}
	return nil
}

// qualifiedName checks the lengths of a Kubernetes qualified name.
func qualifiedName(field, k string) error {
	prefix, name, ok := strings.Cut(k, "/")
	if !ok {
		prefix, name = "", k
	}
	if name == "" || len(name) > 63 || (ok && (prefix == "" || len(prefix) > DNSSubdomain)) {
		return fmt.Errorf("%s key %s: want [prefix of 1-%d bytes/]name of 1-63 bytes: %w", field, Quote(k), DNSSubdomain, ErrOverLimit)
	}
	return nil
}

// sortedKeys makes the first error reported the same on every call.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Count checks that a repeated field has at most limit entries.
func Count(field string, n, limit int) error {
	if n > limit {
		return fmt.Errorf("%s: %d entries, at most %d allowed: %w", field, n, limit, ErrOverLimit)
	}
	return nil
}

// First returns the first non-nil error of errs: one violation is enough to
// refuse a request, and reporting one keeps the message short.
func First(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
