package lb

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// meta is what restoring a service needs that its map entries do not
// hold. It is kept in bpfmaps.LBService.Meta as protobuf wire format
// (fields below), so fields can be added later and unknown ones skipped.
// The type and the affinity timeout are in the entries themselves.
//
// Its size is bounded by validation: namespace and name (2+63 bytes
// each), port name (2+15), policy (2), at most MaxSourceRanges source
// ranges (2+17 each), revision (9), update time (at most 10), weight unit
// (at most 4), health check port (at most 4): 482 bytes, within
// bpfmaps.MaxLBMeta (512); TestMetaFitsAtTheLimits checks it.
type meta struct {
	namespace, name, portName string
	policy                    int32
	sourceRanges              []netip.Prefix
	revision                  uint64
	updateTime                time.Time
	// weightUnit is what the slot counts of the entries are multiplied by
	// to give the weights back (their greatest common divisor); 0 when
	// the weights were scaled down to fit and cannot be given back.
	weightUnit uint32
	// healthPort is the service's health_check_node_port.
	healthPort uint32
}

// Field numbers of meta's wire format.
const (
	metaNamespace   protowire.Number = 1
	metaName        protowire.Number = 2
	metaPortName    protowire.Number = 3
	metaPolicy      protowire.Number = 4
	metaSourceRange protowire.Number = 5
	metaRevision    protowire.Number = 6
	metaUpdateTime  protowire.Number = 7
	metaWeightUnit  protowire.Number = 8
	metaHealthPort  protowire.Number = 9
)

var errBadMeta = errors.New("malformed service metadata")

func (m meta) encode() []byte {
	var b []byte
	str := func(n protowire.Number, s string) {
		if s != "" {
			b = protowire.AppendTag(b, n, protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
	}
	varint := func(n protowire.Number, v uint64) {
		if v != 0 {
			b = protowire.AppendTag(b, n, protowire.VarintType)
			b = protowire.AppendVarint(b, v)
		}
	}
	str(metaNamespace, m.namespace)
	str(metaName, m.name)
	str(metaPortName, m.portName)
	varint(metaPolicy, uint64(m.policy))
	for _, p := range m.sourceRanges {
		b = protowire.AppendTag(b, metaSourceRange, protowire.BytesType)
		b = protowire.AppendBytes(b, append(p.Addr().AsSlice(), byte(p.Bits())))
	}
	b = protowire.AppendTag(b, metaRevision, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, m.revision)
	if !m.updateTime.IsZero() {
		varint(metaUpdateTime, uint64(m.updateTime.UnixNano()))
	}
	varint(metaWeightUnit, uint64(m.weightUnit))
	varint(metaHealthPort, uint64(m.healthPort))
	return b
}

func decodeMeta(b []byte) (meta, error) {
	var m meta
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return m, fmt.Errorf("%w: %w", errBadMeta, protowire.ParseError(n))
		}
		b = b[n:]
		var v uint64
		var s []byte
		switch {
		case typ == protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case typ == protowire.BytesType:
			s, n = protowire.ConsumeBytes(b)
		case typ == protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return m, fmt.Errorf("%w: field %d: %w", errBadMeta, num, protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case metaNamespace:
			m.namespace = string(s)
		case metaName:
			m.name = string(s)
		case metaPortName:
			m.portName = string(s)
		case metaPolicy:
			m.policy = int32(v)
		case metaSourceRange:
			if len(s) < 1 {
				return m, fmt.Errorf("%w: empty source range", errBadMeta)
			}
			addr, ok := netip.AddrFromSlice(s[:len(s)-1])
			p := netip.PrefixFrom(addr, int(s[len(s)-1]))
			if !ok || !p.IsValid() {
				return m, fmt.Errorf("%w: source range %x", errBadMeta, s)
			}
			m.sourceRanges = append(m.sourceRanges, p)
		case metaRevision:
			m.revision = v
		case metaUpdateTime:
			m.updateTime = time.Unix(0, int64(v)).UTC()
		case metaWeightUnit:
			m.weightUnit = uint32(v)
		case metaHealthPort:
			m.healthPort = uint32(v)
		}
	}
	return m, nil
}
