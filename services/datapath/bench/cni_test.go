package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

// cniTarget is a network configuration as a container runtime runs it:
// libcni executing the plugin binaries from a process in the node's
// network namespace.
type cniTarget struct {
	Name   string
	cni    *libcni.CNIConfig
	list   *libcni.NetworkConfigList
	nodeNS string
	pods   []*ns // pod namespaces, closed when the CNI section ends
	mu     sync.Mutex
	seq    int
}

func newTarget(name string, binDirs []string, cacheDir string, conflist map[string]any, nodeNS string) (*cniTarget, error) {
	b, err := json.Marshal(conflist)
	if err != nil {
		return nil, err
	}
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, err
	}
	return &cniTarget{Name: name, cni: libcni.NewCNIConfigWithCacheDir(binDirs, cacheDir, &invoke.DefaultExec{
		// Explicit: libcni's lazy default races when pods are added in parallel.
		RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{},
	}), list: l, nodeNS: nodeNS}, nil
}

// cniPod is a pod sandbox: a fresh network namespace and its runtime config.
type cniPod struct {
	ns *ns
	rt *libcni.RuntimeConf
	ip string
}

// newPods creates n fresh sandboxes (not timed).
func (tg *cniTarget) newPods(phase string, n int) ([]*cniPod, error) {
	pods := make([]*cniPod, n)
	for i := range pods {
		n, err := newNS()
		if err != nil {
			return nil, err
		}
		tg.mu.Lock()
		tg.pods = append(tg.pods, n)
		tg.seq++
		name := strings.NewReplacer("+", "-", " ", "-").Replace(fmt.Sprintf("%s-%s-%d", tg.Name, phase, tg.seq))
		tg.mu.Unlock()
		pods[i] = &cniPod{ns: n, rt: &libcni.RuntimeConf{
			ContainerID: "bench-" + name, NetNS: n.path, IfName: "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "bench"}, {"K8S_POD_NAME", name}},
		}}
	}
	return pods, nil
}

func (tg *cniTarget) closePods() {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	for _, n := range tg.pods {
		n.close()
	}
	tg.pods = nil
}

