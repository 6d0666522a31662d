package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestIPAMHung stops the IPAM process (SIGSTOP: its socket still takes
// connections, nothing answers): a CNI DEL returns at once and removes the
// pod's networking, CNI STATUS reports not ready; once IPAM answers again
// the release is done and STATUS is ready. (Issue 17, item 3: the DEL
// waited for the whole CNI timeout, STATUS stayed ready.)
func TestIPAMHung(t *testing.T) {
	e := newEnv(t, 1)
	node := e.cluster.Nodes[0]
	conf := e.conflist(0)
	p := e.addPod(0, "pod-a")

	pid := e.ipamPID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("resume axon-ipam: %v", err)
			}
		}
	}
	t.Cleanup(resume)

	const cniTimeout = 30 * time.Second // the shim's default
	start := time.Now()
	e.delPod(p)
	if took := time.Since(start); took >= cniTimeout/4 {
		t.Errorf("CNI DEL with IPAM hung took %s; want it at once, not near the %s CNI timeout", took, cniTimeout)
	}
	if l := lxcLinks(node.Netns); len(l) != 0 {
		t.Errorf("veths left after the DEL: %v", l)
	}
	e.eventually(func() error {
		if err := e.cni.GetStatusNetworkList(t.Context(), conf); err == nil {
			return errors.New("CNI STATUS ready while IPAM does not answer")
		}
		return nil
	})

	resume()
	e.eventually(func() error { return e.cni.GetStatusNetworkList(t.Context(), conf) })
	e.assertNothingLeft(0)
}

// ipamPID finds the cluster's axon-ipam process: the one serving the
// cluster's IPAM socket.
func (e *env) ipamPID() int {
	e.t.Helper()
	want := []byte("\x00--grpc-socket\x00" + e.cluster.IPAMSocket() + "\x00")
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		e.t.Fatal(err)
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.HasPrefix(cmdline, []byte(filepath.Join(e.bins, "axon-ipam")+"\x00")) && bytes.Contains(cmdline, want) {
			return pid
		}
	}
	e.t.Fatal(fmt.Errorf("no axon-ipam process serving %s", e.cluster.IPAMSocket()))
	return 0
}
