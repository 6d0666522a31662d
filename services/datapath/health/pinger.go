package health

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// pinger sends ICMP echo requests on one raw socket and hands each reply to
// the probe waiting for it (by sequence number and source): one socket per
// probe round, not per probe, since every raw ICMP socket gets a copy of
// every ICMP packet the node receives.
type pinger struct {
	c       *icmp.PacketConn
	id      int
	mu      sync.Mutex
	seq     int
	waiting map[int]pingWait
}

type pingWait struct {
	from netip.Addr
	done chan struct{}
}

func newPinger() (*pinger, error) {
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return nil, err
	}
	p := &pinger{c: c, id: rand.IntN(0xffff), waiting: map[int]pingWait{}}
	go p.read()
	return p, nil
}

// read dispatches echo replies until the socket is closed.
func (p *pinger) read() {
	buf := make([]byte, 1500)
	for {
		n, from, err := p.c.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := icmp.ParseMessage(1 /* ICMP for IPv4 */, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		src, _ := from.(*net.IPAddr)
		if !ok || e.ID != p.id || src == nil {
			continue
		}
		addr, _ := netip.AddrFromSlice(src.IP)
		p.mu.Lock()
		w, ok := p.waiting[e.Seq]
		if ok && w.from == addr.Unmap() {
			delete(p.waiting, e.Seq)
			close(w.done)
		}
		p.mu.Unlock()
	}
}

func (p *pinger) close() { _ = p.c.Close() }

// ping sends one echo request to ip and waits up to a second for its reply:
// the peer's kernel answers, whether or not its agent runs.
func (p *pinger) ping(ctx context.Context, ip netip.Addr) (time.Duration, error) {
	if !ip.Is4() {
		return 0, errors.New("no IPv4 address known")
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.seq = (p.seq + 1) & 0xffff
	seq := p.seq
	p.waiting[seq] = pingWait{from: ip, done: done}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.waiting, seq)
		p.mu.Unlock()
	}()
	req, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: seq, Data: []byte("axon-health")}}).Marshal(nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := p.c.WriteTo(req, &net.IPAddr{IP: ip.AsSlice()}); err != nil {
		return 0, err
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-done:
		return time.Since(start), nil
	case <-t.C:
		return 0, fmt.Errorf("no echo reply from %s", ip)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
