// Package localcluster runs the whole Axon system on one machine: an
// embedded etcd and every service binary as a child process, each checked
// healthy before the next starts. It is the engine of the axon-local program
// (`make run`), and the harness the end-to-end tests (services/e2e) and the
// datapath benchmarks (services/datapath/bench) start their clusters with.
package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/axon-cni/axon/services/internal/daemon"
	"github.com/axon-cni/axon/services/internal/embedetcd"
	"github.com/axon-cni/axon/services/internal/localsys"
)

// Config says where the local system keeps its state and finds its binaries.
type Config struct {
	// StateDir holds etcd's data and the services' sockets.
	StateDir string
	// BinDir holds the axon-* binaries.
	BinDir string
	// EtcdClientAddr and EtcdPeerAddr are the embedded etcd's listen addresses.
	EtcdClientAddr, EtcdPeerAddr string
	// Host is the address every service listens on.
	Host string
	// PortBase numbers the services' ports: gRPC on PortBase+1 (ipam),
	// +3 (lbipam), +4 (policy), +5 (operator); metrics 200 above each. 0
	// lets the kernel choose free ports (tests).
	PortBase int
	// ReadyTimeout bounds the wait for each service to report SERVING (or,
	// for one whose API is not implemented yet, to answer health at all).
	ReadyTimeout time.Duration
	// StopTimeout bounds each service's graceful stop before it is killed.
	StopTimeout time.Duration
	// Nodes is how many simulated nodes (network namespaces, each with its
	// own axon-datapath) to run; they need root.
	Nodes int
	// NetnsPrefix starts the names of the namespaces the run creates.
	NetnsPrefix string
	// PodCIDR is the default pool's IPv4 CIDR.
	PodCIDR string
	// PodCIDR6, if set, makes the default pool dual stack.
	PodCIDR6 string
	// DatapathArgs are extra flags for every axon-datapath.
	DatapathArgs []string
	// DemoPods is how many pods per node to wire through axon-cni.
	DemoPods int
	// UnderlayMTU is the MTU of the simulated nodes' underlay links; 0
	// keeps the kernel's default (1500).
	UnderlayMTU int
	// DatapathRestart says how Wait restarts a datapath that exits
	// unexpectedly; the zero value takes the defaults of RestartPolicy.
	DatapathRestart RestartPolicy
}

// RestartPolicy is how a crashed datapath is restarted, as the kubelet
// restarts a DaemonSet's pod: after a delay that doubles with each crash
// that follows a short run (crash loop backoff), and not at all after too
// many of those in a row.
type RestartPolicy struct {
	// Backoff is the delay before the first restart; 0 means 1s.
	Backoff time.Duration
	// MaxBackoff caps the delay; 0 means 30s.
	MaxBackoff time.Duration
	// MinRun is how long a datapath must have run before it crashed for
	// the crash to count as a fresh one, starting the delay and the count
	// again; 0 means one minute.
	MinRun time.Duration
	// MaxFastCrashes is how many crashes in a row, each after a run
	// shorter than MinRun, are restarted; the next one stops the whole
	// run. 0 means 5.
	MaxFastCrashes int
}

// withDefaults fills the policy's zero fields.
func (p RestartPolicy) withDefaults() RestartPolicy {
	if p.Backoff <= 0 {
		p.Backoff = time.Second
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = 30 * time.Second
	}
	if p.MinRun <= 0 {
		p.MinRun = time.Minute
	}
	if p.MaxFastCrashes <= 0 {
		p.MaxFastCrashes = 5
	}
	return p
}

// Component is one service process of the local system.
type Component struct {
	// Name is the service's short name; its binary is axon-<Name>.
	Name string
	// Target is the gRPC address clients dial (host:port or unix://path).
	Target string
	// MetricsAddr is the address of its /metrics endpoint.
	MetricsAddr string
	// Args are its command-line flags.
	Args []string
	// Netns, if set, is the network namespace path it runs in.
	Netns string
	// Label names it in logs (default Name).
	Label string
	// Unimplemented marks a service whose API is not written yet: it runs,
	// but answers every RPC with UNIMPLEMENTED and reports NOT_SERVING by
	// design, so Start waits only for its health to answer.
	Unimplemented bool
	// files are listening sockets the process inherits as descriptors 3,
	// 4, ... (the fd:N addresses in Args); starting it closes our copies.
	files []*os.File
}

