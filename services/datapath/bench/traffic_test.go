package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// endpointPair is a client and a server pod for traffic tests.
type endpointPair struct {
	ClientNS, ServerNS string // namespace paths
	ServerIP           string
}

// streamResult is one iperf3 run.
type streamResult struct {
	Gbps        float64
	Retransmits int
	SenderCPU   float64 // iperf3's host_total, % of one CPU
	ReceiverCPU float64 // remote_total
}

// iperf3 runs a single-stream TCP test of dur (after a one-second omitted
// warm-up) from the client pod to an iperf3 server in the server pod.
func iperf3(ps *procs, p endpointPair, dur time.Duration) (streamResult, error) {
	srvArgs := []string{"-s", "-1", "--forceflush", "-B", p.ServerIP, "-p", "5201"}
	cliArgs := []string{"-c", p.ServerIP, "-p", "5201", "-t", fmt.Sprint(int(dur.Round(time.Second) / time.Second)), "-O", "1", "-J"}
	if runtime.NumCPU() >= 2 {
		// Client and server share one CPU on every path (see pinThread).
		srvArgs = append(srvArgs, "-A", fmt.Sprint(benchCPU))
		cliArgs = append(cliArgs, "-A", fmt.Sprint(benchCPU))
	}
	srv := nsenter(p.ServerNS, "iperf3", srvArgs...)
	out, err := srv.StdoutPipe()
	if err != nil {
		return streamResult{}, err
	}
	if err := srv.Start(); err != nil {
		return streamResult{}, err
	}
	ps.add(srv)
	srvDone := make(chan error, 1)
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.Contains(sc.Text(), "listening") {
				close(listening)
				signalled = true
			}
		}
		srvDone <- srv.Wait()
	}()
	defer func() {
		_ = srv.Process.Kill()
		<-srvDone
	}()
	select {
	case <-listening:
	case err := <-srvDone:
		srvDone <- err
		return streamResult{}, fmt.Errorf("iperf3 server exited: %v", err)
	case <-time.After(5 * time.Second):
		return streamResult{}, errors.New("iperf3 server did not start listening")
	}
	var raw []byte
	cmd := nsenter(p.ClientNS, "iperf3", cliArgs...)
	ps.add(cmd)
	raw, err = cmd.Output()
	var rep struct {
		Error string `json:"error"`
		End   struct {
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			CPU struct {
				Host   float64 `json:"host_total"`
				Remote float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal(raw, &rep); jerr != nil || rep.Error != "" || err != nil {
		return streamResult{}, fmt.Errorf("iperf3 client to %s: %v %v %s", p.ServerIP, err, jerr, rep.Error)
	}
	return streamResult{
		Gbps: rep.End.SumReceived.BitsPerSecond / 1e9, Retransmits: rep.End.SumSent.Retransmits,
		SenderCPU: rep.End.CPU.Host, ReceiverCPU: rep.End.CPU.Remote,
	}, nil
}

// rrResult is one request/response run.
type rrResult struct {
	Lat latencies
	TPS float64 // transactions per second
}

// pingPong measures 1-byte TCP request/response round trips on one
// connection for dur (after a 200 ms warm-up), client and server each on
// its own OS thread doing blocking reads and writes (no Go netpoller in
// the loop), like netperf's TCP_RR.
func pingPong(p endpointPair, port int, dur time.Duration) (rrResult, error) {
	ip, err := netip.ParseAddr(p.ServerIP)
	if err != nil || !ip.Is4() {
		return rrResult{}, fmt.Errorf("server address %q: want IPv4", p.ServerIP)
	}
	sa := &unix.SockaddrInet4{Port: port, Addr: ip.As4()}
	var lfd int
	if err := inNS(p.ServerNS, func() (err error) {
		if lfd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		_ = unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if err := unix.Bind(lfd, sa); err != nil {
			return err
		}
		return unix.Listen(lfd, 1)
	}); err != nil {
		return rrResult{}, fmt.Errorf("listen in server pod: %w", err)
	}
	defer unix.Close(lfd)
	srvDone := make(chan error, 1)
	go func() {
		// The thread stays locked (and dies with the goroutine): its CPU
		// affinity is changed.
		runtime.LockOSThread()
		pinThread()
		cfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if err != nil {
			srvDone <- err
			return
		}
		defer unix.Close(cfd)
		_ = unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		buf := make([]byte, 1)
		for {
			if n, err := readFull(cfd, buf); n == 0 || err != nil {
				srvDone <- nil // client closed
				return
			}
			if err := writeFull(cfd, buf); err != nil {
				srvDone <- err
				return
			}
		}
	}()
	var cfd int
	if err := inNS(p.ClientNS, func() (err error) {
		if cfd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		_ = unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		return unix.Connect(cfd, sa)
	}); err != nil {
		_ = unix.Shutdown(lfd, unix.SHUT_RDWR) // wakes the blocked accept
		<-srvDone
		if cfd > 0 {
			_ = unix.Close(cfd)
		}
		return rrResult{}, fmt.Errorf("connect from client pod: %w", err)
	}
	type clientResult struct {
		lat []time.Duration
		err error
	}
	cres := make(chan clientResult, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see the server
		pinThread()
		lat, err := clientLoop(cfd, dur)
		cres <- clientResult{lat, err}
	}()
	c := <-cres
	lat, err := c.lat, c.err
	_ = unix.Close(cfd)
	if serr := <-srvDone; err == nil && serr != nil {
		err = serr
	}
	if err != nil {
		return rrResult{}, err
	}
	var total time.Duration
	for _, d := range lat {
		total += d
	}
	slices.Sort(lat)
	return rrResult{Lat: summarize(lat), TPS: float64(len(lat)) / total.Seconds()}, nil
}

// benchCPU is the CPU both ends of every traffic test run on. On this kind
// of VM, client and server on different vCPUs make the numbers depend on
// cross-CPU wake-ups (about 60 µs per round trip) and on drops in the
// veth backlog (tens of thousands of retransmits per iperf3 run); on one
// CPU the round trip and the stream rate measure the CPU cost of the whole
// path, which is what differs between Axon and the kernel.
const benchCPU = 1

// pinThread binds the calling (locked) thread to benchCPU.
func pinThread() {
	if runtime.NumCPU() < 2 {
		return
	}
	var set unix.CPUSet
	set.Set(benchCPU)
	_ = unix.SchedSetaffinity(0, &set)
}

// clientLoop sends 1-byte requests and waits for the replies for dur after
// a 200 ms warm-up, returning each round trip's time.
func clientLoop(cfd int, dur time.Duration) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, 1<<17)
	buf := []byte{'x'}
	warm := time.Now().Add(200 * time.Millisecond)
	var end time.Time
	for {
		t0 := time.Now()
		if err := writeFull(cfd, buf); err != nil {
			return nil, err
		}
		if n, err := readFull(cfd, buf); n == 0 || err != nil {
			return nil, fmt.Errorf("read reply: %v", err)
		}
		t1 := time.Now()
		switch {
		case t1.Before(warm):
		case end.IsZero():
			end = t1.Add(dur)
		case t1.After(end):
			return lat, nil
		default:
			lat = append(lat, t1.Sub(t0))
		}
	}
}

