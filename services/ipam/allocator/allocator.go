// Package allocator is the IPAM core: pools, nodes, node blocks and pod
// address allocations, with all state in etcd. Every write is one
// compare-and-swap transaction over the keys it read, so any number of
// allocators (IPAM replicas) can serve at once and a crash at any point
// loses nothing. See keys.go for the layout.
package allocator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/bounded"
	"github.com/axon-cni/axon/services/ipam/cidr"
	"github.com/axon-cni/axon/services/ipam/pool"
)

// Config tunes an Allocator.
type Config struct {
	// Root is the etcd key prefix of all IPAM state, ending in '/'.
	Root string
	// StickyHold is how long a released sticky allocation's addresses are
	// held when the request does not say.
	StickyHold time.Duration
	// GCMinAge protects allocations younger than this from GarbageCollect
	// when the request does not say.
	GCMinAge time.Duration
	// MaxAttempts bounds the transaction retries of one call under
	// contention.
	MaxAttempts int
	// SweepInterval is how often expired holds are dropped and empty blocks
	// considered for release.
	SweepInterval time.Duration
	// BlockReleaseGrace is how long a node's extra block must stay empty
	// before it goes back to its pool; a node keeps at least one block of
	// each pool and family, and the block with its router IP.
	BlockReleaseGrace time.Duration
	// UsageMaxAge is how old this replica's view of a block's taken
	// addresses may be before a block that looks full is re-read: other
	// replicas' releases are not seen otherwise. A pool that looks
	// exhausted re-reads the node's blocks whatever their age.
	UsageMaxAge time.Duration
	// MaxPageBytes bounds the encoded size of a page of a list, which then
	// ends early (see paging.Budget); 0 means paging.MaxPageBytes.
	MaxPageBytes int
	// RequestTimeout bounds each etcd request of a call (not the call):
	// a request etcd does not answer in time fails the call with
	// ErrUnavailable, long before a patient caller's deadline; so does one
	// in flight when CheckStore finds etcd down, however long it has left.
	// 0 leaves requests bounded by the caller's deadline only.
	RequestTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns the configuration the IPAM service starts with.
func DefaultConfig() Config {
	return Config{
		Root:              "/axon/ipam/v1/",
		StickyHold:        10 * time.Minute,
		GCMinAge:          time.Minute,
		MaxAttempts:       16,
		SweepInterval:     30 * time.Second,
		BlockReleaseGrace: 10 * time.Minute,
		UsageMaxAge:       30 * time.Second,
		RequestTimeout:    2 * time.Second,
	}
}

// Handle identifies the owner of an allocation: one interface of one
// container.
type Handle struct {
	ContainerID string
	Interface   string
}

func (h Handle) String() string { return h.ContainerID + "/" + h.Interface }

func (h Handle) validate() error {
	if h.ContainerID == "" || h.Interface == "" {
		return fmt.Errorf("owner handle needs container_id and interface_name: %w", ErrInvalid)
	}
	if err := bounded.First(
		bounded.String("owner handle container_id", h.ContainerID, bounded.ContainerID),
		bounded.String("owner handle interface_name", h.Interface, bounded.InterfaceName),
	); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Allocator serves IPAM operations against etcd.
type Allocator struct {
	// cli is for watches; every other request goes through store.
	cli   *clientv3.Client
	store *store
	cfg   Config
	keys  keys
	log   *slog.Logger

	pools  *watchCache[*storedPool]
	nodes  *watchCache[*ipamv1alpha1.Node]
	blocks *watchCache[*blockRecord]

	usageMu sync.Mutex
	usage   map[netip.Prefix]*blockUsage

	// emptySince records when this replica first saw a block empty.
	emptySince map[netip.Prefix]time.Time

	batch batcher

	claimMu  sync.Mutex
	claiming map[claimKey]*claimFlight
	// testHookClaimed, if set, runs after an allocation claimed a block
	// and before it picks from it (tests make others race it there).
	testHookClaimed func(*blockRecord)

	stop context.CancelFunc
	done sync.WaitGroup
}

// storedPool is a pool as stored, with its parsed form.
type storedPool struct {
	spec   *ipamv1alpha1.Pool
	parsed *pool.Pool
}

// blockRecord is the value of a blocks/ key.
type blockRecord struct {
	CIDR      netip.Prefix `json:"-"`
	Pool      string       `json:"pool"`
	Node      string       `json:"node"`
	RouterIP  string       `json:"routerIP,omitempty"`
	ClaimTime time.Time    `json:"claimTime"`
	// Outer is the range whose first (and for IPv4 last) address is never
	// handed out: the pool CIDR, or a host-scope node's pod CIDR.
	Outer netip.Prefix `json:"outer"`
}

// addrRecord is the value of an alloc/ key.
type addrRecord struct {
	ContainerID string `json:"containerID,omitempty"`
	Interface   string `json:"interface,omitempty"`
	// Router names the node when the address is that node's router IP.
	Router string `json:"router,omitempty"`
}

// New starts an Allocator: it loads pools, nodes and blocks and keeps them
// current with watches until Close. Loading waits for etcd as long as ctx
// allows; once New returns, each etcd request is bounded by
// cfg.RequestTimeout.
func New(ctx context.Context, cli *clientv3.Client, cfg Config, log *slog.Logger) (*Allocator, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultConfig().MaxAttempts
	}
	k := keys{root: cfg.Root}
	st := &store{kv: cli.KV}
	a := &Allocator{cli: cli, store: st, cfg: cfg, keys: k, log: log, usage: map[netip.Prefix]*blockUsage{}, emptySince: map[netip.Prefix]time.Time{},
		claiming: map[claimKey]*claimFlight{}}
	a.pools = newWatchCache(cli, st, k.pools(), log, decodePool)
	a.nodes = newWatchCache(cli, st, k.nodes(), log, decodeNode)
	a.blocks = newWatchCache(cli, st, k.blocks(), log, decodeBlock)
	a.blocks.indexOf = func(b *blockRecord) string { return b.Node }
	for _, c := range []interface{ refresh(context.Context) error }{a.pools, a.nodes, a.blocks} {
		if err := c.refresh(ctx); err != nil {
			return nil, err
		}
	}
	// Set before anything else uses the store.
	st.timeout = cfg.RequestTimeout
	runCtx, cancel := context.WithCancel(context.Background())
	a.stop = cancel
	for _, c := range []interface{ run(context.Context) }{a.pools, a.nodes, a.blocks} {
		a.done.Go(func() { c.run(runCtx) })
	}
	if cfg.SweepInterval > 0 {
		a.done.Go(func() { a.sweepLoop(runCtx) })
	}
	return a, nil
}

// sweepLoop drops expired holds and releases long-empty blocks until ctx
// ends. Every replica sweeps; the
// deletes are compare-and-swap, so they never collide harmfully.
func (a *Allocator) sweepLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := a.sweepHolds(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("sweeping expired holds failed", "err", err)
		}
		if err := a.releaseEmptyBlocks(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("releasing empty blocks failed", "err", err)
		}
	}
}