func (c Component) label() string {
	if c.Label != "" {
		return c.Label
	}
	return c.Name
}

// controlService is a control-plane service of the local system.
type controlService struct {
	name          string
	port          int // offset from Config.PortBase
	useEtcd       bool
	unimplemented bool
}

// controlPlane returns the control-plane services in start order.
func controlPlane() []controlService {
	return []controlService{
		{"ipam", 1, true, false},
		{"lbipam", 3, true, true},
		{"policy", 4, false, true},
		{"operator", 5, false, true},
	}
}

// controlNames are the names of the control-plane services.
func controlNames() []string {
	var names []string
	for _, s := range controlPlane() {
		names = append(names, s.name)
	}
	return names
}

// control opens the control-plane services' TCP sockets and returns the
// services in start order, each holding its sockets to inherit and serving
// its TCP API with mTLS (certificates from cs). Opening the sockets here,
// not in the services, means a port cannot be taken by another process
// between choosing it and listening on it.
func (c Config) control(etcdURL string, cs certs) (_ []Component, err error) {
	var comps []Component
	defer func() {
		if err != nil {
			closeFiles(comps)
		}
	}()
	for _, s := range controlPlane() {
		grpcPort, metricsPort := 0, 0
		if c.PortBase != 0 {
			grpcPort, metricsPort = c.PortBase+s.port, c.PortBase+s.port+200
		}
		target, grpcFile, err := listenTCP(c.Host, grpcPort)
		if err != nil {
			return nil, fmt.Errorf("axon-%s gRPC: %w", s.name, err)
		}
		metricsAddr, metricsFile, err := listenTCP(c.Host, metricsPort)
		if err != nil {
			_ = grpcFile.Close()
			return nil, fmt.Errorf("axon-%s metrics: %w", s.name, err)
		}
		comp := Component{Name: s.name, Target: target, MetricsAddr: metricsAddr, Unimplemented: s.unimplemented, files: []*os.File{grpcFile, metricsFile}}
		// ExtraFiles become descriptors 3, 4, ... in the child.
		comp.Args = append([]string{"--grpc-addr", "fd:3", "--metrics-addr", "fd:4"}, cs.serverArgs(s.name)...)
		if s.useEtcd {
			// The service's certificate is its client certificate for etcd too.
			kp := cs.services[s.name]
			comp.Args = append(comp.Args, "--etcd-endpoints", etcdURL, "--etcd-cert", kp.cert, "--etcd-key", kp.key, "--etcd-ca", cs.ca)
		}
		if s.name == "ipam" {
			// Datapaths in node namespaces reach IPAM over a unix socket: the
			// filesystem is shared, loopback is not. Like the CNI shim's
			// socket, its mode (0600) is what guards it.
			comp.Args = append(comp.Args, "--grpc-socket", c.ipamSocket())
		} else {
			comp.Args = append(comp.Args, "--grpc-socket", "")
		}
		comps = append(comps, comp)
	}
	return comps, nil
}

// listenTCP listens on host:port (port 0 for any free one) and returns the
// address and a descriptor of the socket for a child to inherit.
func listenTCP(host string, port int) (string, *os.File, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return "", nil, err
	}
	// File returns a duplicate, which keeps the socket listening.
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		return "", nil, err
	}
	return l.Addr().String(), f, nil
}

func closeFiles(comps []Component) {
	for _, c := range comps {
		for _, f := range c.files {
			_ = f.Close()
		}
	}
}

func (c Config) ipamSocket() string { return filepath.Join(c.StateDir, "ipam.sock") }

