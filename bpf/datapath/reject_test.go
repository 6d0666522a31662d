package datapath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// TestLBReject: a new connection to a frontend without backends is refused
// at once: the pod's packet comes back to it (redirect to its own veth's
// peer) as a TCP reset or an ICMP/ICMPv6 port unreachable from the
// frontend, every checksum valid, counted rejected-no-backend; a reset is
// never answered.
func TestLBReject(t *testing.T) {
	r := newRunner(t)
	must(t, "config", r.objs.SetConfig(tunnelCfg))
	for _, tc := range []struct {
		name     string
		client   netip.Addr
		vip      netip.Addr
		proto    uint8
		flags    uint8
		verdict  uint32
		counter  string
		checkOut func(t *testing.T, in, out []byte)
	}{
		{"v4 tcp syn", podA.ip, vip, protoTCP, tcpSYN, verdictRedirect, "rejected-no-backend", checkRST},
		{"v6 tcp syn", podA6.ip, vip6, protoTCP, tcpSYN, verdictRedirect, "rejected-no-backend", checkRST},
		{"v4 tcp ack", podA.ip, vip, protoTCP, tcpACK, verdictRedirect, "rejected-no-backend", checkRST},
		{"v6 tcp fin", podA6.ip, vip6, protoTCP, tcpFIN, verdictRedirect, "rejected-no-backend", checkRST},
		{"v4 tcp rst", podA.ip, vip, protoTCP, tcpRST, verdictDrop, "drop-no-backend", nil},
		{"v4 udp", podA.ip, vip, protoUDP, 0, verdictRedirect, "rejected-no-backend", checkUnreach},
		{"v6 udp", podA6.ip, vip6, protoUDP, 0, verdictRedirect, "rejected-no-backend", checkUnreach},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fe := frontend(tc.vip, 80, tc.proto)
			putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 9}})
			t.Cleanup(func() { r.objs.DeleteServices([]Frontend{fe}) })
			in := l4Frame(ap(tc.client, 41000), ap(tc.vip, 80), tc.proto, tc.flags, false)
			before := r.stats(t)
			verdict, out := r.run(t, r.objs.FromPod(), in)
			if verdict != tc.verdict {
				t.Fatalf("verdict %#x, want %#x (%v)", verdict, tc.verdict, r.stats(t).Map())
			}
			after := r.stats(t)
			if d := after.Map()[tc.counter] - before.Map()[tc.counter]; d != 1 {
				t.Errorf("%s grew by %d, want 1", tc.counter, d)
			}
			if d := after.Total() - before.Total(); d != 1 {
				t.Errorf("one packet moved the counters by %d", d)
			}
			if tc.checkOut == nil {
				return
			}
			// Back to the client pod, from its router.
			if !bytes.Equal(out[0:6], podA.ep.PodMAC) || !bytes.Equal(out[6:12], podA.ep.HostMAC) {
				t.Errorf("MACs %x -> %x, want the router's to the pod's", out[6:12], out[0:6])
			}
			tc.checkOut(t, in, out)
			flows, err := r.objs.Flows()
			must(t, "flows", err)
			if len(flows) != 0 {
				t.Errorf("a refused connection left flows: %v", flows)
			}
		})
	}
}

const tcpRST = 0x04

// checkRST checks that out is the reset answering the TCP segment in.
func checkRST(t *testing.T, in, out []byte) {
	t.Helper()
	isrc, idst := tuple(in)
	if l4Proto(out) != protoTCP {
		t.Fatalf("answer is protocol %d, want TCP", l4Proto(out))
	}
	if src, dst := tuple(out); src != idst || dst != isrc {
		t.Errorf("reset %s -> %s, want %s -> %s", src, dst, idst, isrc)
	}
	l4 := l4Start(out)
	if len(out) != l4+20 {
		t.Errorf("reset is %d bytes, want headers only (%d)", len(out), l4+20)
	}
	ih, oh := in[l4Start(in):], out[l4:]
	inFlags := ih[13]
	seq, ack := binary.BigEndian.Uint32(oh[4:]), binary.BigEndian.Uint32(oh[8:])
	payload := uint32(len(in) - l4Start(in) - 20)
	if inFlags&tcpACK != 0 {
		if oh[13] != tcpRST || seq != binary.BigEndian.Uint32(ih[8:]) {
			t.Errorf("reset of an ACK: flags %#x seq %d, want RST at the acknowledged %d", oh[13], seq, binary.BigEndian.Uint32(ih[8:]))
		}
	} else {
		want := binary.BigEndian.Uint32(ih[4:]) + payload
		if inFlags&(tcpSYN|tcpFIN) != 0 {
			want++
		}
		if oh[13] != tcpRST|tcpACK || seq != 0 || ack != want {
			t.Errorf("reset: flags %#x seq %d ack %d, want RST|ACK 0 %d", oh[13], seq, ack, want)
		}
	}
	checkIPReply(t, out)
	checkSums(t, out, false)
}

