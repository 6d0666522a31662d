package etcdclient

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/axon-cni/axon/services/internal/daemon"
	"github.com/axon-cni/axon/services/internal/embedetcd"
)

func TestCheckFollowsEtcd(t *testing.T) {
	srv, err := embedetcd.Start(embedetcd.Config{Dir: filepath.Join(t.TempDir(), "etcd")})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			srv.Close()
		}
	})
	cli, err := New(Config{Endpoints: srv.ClientURL(), DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	check := Check(cli)
	if err := check(t.Context()); err != nil {
		t.Fatalf("check with etcd up = %v, want nil", err)
	}
	srv.Close()
	stopped = true
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if err := check(ctx); err == nil {
		t.Fatal("check with etcd down = nil, want an error")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "no endpoints", cfg: Config{Endpoints: " , "}, wantErr: "empty"},
		{name: "cert without key", cfg: Config{Endpoints: "http://x:1", CertFile: "c"}, wantErr: "together"},
		{name: "missing key pair", cfg: Config{Endpoints: "http://x:1", CertFile: filepath.Join(dir, "c"), KeyFile: filepath.Join(dir, "k")}, wantErr: "key pair"},
		{name: "missing CA", cfg: Config{Endpoints: "http://x:1", CAFile: filepath.Join(dir, "ca")}, wantErr: "CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New() = %v, want an error mentioning %q", err, tt.wantErr)
			}
			if !errors.As(err, new(*daemon.UsageError)) {
				t.Errorf("New() error %v is not a usage error", err)
			}
		})
	}
}
