package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/axon-cni/axon/services/internal/daemon"
	"github.com/axon-cni/axon/services/internal/localsys"
)

// defaultLocal is where axon-local (make run, from the repository root)
// writes the description of the system it runs.
var defaultLocal = filepath.Join(".run", localsys.FileName)

// transport is how axonctl reaches the services' TCP APIs: mTLS with these
// files, or plaintext when asked for by name. Unix sockets need neither.
type transport struct {
	// local is the local system's description, which fills in the targets
	// and files the command line leaves out.
	local string
	// caFile verifies the servers; certFile and keyFile are axonctl's
	// client certificate.
	caFile, certFile, keyFile string
	// insecure dials TCP targets in plaintext (services run --insecure).
	insecure bool
}

// registerTransportFlags adds the flags of ep's targets' transport to root.
func registerTransportFlags(root *cobra.Command, ep *endpoints) {
	f := root.PersistentFlags()
	f.StringVar(&ep.transport.local, "local", defaultLocal, "`file` describing the local system (written by make run): the default targets and certificates")
	f.StringVar(&ep.transport.caFile, "cacert", "", "PEM CA `file` that verifies the services' certificates (default: the local system's)")
	f.StringVar(&ep.transport.certFile, "cert", "", "PEM client certificate `file` for the services' mTLS (default: the local system's)")
	f.StringVar(&ep.transport.keyFile, "key", "", "PEM private key `file` of --cert (default: the local system's)")
	f.BoolVar(&ep.transport.insecure, "insecure", false, "dial TCP targets in plaintext, for services run with --insecure")
}

// applyLocal fills in the targets and TLS files that cmd's command line
// leaves unset from the local system's description. The default description
// may be missing (then the flags' defaults stand); one named by --local
// may not.
func applyLocal(cmd *cobra.Command, ep *endpoints) error {
	f := cmd.Flags()
	sys, err := localsys.Read(ep.transport.local)
	if errors.Is(err, localsys.ErrNotFound) && !f.Changed("local") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--local: %w", err)
	}
	for name, target := range map[string]*string{"ipam": &ep.ipam, "lbipam": &ep.lbipam, "policy": &ep.policy, "operator": &ep.operator} {
		if t, ok := sys.Services[name]; ok && !f.Changed(name) {
			*target = t
		}
	}
	if !f.Changed("datapath") {
		ep.datapaths = sys.Datapaths
	}
	if ep.transport.insecure || f.Changed("cacert") || f.Changed("cert") || f.Changed("key") {
		return nil // the command line says how to connect
	}
	ep.transport.caFile, ep.transport.certFile, ep.transport.keyFile = sys.TLS.CA, sys.TLS.Cert, sys.TLS.Key
	return nil
}

// ErrNoTLS is the error for a TCP target without --cacert or --insecure.
var ErrNoTLS = errors.New("a TCP target needs --cacert (with --cert and --key for mTLS) or --insecure")

// credentials returns the transport credentials for dialing target.
func (t *transport) credentials(target string) (credentials.TransportCredentials, error) {
	if strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:") {
		return insecure.NewCredentials(), nil
	}
	switch {
	case t.insecure && (t.caFile != "" || t.certFile != "" || t.keyFile != ""):
		return nil, errors.New("--insecure and --cacert, --cert, --key exclude each other")
	case t.insecure:
		return insecure.NewCredentials(), nil
	case (t.certFile == "") != (t.keyFile == ""):
		return nil, errors.New("--cert and --key must be given together")
	case t.caFile == "":
		return nil, ErrNoTLS
	}
	tc, err := daemon.ClientTLSConfig(t.caFile, t.certFile, t.keyFile)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(tc), nil
}

// dial returns a connection to target with ep's transport.
func (ep *endpoints) dial(target string) (*grpc.ClientConn, error) {
	creds, err := ep.transport.credentials(target)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("invalid target: %w", err)
	}
	return conn, nil
}
