package etcdtest

import (
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"time"
)

// proxy relays TCP connections from a fixed loopback address, which a
// member advertises, to wherever the member's current instance listens.
//
// It is how Stop cuts a member off as a crash would: every connection to
// it, from clients and from peers, closes at once, and new ones close as
// soon as they are accepted. An embedded etcd cannot do that itself: after
// its raft has stopped its listeners stay open for up to a second, and
// requests reaching it then may hang for seconds. And since the proxy holds
// the advertised port for the whole test, a restart never finds it taken;
// the instance behind it listens on fresh ports.
type proxy struct {
	l net.Listener

	mu     sync.Mutex
	target string // host:port of the instance; "" while it is down
	closed bool
	conns  map[net.Conn]struct{}

	wg sync.WaitGroup // the accept loop and the relays
}

// newProxy listens on a free 127.0.0.1 port; the proxy starts down.
func newProxy() (*proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{l: l, conns: make(map[net.Conn]struct{})}
	p.wg.Go(p.serve)
	return p, nil
}

// url is the address the member advertises.
func (p *proxy) url() *url.URL {
	return &url.URL{Scheme: "http", Host: p.l.Addr().String()}
}

// up relays new connections to target.
func (p *proxy) up(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// down closes every relayed connection and refuses new ones until up.
func (p *proxy) down() {
	p.mu.Lock()
	p.target = ""
	conns := p.conns
	p.conns = make(map[net.Conn]struct{})
	p.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
}

// close stops the proxy and waits for its goroutines.
func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.l.Close()
	p.down()
	p.wg.Wait()
}

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // out of file descriptors, say
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.mu.Lock()
		target := p.target
		if target == "" || p.closed {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.relay(c, target)
	}
}

// relay copies between c and a new connection to target until either
// side closes or the proxy goes down.
func (p *proxy) relay(c net.Conn, target string) {
	defer p.wg.Done()
	defer p.forget(c)
	u, err := net.DialTimeout("tcp", target, time.Second)
	if err != nil {
		return
	}
	defer p.forget(u)
	p.mu.Lock()
	_, open := p.conns[c] // gone if the proxy went down meanwhile
	if open {
		p.conns[u] = struct{}{}
	}
	p.mu.Unlock()
	if !open {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = u.Close()
	<-done
}

// forget closes c and drops it from the relayed connections.
func (p *proxy) forget(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}