// datapath is the component of a simulated node's agent.
func (c Config) datapath(n simNode) Component {
	dir := filepath.Join(c.StateDir, n.Name)
	sock := filepath.Join(dir, "datapath.sock")
	comp := Component{
		Name: "datapath", Label: n.Name, Target: "unix://" + sock, Netns: n.Path(),
		Args: []string{
			"--node-name", n.Name, "--node-ip", n.IP.String() + "," + n.IP6.String(),
			"--ipam-target", "unix://" + c.ipamSocket(),
			"--grpc-addr", "", "--grpc-socket", sock, "--metrics-addr", "",
			"--state-dir", c.agentStateDir(n),
			"--cni-delete-queue", filepath.Join(dir, "cni-deletes"),
			"--bpf-pin-dir", c.pinDir(n),
		},
	}
	comp.Args = append(comp.Args, c.DatapathArgs...)
	return comp
}

// agentStateDir is a node's datapath --state-dir.
func (c Config) agentStateDir(n simNode) string {
	return filepath.Join(c.StateDir, n.Name, "endpoints")
}

func (c Config) pinDir(n simNode) string { return "/sys/fs/bpf/" + c.NetnsPrefix + n.Name }

// Cluster is a running local system.
type Cluster struct {
	cfg     Config
	log     *slog.Logger
	etcd    *embedetcd.Server
	running []*process
	exited  chan error
	stop    sync.Once
	logMu   *sync.Mutex
	certs   certs

	mu        sync.Mutex // guards datapaths
	simNodes  []simNode
	datapaths []*process
	// Control are the control-plane services.
	Control []Component
	// Nodes are the simulated nodes.
	Nodes []Node
	// Outside is a host on the nodes' underlay that is not a node: the
	// world outside the cluster.
	Outside Node
	// Pods are the demo pods.
	Pods []DemoPod
}

// Node is a simulated node as tests and the summary see it.
type Node struct {
	Name string
	// Netns is the path of the node's network namespace.
	Netns string
	IP    netip.Addr
	IP6   netip.Addr
	// DatapathSocket is the unix socket of the node's axon-datapath.
	DatapathSocket string
	// DeleteQueue is where the node's axon-cni queues DELs.
	DeleteQueue string
}

