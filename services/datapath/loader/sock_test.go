package loader

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	"github.com/axon-cni/axon/bpf/testenv"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/internal/nstest"
)

// TestSocketLB: a process of the loader's namespace reaches a UDP frontend
// through the socket programs; a restarted loader takes the pinned cgroup
// links over (one set, running its programs) and the socket keeps its
// translation; DestroySockets destroys the socket once its backend is to
// go, and only then.
func TestSocketLB(t *testing.T) {
	testenv.RequireBPF(t)
	ns := nstest.New(t)
	dir := pinDir(t)
	open := func() *Loader {
		t.Helper()
		var l *Loader
		err := ns.Do(func() (err error) {
			if l, err = Open(dir, bpfdp.LoadOptions{}); err != nil {
				return err
			}
			return l.AttachSocketLB()
		})
		testenv.RequireLoaded(t, "the datapath", err)
		t.Cleanup(func() { _ = l.Close() })
		return l
	}
	var (
		pc   net.PacketConn
		conn net.Conn
	)
	if err := ns.Do(func() (err error) { pc, err = net.ListenPacket("udp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 16)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	backend := netip.MustParseAddrPort(pc.LocalAddr().String())
	frontend := netip.MustParseAddrPort("10.96.9.1:53")
	l := open()
	if err := l.PutServices([]bpfmaps.LBEntry{{
		Key:     bpfmaps.LBKey{Addr: frontend.Addr(), Port: frontend.Port(), Proto: unix.IPPROTO_UDP},
		Service: bpfmaps.LBService{ID: 7, Type: bpfmaps.LBTypeClusterIP, Active: []bpfmaps.LBBackend{{Addr: backend.Addr(), Port: backend.Port(), Local: true}}},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := ns.Do(func() (err error) { conn, err = net.Dial("udp", frontend.String()); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	echo := func(what string) error {
		t.Helper()
		if err := conn.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write([]byte(what)); err != nil {
			return err
		}
		buf := make([]byte, 16)
		n, err := conn.Read(buf)
		if err == nil && string(buf[:n]) != what {
			t.Fatalf("%s: answer %q", what, buf[:n])
		}
		return err
	}
	if err := echo("first"); err != nil {
		t.Fatalf("through the frontend: %v", err)
	}
	if got := conn.RemoteAddr().String(); got != frontend.String() {
		t.Errorf("peer %s, want the frontend %s", got, frontend)
	}

	// A second loader on the same pins, as after a restart.
	l = open()
	pins, err := os.ReadDir(filepath.Join(dir, "links"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range pins {
		if !strings.HasPrefix(p.Name(), sockLinkPrefix) {
			continue
		}
		n++
		info, err := l.links[p.Name()].Info()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := l.socketProgram(p.Name()).Info()
		if id, _ := want.ID(); info.Program != id {
			t.Errorf("link %s runs program %d, want the new loader's %d", p.Name(), info.Program, id)
		}
	}
	if want := len(l.objs.SocketPrograms()); n != want {
		t.Errorf("%d socket links pinned, want %d", n, want)
	}
	if err := echo("after restart"); err != nil {
		t.Fatalf("after the restart: %v", err)
	}

	destroy := func(backendGoes bool) int {
		t.Helper()
		var n int
		if err := ns.Do(func() (err error) {
			n, err = l.DestroySockets(func(f bpfmaps.Flow) bool {
				return backendGoes && f.ServiceID == 7 && f.Backend == backend && f.Frontend == frontend
			})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := destroy(false); n != 0 {
		t.Fatalf("destroyed %d sockets, want none", n)
	}
	if err := echo("kept"); err != nil {
		t.Fatalf("a socket no match selects: %v", err)
	}
	if n := destroy(true); n != 1 {
		t.Fatalf("destroyed %d sockets, want 1", n)
	}
	if err := echo("destroyed"); !errors.Is(err, unix.EDESTADDRREQ) && !errors.Is(err, unix.ECONNABORTED) {
		t.Errorf("destroyed socket: %v, want EDESTADDRREQ or ECONNABORTED", err)
	}
}
