package nltest

import (
	"context"
	"testing"
	"time"

	"github.com/axon-cni/axon/services/datapath/nl"
)

// linkDeletions: a subscription reports each link deleted in the node's
// namespace once, by name, whoever deletes it — a handle there, or the
// other end of its veth going in a pod's namespace — and nothing of the
// pod's namespace; it closes when its context ends.
func linkDeletions(t *testing.T, h *host) {
	w, ok := h.env.NS.(nl.LinkWatcher)
	if !ok {
		t.Fatalf("%T is no nl.LinkWatcher", h.env.NS)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	deleted, err := w.LinkDeletions(ctx)
	if err != nil {
		t.Fatalf("LinkDeletions: %v", err)
	}
	next := func(want string) {
		t.Helper()
		select {
		case got := <-deleted:
			if got != want {
				t.Errorf("deletion of %q reported, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no deletion reported, want %q", want)
		}
	}
	pod := h.pod(t)
	hl, _ := h.veth(t, pod)
	if err := h.node.LinkDel(hl); err != nil {
		t.Fatal(err)
	}
	next("h0")
	_, pl := h.veth(t, pod)
	if err := pod.Handle.LinkDel(pl); err != nil {
		t.Fatal(err)
	}
	next("h0") // the host end went with the pod's
	select {
	case got := <-deleted:
		t.Errorf("unexpected deletion of %q reported", got)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	select {
	case _, open := <-deleted:
		for open {
			_, open = <-deleted
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the subscription did not end with its context")
	}
}