// Start starts the system and returns once every part reports SERVING,
// except services whose API is not implemented yet (Component.Unimplemented):
// those only have to answer health. On failure it stops what it started.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (_ *Cluster, err error) {
	etcdLog := log.With(daemon.LogKeySubsys, "etcd")
	log = log.With(daemon.LogKeySubsys, "local")
	stateDir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	cfg.StateDir = stateDir
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	// A description left by a run that did not stop cleanly is stale.
	if err := localsys.Remove(cfg.descriptionFile()); err != nil {
		return nil, err
	}
	cs, err := makeCerts(filepath.Join(cfg.StateDir, "pki"), cfg.Host, append(controlNames(), etcdCert))
	if err != nil {
		return nil, fmt.Errorf("make the certificates: %w", err)
	}
	etcd, err := embedetcd.Start(embedetcd.Config{
		Dir:        filepath.Join(cfg.StateDir, "etcd"),
		ClientAddr: cfg.EtcdClientAddr,
		PeerAddr:   cfg.EtcdPeerAddr,
		Log:        etcdLog,
		TLS:        &embedetcd.TLS{CertFile: cs.services[etcdCert].cert, KeyFile: cs.services[etcdCert].key, CAFile: cs.ca},
	})
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, log: log, etcd: etcd, exited: make(chan error, 16), certs: cs}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	log.Info("embedded etcd ready", "url", etcd.ClientURL(), "dir", filepath.Join(cfg.StateDir, "etcd"))

	// The services do not depend on each other to start, so they start
	// together; each must then report SERVING, or answer health if its API
	// is not implemented yet.
	log.Info("certificates made", "dir", cs.dir)
	c.Control, err = cfg.control(etcd.ClientURL(), cs)
	if err != nil {
		return nil, err
	}
	logMu := &sync.Mutex{}
	for i, comp := range c.Control {
		p, err := start(cfg.BinDir, comp, logMu, c.exited)
		c.Control[i].files = nil // the process has them now
		if err != nil {
			closeFiles(c.Control[i+1:])
			return nil, err
		}
		c.running = append(c.running, p)
	}
	for _, comp := range c.Control {
		creds, err := c.Credentials(comp.Target)
		if err != nil {
			return nil, err
		}
		if comp.Unimplemented {
			if err := waitHealth(ctx, comp.Target, creds, cfg.ReadyTimeout, c.exited, answers); err != nil {
				return nil, fmt.Errorf("axon-%s did not start: %w", comp.Name, err)
			}
			log.Info("service up; its API is not implemented yet, so it reports NOT_SERVING", "service", comp.Name, "grpc", comp.Target)
			continue
		}
		if err := waitHealth(ctx, comp.Target, creds, cfg.ReadyTimeout, c.exited, serving); err != nil {
			return nil, fmt.Errorf("axon-%s did not become healthy: %w", comp.Name, err)
		}
		log.Info("service serving", "service", comp.Name, "grpc", comp.Target)
	}
	c.logMu = logMu
	nodes, outside, procs, err := startNodes(ctx, cfg, log, logMu, c.exited, &c.running)
	if err != nil {
		return nil, err
	}
	c.Outside = Node{Name: outside.Name, Netns: outside.Path(), IP: outside.IP, IP6: outside.IP6}
	c.simNodes, c.datapaths = nodes, procs
	for _, n := range nodes {
		c.Nodes = append(c.Nodes, Node{
			Name: n.Name, Netns: n.Path(), IP: n.IP, IP6: n.IP6,
			DatapathSocket: strings.TrimPrefix(cfg.datapath(n).Target, "unix://"),
			DeleteQueue:    filepath.Join(cfg.StateDir, n.Name, "cni-deletes"),
		})
	}
	if err := c.startDemoPods(ctx, cfg.DemoPods); err != nil {
		return nil, err
	}
	if err := localsys.Write(cfg.descriptionFile(), c.Description()); err != nil {
		return nil, err
	}
	return c, nil
}

// descriptionFile is where the running system's description is written
// for axonctl.
func (c Config) descriptionFile() string { return filepath.Join(c.StateDir, localsys.FileName) }

// Description says where the system's services listen and which
// certificates reach them; Start writes it into the state directory
// (localsys.FileName), where axonctl finds it.
func (c *Cluster) Description() localsys.System {
	s := localsys.System{
		Services: map[string]string{},
		TLS:      localsys.TLS{CA: c.certs.ca, Cert: c.certs.client.cert, Key: c.certs.client.key},
	}
	for _, comp := range c.Control {
		s.Services[comp.Name] = comp.Target
	}
	for _, n := range c.Nodes {
		s.Datapaths = append(s.Datapaths, "unix://"+n.DatapathSocket)
	}
	return s
}

// Credentials returns the transport credentials for dialing target, a
// service of the system: the client certificate for a TCP target, none for
// a unix socket (its file mode guards it).
func (c *Cluster) Credentials(target string) (credentials.TransportCredentials, error) {
	if strings.HasPrefix(target, "unix:") {
		return insecure.NewCredentials(), nil
	}
	tc, err := daemon.ClientTLSConfig(c.certs.ca, c.certs.client.cert, c.certs.client.key)
	if err != nil {
		return nil, fmt.Errorf("client certificate of the local system: %w", err)
	}
	return credentials.NewTLS(tc), nil
}

// IPAMSocket is the unix socket axon-ipam also serves on.
func (c *Cluster) IPAMSocket() string { return c.cfg.ipamSocket() }

// KillDatapath kills node i's axon-datapath with SIGKILL, as a crash would.
func (c *Cluster) KillDatapath(i int) {
	c.mu.Lock()
	p := c.datapaths[i]
	c.mu.Unlock()
	p.expected.Store(true)
	_ = p.cmd.Process.Kill()
	<-p.done
}