// Close stops the watches.
func (a *Allocator) Close() {
	a.stop()
	a.done.Wait()
}

func decodePool(_ string, v []byte) (*storedPool, error) {
	p := &ipamv1alpha1.Pool{}
	if err := protojson.Unmarshal(v, p); err != nil {
		return nil, err
	}
	parsed, err := pool.Parse(p)
	if err != nil {
		return nil, err
	}
	return &storedPool{spec: p, parsed: parsed}, nil
}

func decodeNode(_ string, v []byte) (*ipamv1alpha1.Node, error) {
	n := &ipamv1alpha1.Node{}
	return n, protojson.Unmarshal(v, n)
}

func decodeBlock(key string, v []byte) (*blockRecord, error) {
	b := &blockRecord{}
	if err := json.Unmarshal(v, b); err != nil {
		return nil, err
	}
	p, err := cidr.ParseKey(lastSegment(key))
	if err != nil {
		return nil, err
	}
	b.CIDR = p
	return b, nil
}

// mustJSON encodes one of our own records, which only hold strings, times
// and prefixes: encoding cannot fail.
func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", v, err)) // only our own plain structs are marshalled
	}
	return string(b)
}

// protoJSON encodes an API message for storage.
func protoJSON(m proto.Message) (string, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encode %T: %w: %w", m, ErrInvalid, err)
	}
	return string(b), nil
}