func readFull(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return n, err
	}
}

func writeFull(fd int, b []byte) error {
	for {
		_, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err
	}
}

// scenario is Axon and its plain-kernel counterpart on one kind of path.
type scenario struct {
	Name     string // "same node", ...
	Axon     string // how Axon forwards
	Plain    string // what it is compared with
	axon     endpointPair
	plain    endpointPair
	AxonMTU  int
	PlainMTU int
	// Results, one per round.
	AxonStream, PlainStream []streamResult
	AxonRR, PlainRR         []rrResult
}

// runScenario measures both sides in alternating order, rounds times.
func runScenario(ps *procs, s *scenario, rounds int, streamDur, rrDur time.Duration) error {
	for r := range rounds {
		order := []bool{true, false}
		if r%2 == 1 {
			order = []bool{false, true}
		}
		for _, axon := range order {
			p, st := s.plain, &s.PlainStream
			if axon {
				p, st = s.axon, &s.AxonStream
			}
			res, err := iperf3(ps, p, streamDur)
			if err != nil {
				return fmt.Errorf("%s (%s): %w", s.Name, map[bool]string{true: "Axon", false: "plain"}[axon], err)
			}
			*st = append(*st, res)
		}
		for _, axon := range order {
			p, rr := s.plain, &s.PlainRR
			if axon {
				p, rr = s.axon, &s.AxonRR
			}
			res, err := pingPong(p, 7000+r, rrDur)
			if err != nil {
				return fmt.Errorf("%s RR (%s): %w", s.Name, map[bool]string{true: "Axon", false: "plain"}[axon], err)
			}
			*rr = append(*rr, res)
		}
	}
	return nil
}

func medianGbps(rs []streamResult) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = r.Gbps
	}
	return medianF(v)
}

func medianF(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// medianRR picks the round with the median p50.
func medianRR(rs []rrResult) rrResult {
	if len(rs) == 0 {
		return rrResult{}
	}
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b rrResult) int { return int(a.Lat.P50 - b.Lat.P50) })
	return rs[len(rs)/2]
}

// linkMTU reads the MTU of ifname inside the namespace at path.
func linkMTU(path, ifname string) (int, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return 0, err
	}
	defer nl.Close()
	l, err := nl.LinkByName(ifname)
	if err != nil {
		return 0, err
	}
	return l.Attrs().MTU, nil
}

// The BIG TCP comparison's setups, and the GSO size both Axon (with
// --big-tcp) and the plain baseline given the same sizes use.
const (
	bigGSO        = 196608
	labelAxonBig  = "Axon --big-tcp"
	labelPlain    = "plain, kernel defaults (64 KiB)"
	labelPlainBig = "plain, 192 KiB GSO"
)

// streamVariant is one side of a stream-only comparison.
type streamVariant struct {
	Label   string
	pair    endpointPair
	Streams []streamResult
}

// streamScenario compares the stream throughput of several setups of one
// path (the BIG TCP comparison: request/response does not depend on the
// GSO size).
type streamScenario struct {
	Name     string
	MTU      int
	Variants []*streamVariant
}

func (s *streamScenario) variant(label string) *streamVariant {
	for _, v := range s.Variants {
		if v.Label == label {
			return v
		}
	}
	return nil
}

// runStreams measures every variant once per round, in an order that
// rotates from round to round.
func runStreams(ps *procs, s *streamScenario, rounds int, streamDur time.Duration) error {
	for r := range rounds {
		for i := range s.Variants {
			v := s.Variants[(i+r)%len(s.Variants)]
			res, err := iperf3(ps, v.pair, streamDur)
			if err != nil {
				return fmt.Errorf("%s (%s): %w", s.Name, v.Label, err)
			}
			v.Streams = append(v.Streams, res)
		}
	}
	return nil
}
