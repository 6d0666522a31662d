// Package fdleak fails a test package that leaks file descriptors (BPF
// objects, links, namespaces, netlink sockets), as cilium/ebpf's tests do.
package fdleak

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Run runs the package's tests and returns their exit code, made non-zero
// if descriptors opened during the run are still open after it. Call it
// from TestMain: os.Exit(fdleak.Run(m)).
func Run(m *testing.M) int {
	// The runtime opens its netpoller (epoll + eventfd) on first use; open it
	// now so it does not count as a leak.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before, err := openFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fd leak check:", err)
		return 1
	}
	code := m.Run()
	after, err := openFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fd leak check:", err)
		return 1
	}
	var leaked []string
	for fd, target := range after {
		if _, ok := before[fd]; !ok {
			leaked = append(leaked, fmt.Sprintf("%d -> %s", fd, target))
		}
	}
	if len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "leaked %d file descriptors:\n  %s\n", len(leaked), strings.Join(leaked, "\n  "))
		if code == 0 {
			code = 1
		}
	}
	return code
}

func openFDs() (map[int]string, error) {
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	fds := make(map[int]string, len(names))
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd == int(f.Fd()) {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + name)
		if err != nil {
			continue
		}
		fds[fd] = target
	}
	return fds, nil
}
