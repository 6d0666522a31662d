package daemon

import (
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/axon-cni/axon/services/internal/testpki"
)

// TestTCPNeedsMTLS checks a service that must not expose its API to every
// local user: the unix socket alone by default, TCP only with mTLS, never
// plaintext, not even with --insecure.
func TestTCPNeedsMTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.New(t)
	srvCert, srvKey := ca.Issue(t, dir, "server", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.Issue(t, dir, "client", x509.ExtKeyUsageClientAuth)
	caFile := ca.WriteCert(t, dir, "ca.pem")
	sock := filepath.Join(dir, "api.sock")
	spec := Spec{Name: "test", TCPNeedsMTLS: true, Defaults: Defaults{UnixSocket: sock}}

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
		}{
			{name: "plaintext TCP", args: []string{"--grpc-addr", "127.0.0.1:0"}},
			{name: "plaintext TCP with --insecure", args: []string{"--grpc-addr", "127.0.0.1:0", "--insecure"}},
			{name: "TLS without client CA", args: []string{"--grpc-addr", "127.0.0.1:0", "--tls-cert", srvCert, "--tls-key", srvKey}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := Run(t.Context(), spec, tc.args, &strings.Builder{})
				if !errors.Is(err, ErrTCPWithoutMTLS) || !errors.As(err, new(*UsageError)) {
					t.Fatalf("Run() = %v, want a usage error wrapping ErrTCPWithoutMTLS", err)
				}
			})
		}
	})

	// spec's Defaults mirror axon-datapath's: a unix socket and no GRPCAddr.
	// Its Spec is built inside its main (the flags bind main's locals), so no
	// test here can assert that default without exporting it; a TCP default
	// there would show as the datapath refusing to start without mTLS.
	t.Run("default unix socket only", func(t *testing.T) {
		serve(t, spec, "--metrics-addr=")
		creds, err := (&ClientTLS{Peer: "test"}).Credentials("unix://" + sock)
		if err != nil {
			t.Fatal(err)
		}
		waitStatus(t, dial(t, "unix://"+sock, grpc.WithTransportCredentials(creds)), healthpb.HealthCheckResponse_SERVING)
	})

	t.Run("TCP with mTLS", func(t *testing.T) {
		addr, grpcFD := listenInherited(t)
		serve(t, spec, "--grpc-socket=", "--metrics-addr=", "--grpc-addr", grpcFD,
			"--tls-cert", srvCert, "--tls-key", srvKey, "--tls-client-ca", caFile)
		creds, err := (&ClientTLS{Peer: "test", CAFile: caFile, CertFile: cliCert, KeyFile: cliKey}).Credentials(addr)
		if err != nil {
			t.Fatal(err)
		}
		waitStatus(t, dial(t, addr, grpc.WithTransportCredentials(creds)), healthpb.HealthCheckResponse_SERVING)
	})
}

func TestClientTLSCredentials(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.New(t)
	cert, key := ca.Issue(t, dir, "client", x509.ExtKeyUsageClientAuth)
	caFile := ca.WriteCert(t, dir, "ca.pem")
	tests := []struct {
		name    string
		c       ClientTLS
		target  string
		wantErr string // empty: credentials expected
	}{
		{name: "unix socket", target: "unix:///run/x.sock"},
		{name: "TCP with CA", c: ClientTLS{CAFile: caFile}, target: "127.0.0.1:1"},
		{name: "TCP with mTLS", c: ClientTLS{CAFile: caFile, CertFile: cert, KeyFile: key}, target: "127.0.0.1:1"},
		{name: "TCP plaintext by request", c: ClientTLS{Plaintext: true}, target: "127.0.0.1:1"},
		{name: "TCP without TLS or opt-in", target: "127.0.0.1:1", wantErr: ErrClientTLSRequired.Error()},
		{name: "TLS and plaintext", c: ClientTLS{CAFile: caFile, Plaintext: true}, target: "127.0.0.1:1", wantErr: "exclude each other"},
		{name: "cert without key", c: ClientTLS{CAFile: caFile, CertFile: cert}, target: "127.0.0.1:1", wantErr: "together"},
		{name: "cert without CA", c: ClientTLS{CertFile: cert, KeyFile: key}, target: "127.0.0.1:1", wantErr: "--peer-tls-ca"},
		{name: "TLS flags on a unix socket", c: ClientTLS{CAFile: caFile}, target: "unix:///run/x.sock", wantErr: "TCP targets only"},
		{name: "missing CA file", c: ClientTLS{CAFile: filepath.Join(dir, "nope.pem")}, target: "127.0.0.1:1", wantErr: "read CA file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.Peer = "peer"
			creds, err := tt.c.Credentials(tt.target)
			if tt.wantErr == "" {
				if err != nil || creds == nil {
					t.Fatalf("Credentials(%q) = %v, %v; want credentials", tt.target, creds, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Credentials(%q) = %v, want an error mentioning %q", tt.target, err, tt.wantErr)
			}
		})
	}
}
