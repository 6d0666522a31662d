package nodedev

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// The ports the eBPF programs give connections from outside that they send
// to another node's backend (SNAT; bpf/include/axon/nodeport.h): above the
// node ports (30000-32767) and the kernel's default ephemeral ports
// (net.ipv4.ip_local_port_range 32768-60999), so the node's own
// connections never take one.
const (
	NATPortMin = 61000
	NATPortMax = 65535
)

// ErrNATPortsOverlap: the node's ephemeral port range reaches into the
// SNAT ports, so a connection of the node's own and a translated one may
// share a tuple.
var ErrNATPortsOverlap = errors.New("ephemeral ports overlap the SNAT ports")

// localPortRange is where the kernel keeps the ephemeral port range.
const localPortRange = "/proc/sys/net/ipv4/ip_local_port_range"

// CheckNATPorts checks that the ephemeral port range of the calling
// thread's network namespace stays below NATPortMin.
func CheckNATPorts() error {
	b, err := os.ReadFile(localPortRange)
	if err != nil {
		return fmt.Errorf("read ip_local_port_range: %w", err)
	}
	return checkNATPorts(string(b))
}

// checkNATPorts checks an ip_local_port_range value ("low high").
func checkNATPorts(s string) error {
	var lo, hi int
	if _, err := fmt.Sscan(strings.TrimSpace(s), &lo, &hi); err != nil {
		return fmt.Errorf("parse ip_local_port_range %q: %w", s, err)
	}
	if hi >= NATPortMin && lo <= NATPortMax {
		return fmt.Errorf("%w: ip_local_port_range %d-%d, SNAT ports %d-%d", ErrNATPortsOverlap, lo, hi, NATPortMin, NATPortMax)
	}
	return nil
}
