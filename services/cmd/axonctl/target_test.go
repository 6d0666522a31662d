package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/axon-cni/axon/services/internal/localsys"
	"github.com/axon-cni/axon/services/internal/testpki"
)

// serveMTLSHealth serves a SERVING gRPC health service on a loopback port
// that takes only clients with a certificate signed by ca.
func serveMTLSHealth(t *testing.T, ca *testpki.CA, dir string) string {
	t.Helper()
	cert, key := ca.Issue(t, dir, "server", x509.ExtKeyUsageServerAuth)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
	})))
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

// TestStatusFindsTheLocalSystem checks that axonctl takes the targets and
// the client certificate from the description make run writes, and that
// explicit targets need explicit certificates or --insecure.
func TestStatusFindsTheLocalSystem(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.New(t)
	addr := serveMTLSHealth(t, ca, dir)
	cert, key := ca.Issue(t, dir, "client", x509.ExtKeyUsageClientAuth)
	caFile := ca.WriteCert(t, dir, "ca.pem")
	desc := filepath.Join(dir, localsys.FileName)
	if err := localsys.Write(desc, localsys.System{
		Services: map[string]string{"ipam": addr, "lbipam": addr, "policy": addr, "operator": addr},
		TLS:      localsys.TLS{CA: caFile, Cert: cert, Key: key},
	}); err != nil {
		t.Fatal(err)
	}
	only := []string{"--lbipam=", "--policy=", "--operator="}
	tests := []struct {
		name    string
		args    []string
		wantErr bool
		want    string // in the output
	}{
		{name: "local system", args: []string{"--local", desc}, want: "SERVING"},
		{name: "local system, explicit target", args: append([]string{"--local", desc, "--ipam", addr}, only...), want: "SERVING"},
		{name: "named description missing", args: []string{"--local", filepath.Join(dir, "none.json")}, wantErr: true},
		{name: "explicit certificates, no description", args: append([]string{"--ipam", addr, "--datapath=",
			"--cacert", caFile, "--cert", cert, "--key", key}, only...), want: "SERVING"},
		{name: "no certificate", args: append([]string{"--ipam", addr, "--datapath=", "--cacert", caFile}, only...), wantErr: true, want: "UNREACHABLE"},
		{name: "no CA", args: append([]string{"--ipam", addr, "--datapath="}, only...), wantErr: true, want: ErrNoTLS.Error()},
		{name: "plaintext to an mTLS service", args: append([]string{"--ipam", addr, "--datapath=", "--insecure"}, only...), wantErr: true, want: "UNREACHABLE"},
		{name: "insecure with certificates", args: append([]string{"--ipam", addr, "--datapath=", "--insecure", "--cacert", caFile}, only...), wantErr: true, want: "exclude each other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The default description is looked for in the working directory.
			t.Chdir(t.TempDir())
			var out bytes.Buffer
			cmd := newRootCmd()
			cmd.SetOut(&out)
			cmd.SetArgs(append([]string{"status"}, tt.args...))
			err := cmd.ExecuteContext(t.Context())
			if (err != nil) != tt.wantErr {
				t.Fatalf("status %q = %v, want error %v; output:\n%s", tt.args, err, tt.wantErr, out.String())
			}
			if !strings.Contains(out.String(), tt.want) {
				t.Errorf("output lacks %q:\n%s", tt.want, out.String())
			}
		})
	}
}

func TestCredentials(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		tr      transport
		target  string
		wantErr string // empty: credentials expected
	}{
		{name: "unix socket", target: "unix:///run/x.sock"},
		{name: "unix socket, TLS files ignored", tr: transport{caFile: "ca"}, target: "unix:///run/x.sock"},
		{name: "TCP plaintext by request", tr: transport{insecure: true}, target: "127.0.0.1:1"},
		{name: "TCP without TLS", target: "127.0.0.1:1", wantErr: ErrNoTLS.Error()},
		{name: "cert without key", tr: transport{caFile: "ca", certFile: "c"}, target: "127.0.0.1:1", wantErr: "together"},
		{name: "missing CA file", tr: transport{caFile: filepath.Join(dir, "none.pem")}, target: "127.0.0.1:1", wantErr: "read CA file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creds, err := tt.tr.credentials(tt.target)
			if tt.wantErr == "" {
				if err != nil || creds == nil {
					t.Fatalf("credentials(%q) = %v, %v; want credentials", tt.target, creds, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("credentials(%q) = %v, want an error mentioning %q", tt.target, err, tt.wantErr)
			}
		})
	}
}
