package datapath

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPortGatesUpgrade: a node whose pins predate the port gates (an older
// build's) keeps its services and flows: Load opens the gates of the
// frontends and REPLY entries in place before any program reads them, so
// the flow's reply is still translated back and new connections to the
// frontend still balanced.
func TestPortGatesUpgrade(t *testing.T) {
	requireBPF(t)
	dir := pinDir(t)
	o := mustLoad(t, dir)
	putFixture(t, o)
	must(t, "config", o.SetConfig(tunnelCfg))
	putServices(t, o, ServiceEntry{Frontend: frontend(vip, 80, protoTCP), Service: Service{ID: 1, Active: []Backend{
		{Addr: podB.ip, Port: 8080, Local: true},
	}}})
	client := ap(podA.ip, 40000)
	if _, dst := runLocal(t, o, protoTCP, client, ap(vip, 80)); dst != ap(podB.ip, 8080) {
		t.Fatalf("first packet went to %s", dst)
	}
	o.Close()
	for _, name := range []string{podMapAxonLbPorts, podMapAxonCtPorts} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}

	o = mustLoad(t, dir)
	must(t, "finish migration", o.FinishMigration())
	if src, _ := runLocal(t, o, protoTCP, ap(podB.ip, 8080), client); src != ap(vip, 80) {
		t.Errorf("reply after the upgrade comes from %s, want the frontend", src)
	}
	if _, dst := runLocal(t, o, protoTCP, ap(podA.ip, 40001), ap(vip, 80)); dst != ap(podB.ip, 8080) {
		t.Errorf("new connection after the upgrade went to %s", dst)
	}
	for _, name := range []string{podMapAxonLbPorts, podMapAxonCtPorts} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("pin of %s: %v", name, err)
		}
	}
}
