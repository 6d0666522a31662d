package endpoint

import "sync"

// attachmentLocks serializes the operations on one attachment (its host
// interface name) while different pods are wired in parallel.
type attachmentLocks struct {
	mu    sync.Mutex
	locks map[string]*refLock
}

type refLock struct {
	sync.Mutex
	refs int
}

// lock locks name and returns its unlock.
func (l *attachmentLocks) lock(name string) func() {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*refLock{}
	}
	rl, ok := l.locks[name]
	if !ok {
		rl = &refLock{}
		l.locks[name] = rl
	}
	rl.refs++
	l.mu.Unlock()
	rl.Lock()
	return func() {
		rl.Unlock()
		l.mu.Lock()
		if rl.refs--; rl.refs == 0 {
			delete(l.locks, name)
		}
		l.mu.Unlock()
	}
}