// StartDatapath starts node i's axon-datapath again and waits until it
// serves.
func (c *Cluster) StartDatapath(ctx context.Context, i int) error {
	comp, err := c.replaceDatapath(i)
	if err != nil {
		return err
	}
	return waitHealth(ctx, comp.Target, insecure.NewCredentials(), c.cfg.ReadyTimeout, c.exited, serving)
}

// replaceDatapath starts node i's axon-datapath in place of the one that
// exited, and returns its component.
func (c *Cluster) replaceDatapath(i int) (Component, error) {
	comp := c.cfg.datapath(c.simNodes[i])
	p, err := start(c.cfg.BinDir, comp, c.logMu, c.exited)
	if err != nil {
		return comp, err
	}
	c.mu.Lock()
	old := c.datapaths[i]
	c.datapaths[i] = p
	for j, r := range c.running {
		if r == old {
			c.running[j] = p
		}
	}
	c.mu.Unlock()
	return comp, nil
}

// datapathOf returns the node whose current datapath err reports the
// unexpected exit of, and how long that process ran; -1 for any other
// error.
func (c *Cluster) datapathOf(err error) (int, time.Duration) {
	var ex *exitError
	if !errors.As(err, &ex) {
		return -1, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.datapaths {
		if p == ex.p {
			return i, ex.ran
		}
	}
	return -1, 0
}

// crashLoop counts a node's datapath crashes that follow short runs.
type crashLoop struct {
	fast  int           // crashes in a row after runs shorter than MinRun
	delay time.Duration // the last restart delay
}

// next returns the delay before restarting a datapath that crashed after
// running ran, or false when it crashed too often too fast to restart.
func (l *crashLoop) next(p RestartPolicy, ran time.Duration) (time.Duration, bool) {
	if ran >= p.MinRun {
		l.fast, l.delay = 0, 0
	}
	l.fast++
	if l.fast > p.MaxFastCrashes {
		return 0, false
	}
	l.delay = min(max(2*l.delay, p.Backoff), p.MaxBackoff)
	return l.delay, true
}

// Wait blocks until ctx is done (nil) or a part of the system fails. A
// datapath that exits unexpectedly is not a failure of the system: it is
// restarted as a DaemonSet's pod would be (Config.DatapathRestart), and its
// node's pods keep their network meanwhile (the eBPF programs and maps are
// pinned) and after (the new datapath restores their endpoints). One that
// keeps crashing right after starting (a crash loop) ends the wait.
func (c *Cluster) Wait(ctx context.Context) error {
	policy := c.cfg.DatapathRestart.withDefaults()
	c.mu.Lock()
	loops := make([]crashLoop, len(c.datapaths))
	c.mu.Unlock()
	due := make(chan int, len(loops)) // nodes whose restart delay is over
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-c.etcd.Err():
			return fmt.Errorf("embedded etcd: %w", err)
		case err := <-c.exited:
			i, ran := c.datapathOf(err)
			if i < 0 {
				return err
			}
			node := c.simNodes[i].Name
			delay, ok := loops[i].next(policy, ran)
			if !ok {
				return fmt.Errorf("%w; it crashed %d times in a row, each within %s of starting (crash loop): not restarting it",
					err, loops[i].fast, policy.MinRun)
			}
			c.log.Warn("datapath crashed; restarting it as a DaemonSet would, the node's pods keep their network",
				"node", node, "err", err, "ran", ran.Round(time.Millisecond), "in", delay, "fast_crashes", loops[i].fast)
			wg.Go(func() {
				select {
				case <-ctx.Done():
				case <-time.After(delay):
					due <- i
				}
			})
		case i := <-due:
			node := c.simNodes[i].Name
			comp, err := c.replaceDatapath(i)
			if err != nil {
				return fmt.Errorf("restart the datapath of %s: %w", node, err)
			}
			c.log.Warn("datapath restarted", "node", node)
			wg.Go(func() {
				// A crash while it starts is reported through c.exited.
				if err := waitHealth(ctx, comp.Target, insecure.NewCredentials(), c.cfg.ReadyTimeout, nil, serving); err == nil {
					c.log.Info("datapath serving again", "node", node)
				}
			})
		}
	}
}

