package endpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/axon-cni/axon/bpf/testpoll"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
)

// vanishedHealth is the container ID Reserved reports, standing for the
// node's health endpoint.
const vanishedHealth = "axon-health-n1"

// newVanishedEnv is a test manager whose Reserved reports vanishedHealth.
func newVanishedEnv(t *testing.T) *testEnv {
	t.Helper()
	return newTestManager(t, testOpts{
		reserved: func(att *datapathv1alpha1.Attachment) bool { return att.GetContainerId() == vanishedHealth },
	})
}

func vanishedAtt(container string) *datapathv1alpha1.Attachment {
	return &datapathv1alpha1.Attachment{ContainerId: container, InterfaceName: "eth0"}
}

// createPod wires a pod of container with its own namespace.
func (e *testEnv) createPod(container string) *datapathv1alpha1.Endpoint {
	e.t.Helper()
	return e.create(container, "eth0", e.podNS(container))
}

// present reports, for an endpoint, whether each piece of it is there: its
// record, map entries, device entry and IPAM allocation.
func (e *testEnv) present(ep *datapathv1alpha1.Endpoint) (record, entries, device, alloc bool) {
	e.t.Helper()
	att := ep.GetAttachment()
	_, err := e.m.GetEndpoint(att)
	record = err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		e.t.Fatalf("GetEndpoint: %v", err)
	}
	ip := Addrs(ep)[0].Addr()
	e.settleReleases()
	_, entries = e.bpf.Endpoints()[ip]
	_, device = e.bpf.Devices()[hostIfindex(ep, HostName(att))]
	alloc = e.ipam.Holders()[ip] == att.GetContainerId()+"/eth0"
	return record, entries, device, alloc
}

// wantGone checks nothing of ep is left.
func (e *testEnv) wantGone(ep *datapathv1alpha1.Endpoint) {
	e.t.Helper()
	if r, en, d, a := e.present(ep); r || en || d || a {
		e.t.Errorf("%s: record %v, map entries %v, device entry %v, IPAM allocation %v; want all gone",
			HostName(ep.GetAttachment()), r, en, d, a)
	}
}

// wantKept checks all of ep is in place.
func (e *testEnv) wantKept(ep *datapathv1alpha1.Endpoint) {
	e.t.Helper()
	if r, en, d, a := e.present(ep); !r || !en || !d || !a {
		e.t.Errorf("%s: record %v, map entries %v, device entry %v, IPAM allocation %v; want all kept",
			HostName(ep.GetAttachment()), r, en, d, a)
	}
}

