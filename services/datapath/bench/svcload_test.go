package bench

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The service benchmark's pods and load: a client pod and a few backend
// pods, each backend answering every connection with one byte and closing
// it, and a client that opens new connections to a service address.

// svcPods is where a service implementation's traffic runs: the client
// pod's namespace and the backends' addresses (one server each, on
// backendPort).
type svcPods struct {
	Client   string // namespace path of the client pod
	Backends []netip.Addr
	// node is the plain node namespace the netfilter rules go into; nil
	// for Axon (its node is the cluster's).
	node *ns
	// owned are the plain topology's namespaces, closed with it.
	owned []*ns
}

// Addresses of the plain service topology (its own namespaces: they clash
// with nothing) and of the services.
var (
	svcRouter    = netip.MustParseAddr("10.95.0.1")
	svcClient    = netip.MustParseAddr("10.95.0.10")
	svcBackend0  = netip.MustParseAddr("10.95.0.20")
	svcVIPBase   = netip.MustParseAddr("10.112.0.1") // in 10.112.0.0/12: one VIP per service
	svcUnusedNet = netip.MustParseAddr("10.128.0.1") // in 10.128.0.0/10: backends of the other services
)

const (
	svcPort     = 80   // every service's port
	backendPort = 8080 // every backend's port
	svcBackends = 3    // backends per service
	svcPodMTU   = 1500 // MTU of the plain pods
)

// svcIOTimeout bounds every connect and read: a connection that hangs
// fails the run instead of stalling it.
func svcIOTimeout() *unix.Timeval { return &unix.Timeval{Sec: 2} }

// plainServicePods builds the plain topology: a node namespace with
// forwarding on, a client pod and svcBackends backend pods wired like
// Axon's endpoints (see plainPod), each backend running a server.
func plainServicePods(srv *servers) (*svcPods, error) {
	node, err := plainNode(svcRouter, 0)
	if err != nil {
		return nil, err
	}
	client, err := plainPod(node, "lxcsvccli", svcClient, svcRouter, svcPodMTU, 0)
	if err != nil {
		return nil, err
	}
	// The whole ephemeral port range: the connections/s runs never wait
	// for a port.
	if err := client.sysctl("net.ipv4.ip_local_port_range", "1024 65535"); err != nil {
		return nil, err
	}
	p := &svcPods{Client: client.path, node: node, owned: []*ns{node, client}}
	for i := range svcBackends {
		ip := addrAdd(svcBackend0, uint32(i))
		pod, err := plainPod(node, fmt.Sprintf("lxcsvcb%d", i), ip, svcRouter, svcPodMTU, 0)
		if err != nil {
			return nil, err
		}
		p.owned = append(p.owned, pod)
		if err := srv.start(pod.path, netip.AddrPortFrom(ip, backendPort)); err != nil {
			return nil, err
		}
		p.Backends = append(p.Backends, ip)
	}
	return p, nil
}

// addrAdd returns a + n (IPv4).
func addrAdd(a netip.Addr, n uint32) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// servers are the backends' one-byte servers: each is a thread in its
// pod's namespace, pinned to benchCPU, doing blocking accept, read, write,
// close.
type servers struct {
	mu    sync.Mutex
	lfds  []int
	wg    sync.WaitGroup
	count atomic.Int64 // connections answered
}

// start listens on addr inside the namespace at nsPath and serves until
// stop.
func (s *servers) start(nsPath string, addr netip.AddrPort) error {
	var lfd int
	if err := inNS(nsPath, func() (err error) {
		if lfd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		_ = unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if err := unix.Bind(lfd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
			_ = unix.Close(lfd)
			return err
		}
		if err := unix.Listen(lfd, 4096); err != nil {
			_ = unix.Close(lfd)
			return err
		}
		return nil
	}); err != nil {
		return fmt.Errorf("server on %s: %w", addr, err)
	}
	s.mu.Lock()
	s.lfds = append(s.lfds, lfd)
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// Never unlocked: the thread's affinity changes, it dies with the
		// goroutine.
		runtime.LockOSThread()
		pinThread()
		buf := make([]byte, 1)
		for {
			cfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
				continue
			}
			if err != nil {
				return // stop shut the listener down
			}
			_ = unix.SetsockoptTimeval(cfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, svcIOTimeout())
			if n, err := readFull(cfd, buf); n == 1 && err == nil {
				if writeFull(cfd, buf) == nil {
					s.count.Add(1)
				}
			}
			_ = unix.Close(cfd)
		}
	}()
	return nil
}

