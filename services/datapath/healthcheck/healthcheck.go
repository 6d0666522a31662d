// Package healthcheck answers Kubernetes' healthCheckNodePort: an HTTP
// server per port on the node's addresses, telling a cloud load balancer
// whether this node has a ready backend of a Service whose external
// traffic policy is Local (200) or none (503), with kube-proxy's body.
package healthcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Service is what one health check port reports.
type Service struct {
	// Namespace and Name name the Kubernetes Service.
	Namespace, Name string
	// LocalEndpoints is the number of its ready backends on this node.
	LocalEndpoints int
}

// readTimeout bounds how long a client may take to send its request.
const readTimeout = 5 * time.Second

// Servers are the node's health check servers. They are safe for
// concurrent use.
type Servers struct {
	addrs []netip.Addr
	log   *slog.Logger

	mu      sync.Mutex // guards servers
	servers map[uint16]*server
}

type server struct {
	http  *http.Server
	state atomic.Pointer[Service]
}

// New returns servers that listen on addrs (the node's addresses), none
// open until Sync.
func New(addrs []netip.Addr, log *slog.Logger) *Servers {
	return &Servers{addrs: addrs, log: log, servers: map[uint16]*server{}}
}

// Sync makes the servers those of want: a server is opened for each new
// port, closed for each port no longer in it, and the others answer with
// their new state at once. A port that cannot be opened (another process
// holds it) is reported in the error; the rest are synced all the same.
func (s *Servers) Sync(want map[uint16]Service) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for port, srv := range s.servers {
		if _, ok := want[port]; !ok {
			_ = srv.http.Close()
			delete(s.servers, port)
		}
	}
	for port, svc := range want {
		if srv, ok := s.servers[port]; ok {
			srv.state.Store(&svc)
			continue
		}
		srv, err := s.open(port, svc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.servers[port] = srv
	}
	return errors.Join(errs...)
}

// open listens on port of every node address and serves svc.
func (s *Servers) open(port uint16, svc Service) (*server, error) {
	srv := &server{}
	srv.state.Store(&svc)
	srv.http = &http.Server{Handler: srv, ReadHeaderTimeout: readTimeout, ReadTimeout: readTimeout}
	var ls []net.Listener
	for _, a := range s.addrs {
		l, err := net.Listen("tcp", net.JoinHostPort(a.String(), strconv.Itoa(int(port))))
		if err != nil {
			for _, l := range ls {
				_ = l.Close()
			}
			return nil, fmt.Errorf("health check node port %d: %w", port, err)
		}
		ls = append(ls, l)
	}
	for _, l := range ls {
		go func() {
			if err := srv.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Warn("health check server stopped", "port", port, "err", err)
			}
		}()
	}
	return srv, nil
}

// Close closes every server.
func (s *Servers) Close() error {
	return s.Sync(nil)
}

// body is kube-proxy's answer.
type body struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints int `json:"localEndpoints"`
}

func (srv *server) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	svc := srv.state.Load()
	var b body
	b.Service.Namespace, b.Service.Name, b.LocalEndpoints = svc.Namespace, svc.Name, svc.LocalEndpoints
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if svc.LocalEndpoints == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(b)
}