// checkUnreach checks that out is the ICMP (ICMPv6) port unreachable
// answering the UDP datagram in, quoting its IP header and 8 bytes.
func checkUnreach(t *testing.T, in, out []byte) {
	t.Helper()
	checkIPReply(t, out)
	isrc, idst := tuple(in)
	var icmp, quote []byte
	if binary.BigEndian.Uint16(out[12:]) == 0x0800 {
		if out[14+9] != 1 {
			t.Fatalf("answer is protocol %d, want ICMP", out[14+9])
		}
		icmp, quote = out[34:], in[14:14+20+8]
		if icmp[0] != 3 || icmp[1] != 3 {
			t.Errorf("ICMP type %d code %d, want 3/3", icmp[0], icmp[1])
		}
		if s := onesSum(icmp); s != 0xffff {
			t.Errorf("ICMP checksum invalid (sum %#04x)", s)
		}
		if s, d := [4]byte(out[26:30]), [4]byte(out[30:34]); netip.AddrFrom4(s) != idst.Addr() || netip.AddrFrom4(d) != isrc.Addr() {
			t.Errorf("ICMP %v -> %v, want %v -> %v", netip.AddrFrom4(s), netip.AddrFrom4(d), idst.Addr(), isrc.Addr())
		}
	} else {
		if out[14+6] != 58 {
			t.Fatalf("answer is next header %d, want ICMPv6", out[14+6])
		}
		icmp, quote = out[54:], in[14:14+40+8]
		if icmp[0] != 1 || icmp[1] != 4 {
			t.Errorf("ICMPv6 type %d code %d, want 1/4", icmp[0], icmp[1])
		}
		pseudo := append(append([]byte{}, out[22:54]...), 0, 0, byte(len(icmp)>>8), byte(len(icmp)), 0, 0, 0, 58)
		if s := onesSum(append(pseudo, icmp...)); s != 0xffff {
			t.Errorf("ICMPv6 checksum invalid (sum %#04x)", s)
		}
		if s, d := netip.AddrFrom16([16]byte(out[22:38])), netip.AddrFrom16([16]byte(out[38:54])); s != idst.Addr() || d != isrc.Addr() {
			t.Errorf("ICMPv6 %v -> %v, want %v -> %v", s, d, idst.Addr(), isrc.Addr())
		}
	}
	if !bytes.Equal(icmp[8:], quote) {
		t.Errorf("quoted %x, want the datagram's IP header and 8 bytes %x", icmp[8:], quote)
	}
}

// checkIPReply checks the IP header of an answer: its lengths match the
// frame, a fresh TTL (hop limit) less the router's decrement, and a valid
// IPv4 checksum.
func checkIPReply(t *testing.T, out []byte) {
	t.Helper()
	if binary.BigEndian.Uint16(out[12:]) == 0x0800 {
		if n := int(binary.BigEndian.Uint16(out[16:])); n != len(out)-14 {
			t.Errorf("IPv4 total length %d, frame has %d", n, len(out)-14)
		}
		if out[14+8] != 63 {
			t.Errorf("TTL %d, want 63", out[14+8])
		}
		if s := onesSum(out[14:34]); s != 0xffff {
			t.Errorf("IPv4 header checksum invalid (sum %#04x)", s)
		}
		return
	}
	if n := int(binary.BigEndian.Uint16(out[18:])); n != len(out)-54 {
		t.Errorf("IPv6 payload length %d, frame has %d", n, len(out)-54)
	}
	if out[14+7] != 63 {
		t.Errorf("hop limit %d, want 63", out[14+7])
	}
}
