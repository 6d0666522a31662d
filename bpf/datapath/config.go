package datapath

import (
	"fmt"
	"net/netip"
)

// Mode is how the datapath reaches other nodes' pods (axon_config.mode).
type Mode uint32

const (
	// ModeNone is the state before SetConfig: the programs leave every
	// packet to the kernel (axon_to_overlay, which has no kernel path to
	// leave it to, drops it).
	ModeNone = Mode(podAxonModeAXON_MODE_NONE)
	// ModeTunnel encapsulates in VXLAN: the programs build and strip it
	// themselves, and send what they cannot through the flow-based tunnel
	// device.
	ModeTunnel = Mode(podAxonModeAXON_MODE_TUNNEL)
	// ModeNative routes through the node's FIB (routes for remote blocks are
	// the agent's, via netlink).
	ModeNative = Mode(podAxonModeAXON_MODE_NATIVE)
)

func (m Mode) String() string {
	switch m {
	case ModeNone:
		return "none"
	case ModeTunnel:
		return "tunnel"
	case ModeNative:
		return "native"
	default:
		return fmt.Sprintf("Mode(%d)", uint32(m))
	}
}

// Config is the node-wide configuration (the single axon_config entry).
type Config struct {
	Mode Mode
	// VXLANIfindex is the ifindex of axon_vxlan; required in ModeTunnel.
	VXLANIfindex int
	// NodeIP is this node's underlay IPv4, used as the outer source address
	// in tunnel mode (for IPv6 pod traffic too: the underlay is IPv4; an
	// IPv6 NodeIP is refused with [ErrIPv6Unsupported]). The zero Addr lets
	// the kernel pick it by route.
	NodeIP netip.Addr
	// Geneve says the tunnel device is Geneve: tunnelled packets all go
	// through it, the programs build and strip no VXLAN themselves.
	Geneve bool
}

// Flags of axon_config (datapath.h; bpf2go copies types, not macros).
const (
	configGeneve = 1 // AXON_CONFIG_GENEVE
	// configLB is AXON_CONFIG_LB: services are programmed. PutServices
	// sets it, SetConfig keeps it.
	configLB = 2
)

// SetConfig writes the node configuration. The programs read it per packet,
// so a change takes effect at once.
func (o *Objects) SetConfig(c Config) error {
	var v podAxonConfig
	switch c.Mode {
	case ModeNone, ModeNative:
	case ModeTunnel:
		var err error
		if v.VxlanIfindex, err = ifindex(c.VXLANIfindex); err != nil {
			return fmt.Errorf("tunnel mode needs the VXLAN device: %w", err)
		}
	default:
		return fmt.Errorf("%w: %d", ErrInvalidMode, uint32(c.Mode))
	}
	v.Mode = uint32(c.Mode)
	if c.Geneve {
		v.Flags |= configGeneve
	}
	if c.NodeIP.IsValid() {
		var err error
		if v.NodeIp4, err = unicast4(c.NodeIP); err != nil {
			return fmt.Errorf("node address: %w", err)
		}
	}
	// The service flag is PutServices' to set: kept as it is. (lbMu
	// orders this read and write with PutServices'.)
	o.lbMu.Lock()
	defer o.lbMu.Unlock()
	var cur podAxonConfig
	if err := o.maps.AxonConfig.Lookup(uint32(0), &cur); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	v.Flags |= cur.Flags & configLB
	if err := o.maps.AxonConfig.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("set config: %w", err)
	}
	return nil
}

// Config returns the node configuration.
func (o *Objects) Config() (Config, error) {
	var v podAxonConfig
	if err := o.maps.AxonConfig.Lookup(uint32(0), &v); err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	c := Config{Mode: Mode(v.Mode), VXLANIfindex: int(v.VxlanIfindex), Geneve: v.Flags&configGeneve != 0}
	if v.NodeIp4 != 0 {
		c.NodeIP = addr4(v.NodeIp4)
	}
	return c, nil
}