func (tg *cniTarget) add(ctx context.Context, p *cniPod) error {
	res, err := tg.cni.AddNetworkList(ctx, tg.list, p.rt)
	if err != nil {
		return fmt.Errorf("%s ADD %s: %w", tg.Name, p.rt.ContainerID, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return err
	}
	if len(r.IPs) == 0 {
		return fmt.Errorf("%s ADD %s: no IP in %v", tg.Name, p.rt.ContainerID, r)
	}
	p.ip = r.IPs[0].Address.IP.String()
	return nil
}

func (tg *cniTarget) del(ctx context.Context, p *cniPod) error {
	if err := tg.cni.DelNetworkList(ctx, tg.list, p.rt); err != nil {
		return fmt.Errorf("%s DEL %s: %w", tg.Name, p.rt.ContainerID, err)
	}
	return nil
}

// inNodeWorkers runs fn(0..n-1) on `workers` goroutines whose threads sit
// in nodeNS, so the plugins libcni executes start in the node's namespace
// (a forked child inherits its thread's namespace). It returns each call's
// duration and the wall time of the whole run.
func inNodeWorkers(nodeNS string, workers, n int, fn func(i int) error) ([]time.Duration, time.Duration, error) {
	lat := make([]time.Duration, n)
	jobs := make(chan int, n)
	for i := range n {
		jobs <- i
	}
	close(jobs)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		ready sync.WaitGroup
		start = make(chan struct{})
	)
	ready.Add(workers)
	for range workers {
		wg.Go(func() {
			var once sync.Once
			isReady := func() { once.Do(ready.Done) }
			defer isReady() // also when inNS fails before fn runs
			err := inNS(nodeNS, func() error {
				isReady()
				<-start
				for i := range jobs {
					t0 := time.Now()
					err := fn(i)
					lat[i] = time.Since(t0)
					if err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	wg.Wait()
	return lat, time.Since(t0), first
}

// cniRun is one measured phase of one target.
type cniRun struct {
	Target  string
	Phase   string
	Pods    int
	Conc    int
	Add     latencies
	Del     latencies
	AddWall time.Duration
	DelWall time.Duration
}

// measureCNI wires n fresh pods with conc concurrent ADDs, then removes
// them with conc concurrent DELs.
func measureCNI(ctx context.Context, tg *cniTarget, phase string, n, conc int) (cniRun, error) {
	run := cniRun{Target: tg.Name, Phase: phase, Pods: n, Conc: conc}
	pods, err := tg.newPods(phase, n)
	if err != nil {
		return run, err
	}
	addLat, addWall, err := inNodeWorkers(tg.nodeNS, conc, n, func(i int) error { return tg.add(ctx, pods[i]) })
	if err != nil {
		// Best effort: leave nothing wired.
		_, _, _ = inNodeWorkers(tg.nodeNS, conc, n, func(i int) error { _ = tg.del(ctx, pods[i]); return nil })
		return run, err
	}
	seen := map[string]bool{}
	for _, p := range pods {
		if seen[p.ip] {
			return run, fmt.Errorf("%s: address %s handed out twice", tg.Name, p.ip)
		}
		seen[p.ip] = true
	}
	delLat, delWall, err := inNodeWorkers(tg.nodeNS, conc, n, func(i int) error { return tg.del(ctx, pods[i]) })
	if err != nil {
		return run, err
	}
	run.Add, run.AddWall = summarize(addLat), addWall
	run.Del, run.DelWall = summarize(delLat), delWall
	return run, nil
}

// measureCNISequential wires n fresh pods per target one call at a time,
// alternating between the targets (and their order) call by call so that
// noise from the rest of the machine hits them alike; then removes them
// the same way.
func measureCNISequential(ctx context.Context, tgs []*cniTarget, phase string, n int) ([]cniRun, error) {
	runs := make([]cniRun, len(tgs))
	pods := make([][]*cniPod, len(tgs))
	addLat := make([][]time.Duration, len(tgs))
	delLat := make([][]time.Duration, len(tgs))
	for j, tg := range tgs {
		runs[j] = cniRun{Target: tg.Name, Phase: phase, Pods: n, Conc: 1}
		var err error
		if pods[j], err = tg.newPods(phase, n); err != nil {
			return nil, err
		}
	}
	for _, verb := range []string{"ADD", "DEL"} {
		for i := range n {
			for k := range tgs {
				j := (k + i) % len(tgs)
				tg, p := tgs[j], pods[j][i]
				var d time.Duration
				err := inNS(tg.nodeNS, func() error {
					t0 := time.Now()
					var err error
					if verb == "ADD" {
						err = tg.add(ctx, p)
					} else {
						err = tg.del(ctx, p)
					}
					d = time.Since(t0)
					return err
				})
				if err != nil {
					return nil, err
				}
				if verb == "ADD" {
					addLat[j] = append(addLat[j], d)
				} else {
					delLat[j] = append(delLat[j], d)
				}
			}
		}
	}
	for j := range tgs {
		runs[j].Add, runs[j].Del = summarize(addLat[j]), summarize(delLat[j])
		for _, d := range addLat[j] {
			runs[j].AddWall += d
		}
		for _, d := range delLat[j] {
			runs[j].DelWall += d
		}
	}
	return runs, nil
}

// latencies summarizes samples.
type latencies struct {
	N                   int
	P50, P99, Mean, Max time.Duration
}

func summarize(s []time.Duration) latencies {
	if len(s) == 0 {
		return latencies{}
	}
	s = slices.Clone(s)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return latencies{N: len(s), P50: percentile(s, 0.50), P99: percentile(s, 0.99), Mean: sum / time.Duration(len(s)), Max: s[len(s)-1]}
}

// percentile returns the nearest-rank percentile q of sorted samples.
func percentile(sorted []time.Duration, q float64) time.Duration {
	idx := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(idx, 0), len(sorted)-1)]
}

// execResult is the exec-to-result time of a plugin binary run directly
// (no libcni), and, for ADD, of the datapath API call the shim makes.
type execResult struct {
	AxonVersion, PTPVersion latencies
	AxonAdd, AxonDel        latencies
	GRPCCreate, GRPCDelete  latencies
	IPAMAlloc, IPAMRelease  latencies
}

// runPlugin executes a CNI plugin the way libcni does and returns how long
// it took from fork to exit.
func runPlugin(bin string, env []string, stdin []byte) (time.Duration, []byte, error) {
	cmd := exec.Command(bin)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return d, nil, fmt.Errorf("%s: %v: %s %s", filepath.Base(bin), err, out.Bytes(), stderr.Bytes())
	}
	return d, out.Bytes(), nil
}

// measureExec times VERSION for axon-cni and ptp, ADD/DEL of axon-cni run
// directly, and the same create/delete through the datapath API without
// the shim (one persistent connection), on n fresh pods each.
func measureExec(ctx context.Context, axonBin, ptpBin, socket, nodeNS, ipamTarget, nodeName string, n int) (execResult, error) {
	var r execResult
	version := []byte(`{"cniVersion":"1.1.0"}`)
	for _, b := range []struct {
		bin string
		out *latencies
	}{{axonBin, &r.AxonVersion}, {ptpBin, &r.PTPVersion}} {
		var lat []time.Duration
		for range n {
			d, _, err := runPlugin(b.bin, []string{"CNI_COMMAND=VERSION"}, version)
			if err != nil {
				return r, err
			}
			lat = append(lat, d)
		}
		*b.out = summarize(lat)
	}

	conf := fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"axon","type":"axon-cni","socket":%q}`, socket)
	var addLat, delLat []time.Duration
	var pods []*ns
	defer func() {
		for _, p := range pods {
			p.close()
		}
	}()
	for i := range n {
		p, err := newNS()
		if err != nil {
			return r, err
		}
		pods = append(pods, p)
		env := []string{"CNI_CONTAINERID=bench-exec-" + fmt.Sprint(i), "CNI_NETNS=" + p.path, "CNI_IFNAME=eth0",
			"CNI_PATH=" + filepath.Dir(axonBin), "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=exec"}
		var d time.Duration
		err = inNS(nodeNS, func() (err error) {
			d, _, err = runPlugin(axonBin, append([]string{"CNI_COMMAND=ADD"}, env...), conf)
			return err
		})
		if err != nil {
			return r, err
		}
		addLat = append(addLat, d)
		err = inNS(nodeNS, func() (err error) {
			d, _, err = runPlugin(axonBin, append([]string{"CNI_COMMAND=DEL"}, env...), conf)
			return err
		})
		if err != nil {
			return r, err
		}
		delLat = append(delLat, d)
	}
	r.AxonAdd, r.AxonDel = summarize(addLat), summarize(delLat)

	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return r, err
	}
	defer conn.Close()
	dp := datapathv1alpha1.NewDatapathServiceClient(conn)
	if _, err := dp.CheckReady(ctx, &datapathv1alpha1.CheckReadyRequest{}); err != nil {
		return r, err
	}
	addLat, delLat = nil, nil
	for i := range n {
		p, err := newNS()
		if err != nil {
			return r, err
		}
		pods = append(pods, p)
		att := &datapathv1alpha1.Attachment{ContainerId: fmt.Sprintf("bench-grpc-%d", i), InterfaceName: "eth0"}
		t0 := time.Now()
		if _, err := dp.CreateEndpoint(ctx, &datapathv1alpha1.CreateEndpointRequest{
			Attachment: att, NetnsPath: p.path, PodNamespace: "bench", PodName: "grpc",
		}); err != nil {
			return r, fmt.Errorf("CreateEndpoint: %w", err)
		}
		addLat = append(addLat, time.Since(t0))
		t0 = time.Now()
		if _, err := dp.DeleteEndpoint(ctx, &datapathv1alpha1.DeleteEndpointRequest{Attachment: att, NetnsPath: p.path}); err != nil {
			return r, fmt.Errorf("DeleteEndpoint: %w", err)
		}
		delLat = append(delLat, time.Since(t0))
	}
	r.GRPCCreate, r.GRPCDelete = summarize(addLat), summarize(delLat)

	// The IPAM share of it: the same allocation and release the agent
	// makes, straight to axon-ipam.
	iconn, err := grpc.NewClient(ipamTarget, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return r, err
	}
	defer iconn.Close()
	ipam := ipamv1alpha1.NewIPAMServiceClient(iconn)
	addLat, delLat = nil, nil
	for i := range n {
		h := &ipamv1alpha1.OwnerHandle{ContainerId: fmt.Sprintf("bench-ipam-%d", i), InterfaceName: "eth0"}
		t0 := time.Now()
		a, err := ipam.AllocateIP(ctx, &ipamv1alpha1.AllocateIPRequest{Handle: h, Node: nodeName,
			Pod: &ipamv1alpha1.PodInfo{Namespace: "bench", Name: "ipam"}})
		if err != nil {
			return r, fmt.Errorf("AllocateIP: %w", err)
		}
		addLat = append(addLat, time.Since(t0))
		t0 = time.Now()
		if _, err := ipam.ReleaseIP(ctx, &ipamv1alpha1.ReleaseIPRequest{Handle: h, ExpectedSequence: a.GetAllocation().GetSequence()}); err != nil {
			return r, fmt.Errorf("ReleaseIP: %w", err)
		}
		delLat = append(delLat, time.Since(t0))
	}
	r.IPAMAlloc, r.IPAMRelease = summarize(addLat), summarize(delLat)
	return r, nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
