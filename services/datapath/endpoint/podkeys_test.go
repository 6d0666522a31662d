package endpoint

import "testing"

func TestPodKeys(t *testing.T) {
	var p podKeys
	a := p.acquire("pod-a", "lxca0", 0)
	if again := p.acquire("pod-a", "lxca1", 0); again != a {
		t.Fatalf("second attachment of pod-a got key %d, want pod-a's %d", again, a)
	}
	b := p.acquire("pod-b", "lxcb0", a) // a recorded key another pod holds
	if b == a || b == 0 {
		t.Fatalf("pod-b got key %d; want a new one (pod-a holds %d)", b, a)
	}
	p.release("pod-a", "lxca0")
	if c := p.acquire("pod-c", "lxcc0", a); c == a {
		t.Fatalf("pod-c took key %d while pod-a's second attachment holds it", c)
	}
	p.release("pod-a", "lxca1")
	p.release("pod-a", "lxca1") // twice: no-op
	p.release("pod-x", "lxcx0") // never acquired: no-op
	if d := p.acquire("pod-d", "lxcd0", a); d != a {
		t.Fatalf("pod-d asked for the free key %d and got %d", a, d)
	}
	// New keys skip used ones, also across the wrap-around.
	p.last = ^uint32(0) - 1
	seen := map[uint32]string{}
	for _, id := range []string{"w1", "w2", "w3", "w4"} {
		k := p.acquire(id, "lxc"+id, 0)
		if k == 0 {
			t.Fatalf("%s got key 0", id)
		}
		if other, ok := seen[k]; ok {
			t.Fatalf("%s and %s share key %d", id, other, k)
		}
		seen[k] = id
		for _, held := range []uint32{a, b} {
			if k == held {
				t.Fatalf("%s got key %d, which another pod holds", id, k)
			}
		}
	}
}