// stop shuts every listener down and waits for the server threads.
func (s *servers) stop() {
	s.mu.Lock()
	for _, fd := range s.lfds {
		_ = unix.Shutdown(fd, unix.SHUT_RDWR) // wakes the blocked accept
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	for _, fd := range s.lfds {
		_ = unix.Close(fd)
	}
	s.lfds = nil
	s.mu.Unlock()
}

// connectOnce opens a TCP connection to dst from the calling thread's
// namespace, sends one byte, reads the one-byte answer and the server's
// close, and closes: one new connection, as a client of a service makes
// it. The server closes first, so TIME_WAIT stays on its side and the
// client's ports are free at once.
func connectOnce(dst *unix.SockaddrInet4) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// The send timeout bounds connect, the receive timeout the reads.
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, svcIOTimeout())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, svcIOTimeout())
	for {
		err = unix.Connect(fd, dst)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	buf := []byte{'x'}
	if err := writeFull(fd, buf); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if n, err := readFull(fd, buf); n != 1 || err != nil {
		return fmt.Errorf("read answer: %d bytes, %v", n, err)
	}
	if n, err := readFull(fd, buf); n != 0 || err != nil {
		return fmt.Errorf("read close: %d bytes, %v", n, err)
	}
	return nil
}

// inClientThread runs fn on a thread locked into the namespace at nsPath
// and pinned to benchCPU, then lets the thread die with its goroutine
// (its affinity and namespace are changed for good).
func inClientThread(nsPath string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		target, err := netns.GetFromPath(nsPath)
		if err != nil {
			done <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			done <- err
			return
		}
		pinThread()
		done <- fn()
	}()
	return <-done
}

func sockaddr(a netip.AddrPort) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}
}

// checkConnect makes one connection to dst from the client pod.
func checkConnect(client string, dst netip.AddrPort) error {
	return inClientThread(client, func() error { return connectOnce(sockaddr(dst)) })
}

// connLatency makes n sequential connections (after warm warm-up ones)
// and returns their times.
func connLatency(client string, dst netip.AddrPort, warm, n int) (latencies, error) {
	sa := sockaddr(dst)
	lat := make([]time.Duration, 0, n)
	err := inClientThread(client, func() error {
		for i := range warm + n {
			t0 := time.Now()
			if err := connectOnce(sa); err != nil {
				return fmt.Errorf("connection %d to %s: %w", i, dst, err)
			}
			if i >= warm {
				lat = append(lat, time.Since(t0))
			}
		}
		return nil
	})
	if err != nil {
		return latencies{}, err
	}
	slices.Sort(lat)
	return summarize(lat), nil
}

// connRate opens connections to dst from workers threads for dur and
// returns the rate of completed ones.
func connRate(client string, dst netip.AddrPort, workers int, dur time.Duration) (float64, error) {
	sa := sockaddr(dst)
	var (
		total atomic.Int64
		wg    sync.WaitGroup
		errs  = make([]error, workers)
	)
	start := time.Now()
	end := start.Add(dur)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = inClientThread(client, func() error {
				for time.Now().Before(end) {
					if err := connectOnce(sa); err != nil {
						return fmt.Errorf("worker %d to %s: %w", w, dst, err)
					}
					total.Add(1)
				}
				return nil
			})
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return float64(total.Load()) / elapsed.Seconds(), nil
}