// Stop stops everything in reverse start order; it is safe to repeat.
func (c *Cluster) Stop() {
	c.stop.Do(func() {
		for i := len(c.running) - 1; i >= 0; i-- {
			c.running[i].stop(c.cfg.StopTimeout)
		}
		c.etcd.Close()
		if err := localsys.Remove(c.cfg.descriptionFile()); err != nil {
			c.log.Warn("stale description of the system left behind", daemon.LogKeyError, err)
		}
	})
}

// Run starts the system, reports it on out, and keeps it running until ctx
// is done or a part of it fails (a datapath that dies is restarted, see
// Wait); then it stops everything it started.
func Run(ctx context.Context, cfg Config, log *slog.Logger, out io.Writer) error {
	c, err := Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer c.Stop()
	printSummary(out, c)
	err = c.Wait(ctx)
	log.Info("stopping", daemon.LogKeySubsys, "local")
	return err
}

func printSummary(out io.Writer, c *Cluster) {
	comps := c.Control
	var b bytes.Buffer
	fmt.Fprintf(&b, "\nAxon is running on this machine (embedded etcd at %s).\n\n", c.etcd.ClientURL())
	fmt.Fprintf(&b, "  %-10s %-32s %-36s %s\n", "SERVICE", "gRPC", "METRICS", "HEALTH")
	for _, c := range comps {
		health := "SERVING"
		if c.Unimplemented {
			health = "NOT_SERVING (API not implemented yet)"
		}
		fmt.Fprintf(&b, "  %-10s %-32s %-36s %s\n", c.Name, c.Target, "http://"+c.MetricsAddr+"/metrics", health)
	}
	if len(c.Nodes) > 0 {
		fmt.Fprintf(&b, "\n  %-10s %-16s %-28s %s\n", "NODE", "UNDERLAY IP", "NETNS", "DATAPATH SOCKET")
		for _, n := range c.Nodes {
			fmt.Fprintf(&b, "  %-10s %-16s %-28s %s\n", n.Name, n.IP, n.Netns, n.DatapathSocket)
		}
		c.mu.Lock()
		pid := c.datapaths[0].cmd.Process.Pid
		c.mu.Unlock()
		fmt.Fprintf(&b, "\n  A datapath that dies is restarted, as a DaemonSet's would be, and its pods keep their network:\n  try sudo kill -9 %d (%s's).\n", pid, c.Nodes[0].Name)
	}
	if len(c.Pods) > 0 {
		fmt.Fprintf(&b, "\n  %-14s %-8s %-34s %s\n", "POD", "NODE", "NETNS", "ADDRESSES (via axon-cni)")
		for _, p := range c.Pods {
			fmt.Fprintf(&b, "  %-14s %-8s %-34s %s\n", p.Name, p.Node, p.Netns, strings.Join(p.IPs, ", "))
		}
		fmt.Fprintf(&b, "\n%s", c.reachability())
		fmt.Fprintf(&b, "  try: sudo nsenter --net=%s ping %s\n", c.Pods[0].Netns, c.Pods[len(c.Pods)-1].IPs[0])
	}
	fmt.Fprintf(&b, "\n  Every TCP API takes only mTLS. This run's certificates are in %s: the CA (ca.pem),\n  one per service, and client.pem with client.key for axonctl and grpcurl.\n", display(c.certs.dir))
	status := "axonctl status"
	if desc := c.cfg.descriptionFile(); display(desc) != filepath.Join(".run", localsys.FileName) {
		// axonctl looks in ./.run by default.
		status += " --local " + display(desc)
	}
	tlsArgs := fmt.Sprintf("-cacert %s -cert %s -key %s", display(c.certs.ca), display(c.certs.client.cert), display(c.certs.client.key))
	fmt.Fprintf(&b, "\nTry: grpcurl %s %s list\n     grpcurl %s %s grpc.health.v1.Health/Check\n     %s\nPress Ctrl-C to stop.\n",
		tlsArgs, comps[0].Target, tlsArgs, comps[0].Target, status)
	_, _ = out.Write(b.Bytes())
}

