package endpoint

import "sync"

// podKeys hands out the keys that tell pods apart in the device map: the
// attachments of one pod (one container ID) share a key, no two pods on
// the node ever do — the programs let a pod send from any address of the
// pod its veth belongs to, so a shared key would let one pod use another's
// addresses. Keys are kept in the endpoint records and taken back at
// start-up.
type podKeys struct {
	mu    sync.Mutex
	byPod map[string]*podKeyUse // container ID → key
	used  map[uint32]bool
	last  uint32 // the last key handed out; the next new one follows it
}

// podKeyUse is a pod's key and the host-side veths of its attachments.
type podKeyUse struct {
	key   uint32
	hosts map[string]bool
}

// acquire returns the key of containerID's pod for its attachment on
// hostName. A pod seen for the first time gets want when want is not 0 and
// free (a recorded key, at start-up), else a new key.
func (p *podKeys) acquire(containerID, hostName string, want uint32) uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byPod == nil {
		p.byPod, p.used = map[string]*podKeyUse{}, map[uint32]bool{}
	}
	u := p.byPod[containerID]
	if u == nil {
		key := want
		if key == 0 || p.used[key] {
			// 2^32-1 keys for at most AXON_MAX_ENDPOINTS pods: a free
			// one is always near.
			for key = p.last + 1; key == 0 || p.used[key]; key++ {
			}
			p.last = key
		}
		u = &podKeyUse{key: key, hosts: map[string]bool{}}
		p.byPod[containerID] = u
		p.used[key] = true
	}
	u.hosts[hostName] = true
	return u.key
}

// release drops hostName's attachment of containerID's pod; the pod's key
// is free once none is left. Releasing what was never acquired is a no-op.
func (p *podKeys) release(containerID, hostName string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	u := p.byPod[containerID]
	if u == nil {
		return
	}
	delete(u.hosts, hostName)
	if len(u.hosts) == 0 {
		delete(p.byPod, containerID)
		delete(p.used, u.key)
	}
}
