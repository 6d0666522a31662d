package datapath

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
)

// TestLBManyFrontendsChurn is TestLBNeverHalfWritten across many
// frontends: 64 of them (IPv4 and IPv6, TCP and UDP) switch between two
// backend sets of different sizes, and IDs, in every write, some calls
// switching all of them in one batch and others half at a time, while new
// connections go to every frontend in turn. Each must reach a backend of
// its own frontend's sets: never a slot of another frontend, of a set half
// written, or none at all.
func TestLBManyFrontendsChurn(t *testing.T) {
	r := newRunner(t)
	must(t, "config", r.objs.SetConfig(tunnelCfg))
	const n = 64
	type fe struct {
		frontend Frontend
		client   netip.Addr
		backend  netip.Addr
		sets     [2][]Backend
	}
	fes := make([]fe, n)
	for i := range fes {
		f := &fes[i]
		f.frontend, f.client, f.backend = frontend(vip, uint16(1000+i), protoTCP), podA.ip, podB.ip
		if i%2 == 1 {
			f.frontend.Addr, f.client, f.backend = vip6, podA6.ip, podB6.ip
		}
		if i%4 >= 2 {
			f.frontend.Proto = protoUDP
		}
		// Set 0: ports +0, +1; set 1: +2 to +6.
		for k := range 7 {
			b := Backend{Addr: f.backend, Port: uint16(10000 + 10*i + k), Local: true}
			f.sets[min(k/2, 1)] = append(f.sets[min(k/2, 1)], b)
		}
	}
	entries := func(round, from, to int) []ServiceEntry {
		var es []ServiceEntry
		for i := from; i < to; i++ {
			es = append(es, ServiceEntry{Frontend: fes[i].frontend, Service: Service{
				ID: uint32(1 + i + n*(round%2)), Active: fes[i].sets[round%2],
			}})
		}
		return es
	}
	putServices(t, r.objs, entries(0, 0, n)...)

	const minRounds, minPackets = 200, 20000
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		rounds int
		stop   = make(chan struct{})
		errc   = make(chan error, 1)
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for round := 1; ; round++ {
			select {
			case <-stop:
				return
			default:
			}
			var err error
			if round%3 == 0 {
				// Half at a time: the halves hold different generations
				// and IDs of the same round for a moment.
				if err = r.objs.PutServices(entries(round, 0, n/2)); err == nil {
					err = r.objs.PutServices(entries(round, n/2, n))
				}
			} else {
				err = r.objs.PutServices(entries(round, 0, n))
			}
			if err != nil {
				errc <- err
				return
			}
			mu.Lock()
			rounds++
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })

	packets := 0
	err := inNetNS(r.ns, func() error {
		for ; ; packets++ {
			mu.Lock()
			done := rounds >= minRounds && packets >= minPackets
			mu.Unlock()
			if done {
				return nil
			}
			select {
			case err := <-errc:
				return err
			default:
			}
			f := fes[packets%n]
			sport := uint16(1024 + packets/n%60000)
			in := l4Frame(ap(f.client, sport), ap(f.frontend.Addr, f.frontend.Port), f.frontend.Proto, tcpSYN, false)
			opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
			verdict, err := r.objs.FromPod().Run(&opts)
			if err != nil {
				return err
			}
			if verdict != verdictRedirect {
				return fmt.Errorf("packet %d to %s: verdict %#x (%v)", packets, f.frontend, verdict, r.stats(t).Map())
			}
			lo := uint16(10000 + 10*(packets%n))
			if _, dst := tuple(opts.DataOut[:len(in)]); dst.Addr() != f.backend || dst.Port() < lo || dst.Port() > lo+6 {
				return fmt.Errorf("packet %d to %s went to %s", packets, f.frontend, dst)
			}
			// Keep the tracker small: every packet is a new connection.
			if packets%2000 == 1999 {
				if _, err := r.objs.DeleteFlows(func(Flow) bool { return true }); err != nil {
					return err
				}
			}
		}
	})
	must(t, "run", err)
	if s := r.stats(t); s.DropNoBackend != 0 || s.DropNAT != 0 || s.DropCTFull != 0 {
		t.Errorf("drops: %v", s.Map())
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d packets over %d rounds of %d frontends", packets, rounds, n)
}
