package nlfake

import (
	"context"
	"slices"
	"sync"
)

// watcher is one LinkDeletions subscription: names queue here (the fake's
// lock is held when a link goes, so pushing never blocks) and a goroutine
// hands them on in order.
type watcher struct {
	mu    sync.Mutex
	names []string
	wake  chan struct{}
}

func (w *watcher) push(name string) {
	w.mu.Lock()
	w.names = append(w.names, name)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *watcher) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	names := w.names
	w.names = nil
	return names
}

// LinkDeletions delivers the names of links deleted in the node's namespace
// from now on, however they go (a handle's LinkDel, DeleteLink, the other
// end of a veth whose namespace is deleted), until ctx ends; then the
// channel is closed. Like the kernel, it reports each deleted link once. It
// can be failed as op "LinkDeletions" in NodeNS.
func (f *Fake) LinkDeletions(ctx context.Context) (<-chan string, error) {
	f.mu.Lock()
	if err := f.call(NodeNS, "LinkDeletions"); err != nil {
		f.mu.Unlock()
		return nil, err
	}
	ns := f.byPath[NodeNS]
	w := &watcher{wake: make(chan struct{}, 1)}
	ns.watchers = append(ns.watchers, w)
	f.mu.Unlock()
	out := make(chan string)
	go func() {
		defer close(out)
		defer func() {
			f.mu.Lock()
			ns.watchers = slices.DeleteFunc(ns.watchers, func(x *watcher) bool { return x == w })
			f.mu.Unlock()
		}()
		for {
			for _, name := range w.take() {
				select {
				case out <- name:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-w.wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
