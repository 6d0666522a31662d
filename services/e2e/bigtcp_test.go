package e2e

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/axon-cni/axon/services/internal/nstest"
	"github.com/axon-cni/axon/services/localcluster"
)

// TestBigTCP runs nodes with --big-tcp in both routing modes: pods' veths
// take 192 KiB GSO packets, and bulk TCP over IPv4 and IPv6, on one node and
// across nodes, arrives intact while the sender's packets average more than
// the 64 KiB a pod could send without it.
func TestBigTCP(t *testing.T) {
	for _, mode := range []string{"tunnel", "native"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnvMode(t, 2, mode, func(c *localcluster.Config) {
				c.DatapathArgs = append(c.DatapathArgs, "--big-tcp")
			})
			a, b, c := e.addPod(0, "pod-a"), e.addPod(0, "pod-b"), e.addPod(1, "pod-c")
			for _, p := range []*pod{a, b, c} {
				if got := gsoSizes(t, p.netns, "eth0"); got != [4]uint32{196608, 196608, 196608, 196608} {
					t.Fatalf("%s eth0 GSO/GRO max sizes (IPv6, IPv6 GRO, IPv4, IPv4 GRO) = %v; want 196608", p.name, got)
				}
			}
			e.eventually(func() error { return e.tryPing(a.netns, c.ip) })
			node1 := e.cluster.Nodes[0].Netns
			for _, tc := range []struct {
				name  string
				to    *pod
				ip    string
				cross bool
			}{
				{"same node", b, b.ip, false},
				{"same node, IPv6", b, b.ip6, false},
				{"across nodes", c, c.ip, true},
				{"across nodes, IPv6", c, c.ip6, true},
			} {
				// Large all the way: out of the pod, into the other pod,
				// and between the nodes (no software segmentation on the
				// way, as a device with a smaller limit would cause).
				meters := []meter{{"pod-a's eth0 out", a.netns, "eth0", false}, {tc.to.name + "'s eth0 in", tc.to.netns, "eth0", true}}
				if tc.cross {
					meters = append(meters, meter{"node-1's underlay out", node1, "eth0", false})
				}
				for i, avg := range bulkTransfer(t, a, tc.to, tc.ip, meters) {
					t.Logf("%s: %s: packets averaged %d bytes", tc.name, meters[i].name, avg)
					if avg <= 65536 {
						t.Errorf("%s: %s: packets averaged %d bytes; want GSO packets above 64 KiB", tc.name, meters[i].name, avg)
					}
				}
			}
			for n := range e.cluster.Nodes {
				for name, v := range e.stats(n) {
					if strings.HasPrefix(name, "drop-") && v != 0 {
						t.Errorf("node %d: %s = %d, want no drops", n+1, name, v)
					}
				}
			}
			e.delPod(a)
			e.delPod(b)
			e.delPod(c)
		})
	}
}

// gsoSizes returns dev's GSO and GRO max sizes, IPv6 then IPv4.
func gsoSizes(t *testing.T, netnsPath, dev string) [4]uint32 {
	t.Helper()
	a := linkIn(t, netnsPath, dev).Attrs()
	return [4]uint32{a.GSOMaxSize, a.GROMaxSize, a.GSOIPv4MaxSize, a.GROIPv4MaxSize}
}

// meter is a device whose packets a transfer measures, received or sent.
type meter struct {
	name, netns, dev string
	rx               bool
}

func (m meter) read(t *testing.T) (bytes, packets uint64) {
	t.Helper()
	st := linkIn(t, m.netns, m.dev).Attrs().Statistics
	if m.rx {
		return st.RxBytes, st.RxPackets
	}
	return st.TxBytes, st.TxPackets
}

// bulkTransfer sends 64 MiB of pseudo-random data from one pod to ip (of
// pod to) over TCP, checks it arrived intact, and returns the average size
// of the packets each meter counted meanwhile.
func bulkTransfer(t *testing.T, from, to *pod, ip string, meters []meter) []int {
	t.Helper()
	const size = 64 << 20
	var l net.Listener
	if err := nstest.DoAt(to.netns, func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(ip, "7780"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		got <- r
	}()

	before := make([][2]uint64, len(meters))
	for i, m := range meters {
		before[i][0], before[i][1] = m.read(t)
	}
	var c net.Conn
	if err := nstest.DoAt(from.netns, func() (err error) {
		c, err = net.DialTimeout("tcp", net.JoinHostPort(ip, "7780"), 3*time.Second)
		return err
	}); err != nil {
		t.Fatalf("%s to %s: %v", from.name, ip, err)
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	rng := rand.NewChaCha8([32]byte{1})
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for sent := 0; sent < size; sent += len(buf) {
		_, _ = rng.Read(buf)
		h.Write(buf)
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("send to %s after %d bytes: %v", ip, sent, err)
		}
	}
	_ = c.(*net.TCPConn).CloseWrite()
	r := <-got
	_ = c.Close()
	if r.err != nil || r.n != size || !bytes.Equal(r.sum[:], h.Sum(nil)) {
		t.Fatalf("%s to %s: received %d bytes (%v), want %d intact", from.name, ip, r.n, r.err, size)
	}
	avgs := make([]int, len(meters))
	for i, m := range meters {
		b, p := m.read(t)
		if p == before[i][1] {
			t.Fatalf("%s: no packets", m.name)
		}
		avgs[i] = int((b - before[i][0]) / (p - before[i][1]))
	}
	return avgs
}
