package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/axon-cni/axon/services/internal/nstest"
)

// echoConn opens a TCP connection from pod a to an echo server in pod b.
func echoConn(t *testing.T, a, b *pod) (net.Conn, *bufio.Reader) {
	t.Helper()
	var l net.Listener
	if err := nstest.DoAt(b.netns, func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(b.ip, "7777"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := c.Write([]byte(line)); err != nil {
				return
			}
		}
	}()
	var c net.Conn
	if err := nstest.DoAt(a.netns, func() (err error) {
		c, err = net.DialTimeout("tcp", net.JoinHostPort(b.ip, "7777"), 3*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, bufio.NewReader(c)
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintln(c, msg); err != nil {
		t.Fatalf("send %q: %v", msg, err)
	}
	got, err := r.ReadString('\n')
	if err != nil || got != msg+"\n" {
		t.Fatalf("echo of %q = %q, %v", msg, got, err)
	}
}

// TestRestartKeepsConnections kills a node's datapath while its pods hold
// TCP connections, to a pod on the same node and to one on another node
// (through the tunnel): traffic keeps flowing on the pinned programs and
// maps, a DEL made meanwhile is queued and replayed, and the restarted
// agent knows every endpoint.
func TestRestartKeepsConnections(t *testing.T) {
	e := newEnv(t, 2)
	conf := e.conflist(0)
	a, b, c := e.addPod(0, "pod-a"), e.addPod(0, "pod-b"), e.addPod(0, "pod-c")
	remote := e.addPod(1, "pod-remote")
	e.eventually(func() error { return e.tryPing(a.netns, remote.ip) })
	conn, r := echoConn(t, a, b)
	roundTrip(t, conn, r, "before")
	rconn, rr := echoConn(t, a, remote)
	roundTrip(t, rconn, rr, "before, across nodes")

	e.cluster.KillDatapath(0)
	roundTrip(t, conn, r, "while the datapath is down")
	roundTrip(t, rconn, rr, "across nodes while the datapath is down")
	if err := e.cni.GetStatusNetworkList(t.Context(), conf); err == nil {
		t.Error("CNI STATUS reports ready while the datapath is down")
	}
	e.delPod(c) // queued
	if entries, _ := os.ReadDir(e.cluster.Nodes[0].DeleteQueue); len(entries) != 1 {
		t.Fatalf("delete queue holds %d entries, want 1", len(entries))
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := e.cluster.StartDatapath(ctx, 0); err != nil {
		t.Fatalf("restart datapath: %v", err)
	}
	before := e.stats(0)
	roundTrip(t, conn, r, "after the restart")
	roundTrip(t, rconn, rr, "across nodes after the restart")
	after := e.stats(0)
	for _, name := range []string{"forwarded-local", "forwarded-tunnel", "from-overlay-local"} {
		if after[name] <= before[name] {
			t.Errorf("%s %d -> %d: the restarted programs do not forward", name, before[name], after[name])
		}
	}
	e.eventually(func() error {
		if l := lxcLinks(e.cluster.Nodes[0].Netns); len(l) != 2 {
			return fmt.Errorf("node has veths %v, want pod-a's and pod-b's (pod-c's queued DEL replayed)", l)
		}
		return nil
	})
	for _, p := range []*pod{a, b} {
		if err := e.cni.CheckNetworkList(t.Context(), conf, p.rt); err != nil {
			t.Errorf("CHECK %s after restart: %v", p.name, err)
		}
	}
}
