// Package benchreport holds what every benchmark report of Axon prints the
// same way: the machine it ran on, the version of a reference binary, and
// durations.
package benchreport

import (
	"bufio"
	"debug/buildinfo"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// Machine describes where a benchmark ran.
type Machine struct {
	CPUs       int
	CPUModel   string
	Kernel     string
	GoVersion  string
	GOMAXPROCS int
}

// DescribeMachine reads the machine's facts from /proc and the runtime.
func DescribeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		CPUModel: "unknown", Kernel: "unknown"}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// ModuleVersion names the module and Go version a Go binary was built from.
func ModuleVersion(bin string) string {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "unknown version"
	}
	return fmt.Sprintf("%s %s (built with %s)", bi.Main.Path, bi.Main.Version, bi.GoVersion)
}

// Millis prints d in milliseconds with two decimals below 10 ms, one above;
// zero prints as a dash (no sample).
func Millis(d time.Duration) string {
	switch {
	case d == 0:
		return "–"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
}