func TestRemoveVanished(t *testing.T) {
	tests := []struct {
		name string
		// vanish takes the endpoint of container "a" (or the health
		// endpoint) away, or breaks something, behind the manager's back.
		vanish      func(t *testing.T, w *testEnv, ep *datapathv1alpha1.Endpoint)
		health      bool // the endpoint is the reserved health endpoint
		wantRemoved bool
		wantQueued  bool // the IPAM release is queued, the allocation kept for RetryReleases
	}{
		{name: "veth deleted", wantRemoved: true, vanish: func(t *testing.T, w *testEnv, ep *datapathv1alpha1.Endpoint) {
			if err := w.nl.DeleteLink(nlfake.NodeNS, HostName(ep.GetAttachment())); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "pod namespace deleted", wantRemoved: true, vanish: func(t *testing.T, w *testEnv, ep *datapathv1alpha1.Endpoint) {
			w.nl.DeleteNamespace(ep.GetNetnsPath())
		}},
		{name: "IPAM down", wantRemoved: true, wantQueued: true, vanish: func(t *testing.T, w *testEnv, ep *datapathv1alpha1.Endpoint) {
			if err := w.nl.DeleteLink(nlfake.NodeNS, HostName(ep.GetAttachment())); err != nil {
				t.Fatal(err)
			}
			w.ipam.FailNext("ReleaseIP", 1, status.Error(codes.Unavailable, "IPAM down"))
		}},
		{name: "netlink error, veth there", vanish: func(t *testing.T, w *testEnv, ep *datapathv1alpha1.Endpoint) {
			w.nl.FailOn(nlfake.NodeNS, "LinkByName", 1, unix.EIO)
		}},
		{name: "health endpoint left to its keeper", health: true, vanish: func(t *testing.T, w *testEnv, ep *datapathv1alpha1.Endpoint) {
			if err := w.nl.DeleteLink(nlfake.NodeNS, HostName(ep.GetAttachment())); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "nothing vanished", vanish: func(*testing.T, *testEnv, *datapathv1alpha1.Endpoint) {}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newVanishedEnv(t)
			container := "a"
			if tc.health {
				container = vanishedHealth
			}
			ep := w.createPod(container)
			other := w.createPod("b")
			tc.vanish(t, w, ep)

			removed := w.m.RemoveVanished(t.Context())
			if tc.wantQueued {
				if _, err := os.Stat(filepath.Join(w.m.releaseDir(), HostName(ep.GetAttachment())+".json")); err != nil {
					t.Fatalf("release not queued: %v", err)
				}
			}
			var want []string
			if tc.wantRemoved {
				want = []string{HostName(ep.GetAttachment())}
			}
			if !slices.Equal(removed, want) {
				t.Errorf("RemoveVanished = %v, want %v", removed, want)
			}
			w.wantKept(other)
			if !tc.wantRemoved {
				if r, e, d, a := w.present(ep); !r || !a || !tc.health && (!e || !d) {
					t.Errorf("record %v, map entries %v, device entry %v, allocation %v; want the endpoint kept", r, e, d, a)
				}
				return
			}
			w.wantGone(ep)
			// The address is free again: the next pod may get it.
			if again := w.createPod("c"); Addrs(again)[0] != Addrs(ep)[0] {
				t.Errorf("new pod got %v, want the released %v", Addrs(again), Addrs(ep))
			}
		})
	}
}

// runVanished runs RunVanished until the test ends.
func runVanished(t *testing.T, w *testEnv, interval time.Duration, events LinkEvents) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.m.RunVanished(ctx, interval, events)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// A link deletion removes the endpoint at once, long before the periodic
// pass would.
func TestRunVanishedOnLinkEvent(t *testing.T) {
	w := newVanishedEnv(t)
	a, b := w.createPod("a"), w.createPod("b")
	lookups := w.nl.Calls(nlfake.NodeNS, "LinkByName")
	runVanished(t, w, time.Hour, w.nl)
	// Subscribed, and the first pass (one lookup per record) done: what
	// follows only an event can remove.
	until(t, "the first pass", func() bool {
		return w.nl.Calls(nlfake.NodeNS, "LinkDeletions") == 1 && w.nl.Calls(nlfake.NodeNS, "LinkByName") >= lookups+2
	})
	if err := w.nl.DeleteLink(nlfake.NodeNS, HostName(a.GetAttachment())); err != nil {
		t.Fatal(err)
	}
	until(t, "the endpoint's removal", func() bool { _, err := w.m.GetEndpoint(a.GetAttachment()); return err != nil })
	w.wantGone(a)
	w.wantKept(b)
}

// Without link events (the subscription fails), the periodic pass finds
// the vanished endpoint.
func TestRunVanishedPeriodic(t *testing.T) {
	w := newVanishedEnv(t)
	w.nl.SetFail(func(ns, op string) error {
		if op == "LinkDeletions" {
			return unix.ENOBUFS
		}
		return nil
	})
	a, b := w.createPod("a"), w.createPod("b")
	lookups := w.nl.Calls(nlfake.NodeNS, "LinkByName")
	runVanished(t, w, 20*time.Millisecond, w.nl)
	until(t, "the first pass", func() bool { return w.nl.Calls(nlfake.NodeNS, "LinkByName") >= lookups+2 })
	w.nl.DeleteNamespace(a.GetNetnsPath())
	until(t, "the endpoint's removal", func() bool { _, err := w.m.GetEndpoint(a.GetAttachment()); return err != nil })
	w.wantGone(a)
	w.wantKept(b)
	// The subscription is tried again at each interval.
	until(t, "a second subscription", func() bool { return w.nl.Calls(nlfake.NodeNS, "LinkDeletions") >= 2 })
}

// blockBPF makes the next eBPF map operation op wait until release is
// called; entered is closed when it starts waiting.
func blockBPF(w *testEnv, op string) (entered <-chan struct{}, release func()) {
	in, out := make(chan struct{}), make(chan struct{})
	first := true
	w.bpf.SetFail(func(o string) error {
		if o == op && first {
			first = false
			close(in)
			<-out
		}
		return nil
	})
	return in, func() { close(out) }
}

// The reconcile decides under the attachment's lock, from the record and
// link as they are then: a DEL in flight (its veth gone, its record not yet)
// is not removed a second time, and an ADD in flight (its veth made, its
// record not yet written) is waited for and kept.
func TestRemoveVanishedRacing(t *testing.T) {
	t.Run("delete in flight", func(t *testing.T) {
		w := newVanishedEnv(t)
		a := w.createPod("a")
		// The DEL waits with its veth gone and its record still there.
		entered, release := blockBPF(w, bpffake.OpDeleteDevice)
		delDone := make(chan error, 1)
		go func() { _, err := w.m.DeleteEndpoint(t.Context(), a.GetAttachment()); delDone <- err }()
		<-entered
		got := make(chan []string, 1)
		go func() { got <- w.m.RemoveVanished(t.Context()) }()
		select {
		case r := <-got:
			t.Fatalf("RemoveVanished = %v while the DEL held the endpoint; want it to wait", r)
		case <-time.After(100 * time.Millisecond):
		}
		release()
		if err := <-delDone; err != nil {
			t.Fatalf("DeleteEndpoint: %v", err)
		}
		if r := <-got; len(r) != 0 {
			t.Errorf("RemoveVanished = %v, want nothing (the DEL removed it)", r)
		}
		w.wantGone(a)
		if n := w.ipam.Calls("ReleaseIP"); n != 1 {
			t.Errorf("ReleaseIP called %d times, want once", n)
		}
	})
	t.Run("create in flight", func(t *testing.T) {
		w := newVanishedEnv(t)
		path := w.podNS("a")
		// The ADD waits with its veth made and its record not yet written.
		in, out := make(chan struct{}), make(chan struct{})
		first := true
		w.bpf.SetFail(func(op string) error {
			if op == bpffake.OpPutDevice && first {
				first = false
				close(in)
				<-out
			}
			return nil
		})
		created := make(chan error, 1)
		go func() {
			_, err := w.m.CreateEndpoint(t.Context(), &datapathv1alpha1.CreateEndpointRequest{Attachment: vanishedAtt("a"), NetnsPath: path})
			created <- err
		}()
		<-in
		got := make(chan bool, 1)
		go func() { got <- w.m.removeIfVanished(t.Context(), HostName(vanishedAtt("a"))) }()
		select {
		case r := <-got:
			t.Fatalf("removeIfVanished = %v while the ADD held the endpoint; want it to wait", r)
		case <-time.After(100 * time.Millisecond):
		}
		close(out)
		if err := <-created; err != nil {
			t.Fatalf("CreateEndpoint: %v", err)
		}
		if <-got {
			t.Error("the endpoint being created was removed")
		}
		ep, err := w.m.GetEndpoint(vanishedAtt("a"))
		if err != nil {
			t.Fatalf("the created endpoint is gone: %v", err)
		}
		w.wantKept(ep)
	})
}

// until waits for cond, failing the test with what after 5 s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testpoll.Until(t, 5*time.Second, func() error {
		if !cond() {
			return fmt.Errorf("waiting for %s", what)
		}
		return nil
	})
}