// display shortens path to one relative to the working directory when it
// lies below it.
func display(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	rel, err := filepath.Rel(wd, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return path
	}
	return rel
}

// process is a started service, or (with cleanup) something else to undo
// in reverse start order.
type process struct {
	name    string
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	cleanup func()
	// expected marks an exit we caused, which is not reported as a failure.
	expected atomic.Bool
}

func start(binDir string, c Component, logMu *sync.Mutex, exited chan<- error) (*process, error) {
	bin := filepath.Join(binDir, "axon-"+c.Name)
	cmd := exec.Command(bin, c.Args...)
	if c.Netns != "" {
		// Only the network namespace changes: the datapath must share the
		// host's bpffs so its pins outlive it.
		cmd = exec.Command("nsenter", append([]string{"--net=" + c.Netns, bin}, c.Args...)...)
	}
	w := &prefixWriter{prefix: "[" + c.label() + "] ", out: os.Stderr, mu: logMu}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.ExtraFiles = c.files
	// The child has its own copies once started; ours only hold the ports.
	defer closeFiles([]Component{c})
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a terminal's Ctrl-C reaches only us, and we stop
		// the services in order.
		Setpgid: true,
		// If axon-local dies, its services do not outlive it.
		Pdeathsig: syscall.SIGTERM,
	}
	p := &process{name: c.label(), cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// The kernel sends Pdeathsig when the thread that started the
		// child exits, not the process: a thread another goroutine locked
		// (to enter a network namespace) and so ended would take the
		// child down. This thread stays, locked, until the child is gone.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.started = time.Now()
		started <- nil
		err := cmd.Wait()
		w.flush()
		close(p.done)
		if p.expected.Load() {
			return
		}
		exited <- &exitError{p: p, ran: time.Since(p.started), msg: fmt.Sprintf("axon-%s (%s) exited unexpectedly: %v", c.Name, c.label(), errOrStatus(err, cmd))}
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	return p, nil
}

// exitError reports a process's unexpected exit.
type exitError struct {
	p   *process
	ran time.Duration // how long it ran
	msg string
}

func (e *exitError) Error() string { return e.msg }

func errOrStatus(err error, cmd *exec.Cmd) string {
	if err != nil {
		return err.Error()
	}
	return cmd.ProcessState.String()
}

// stop sends SIGTERM and waits up to timeout before killing the process.
func (p *process) stop(timeout time.Duration) {
	if p.cleanup != nil {
		p.cleanup()
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	p.expected.Store(true)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// healthWanted says whether a health status is the one waited for.
type healthWanted func(healthpb.HealthCheckResponse_ServingStatus) bool

// serving wants SERVING.
func serving(st healthpb.HealthCheckResponse_ServingStatus) bool {
	return st == healthpb.HealthCheckResponse_SERVING
}

// answers wants any answer: the service is up, whatever its health.
func answers(healthpb.HealthCheckResponse_ServingStatus) bool { return true }

// waitHealth polls the gRPC health service at target, dialed with creds,
// until it answers a status that want accepts, the timeout passes, or a
// started process exits.
func waitHealth(ctx context.Context, target string, creds credentials.TransportCredentials, timeout time.Duration, exited <-chan error, want healthWanted) error {
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(creds),
		// The service is starting: retry the connection quickly rather than
		// with gRPC's default one-second backoff.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		return err
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		ccancel()
		switch {
		case err != nil:
			last = err
		case want(resp.GetStatus()):
			return nil
		default:
			last = fmt.Errorf("status %s", resp.GetStatus())
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case err := <-exited:
			return err
		case <-tick.C:
		}
	}
}

// prefixWriter writes whole lines to out, each behind prefix.
type prefixWriter struct {
	prefix string
	out    io.Writer
	mu     *sync.Mutex
	buf    []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		_, _ = fmt.Fprintf(w.out, "%s%s\n", w.prefix, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

func (w *prefixWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		_, _ = fmt.Fprintf(w.out, "%s%s\n", w.prefix, w.buf)
		w.buf = nil
	}
}
