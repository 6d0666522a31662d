package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name     string
		json     string
		wantCode uint
		wantErr  string
		check    func(*testing.T, *NetConf)
	}{
		{
			name: "defaults",
			json: `{"cniVersion":"1.1.0","name":"axon","type":"axon-cni"}`,
			check: func(t *testing.T, c *NetConf) {
				if c.Socket != DefaultSocket || c.Timeout.Duration != DefaultTimeout {
					t.Errorf("defaults not applied: socket %q timeout %s", c.Socket, c.Timeout)
				}
			},
		},
		{
			name: "everything set",
			json: `{"cniVersion":"1.0.0","name":"axon","type":"axon-cni","socket":"/tmp/x.sock","timeout":"5s","mtu":1400,"pools":["a"],
				"runtimeConfig":{"ips":["10.0.0.5/24","fd00::5"]}}`,
			check: func(t *testing.T, c *NetConf) {
				ips, err := c.RequestedIPs()
				if err != nil || fmt.Sprint(ips) != "[10.0.0.5 fd00::5]" {
					t.Errorf("RequestedIPs() = %v, %v", ips, err)
				}
				if c.Timeout.Duration != 5*time.Second || c.MTU != 1400 || c.Socket != "/tmp/x.sock" {
					t.Errorf("fields not parsed: %+v", c)
				}
			},
		},
		{name: "not JSON", json: `{"cniVersion":`, wantCode: types.ErrDecodingFailure},
		{name: "wrong type", json: `{"cniVersion":"1.1.0","name":"axon","mtu":"big"}`, wantCode: types.ErrDecodingFailure},
		{name: "bad timeout", json: `{"cniVersion":"1.1.0","name":"axon","timeout":"soon"}`, wantCode: types.ErrDecodingFailure, wantErr: "timeout"},
		{name: "missing version", json: `{"name":"axon"}`, wantCode: types.ErrInvalidNetworkConfig, wantErr: "cniVersion"},
		{name: "missing name", json: `{"cniVersion":"1.1.0"}`, wantCode: types.ErrInvalidNetworkConfig, wantErr: "name"},
		{name: "relative socket", json: `{"cniVersion":"1.1.0","name":"a","socket":"dp.sock"}`, wantCode: types.ErrInvalidNetworkConfig, wantErr: "absolute"},
		{name: "negative timeout", json: `{"cniVersion":"1.1.0","name":"a","timeout":"-1s"}`, wantCode: types.ErrInvalidNetworkConfig, wantErr: "timeout"},
		{name: "tiny mtu", json: `{"cniVersion":"1.1.0","name":"a","mtu":100}`, wantCode: types.ErrInvalidNetworkConfig, wantErr: "mtu"},
		{name: "empty pool", json: `{"cniVersion":"1.1.0","name":"a","pools":[""]}`, wantCode: types.ErrInvalidNetworkConfig, wantErr: "pools"},
		{name: "bad ip", json: `{"cniVersion":"1.1.0","name":"a","runtimeConfig":{"ips":["10.0.0.300"]}}`, wantCode: types.ErrInvalidNetworkConfig, wantErr: "not an address"},
		{name: "two IPv4", json: `{"cniVersion":"1.1.0","name":"a","runtimeConfig":{"ips":["10.0.0.1","10.0.0.2"]}}`, wantCode: types.ErrInvalidNetworkConfig, wantErr: "more than one"},
		{name: "bad prevResult", json: `{"cniVersion":"1.1.0","name":"a","prevResult":{"ips":"x"}}`, wantCode: types.ErrDecodingFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.json))
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatalf("Parse() = %v", err)
				}
				tt.check(t, c)
				return
			}
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse() = %v, want a CNI error", err)
			}
			if e.Code != tt.wantCode {
				t.Errorf("code = %d (%v), want %d", e.Code, e, tt.wantCode)
			}
			if !strings.Contains(e.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", e.Error(), tt.wantErr)
			}
		})
	}
}

func TestRequestedPools(t *testing.T) {
	c := &NetConf{Pools: []string{"default"}}
	if got := fmt.Sprint(c.RequestedPools()); got != "[default]" {
		t.Errorf("without annotation: %s", got)
	}
	c.RuntimeConfig.PodAnnotations = map[string]string{PoolAnnotation: " blue ,, green "}
	if got := fmt.Sprint(c.RequestedPools()); got != "[blue green]" {
		t.Errorf("with annotation: %s", got)
	}
}

func TestParseArgs(t *testing.T) {
	k, raw, err := ParseArgs("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;UNKNOWN=1")
	if err != nil {
		t.Fatal(err)
	}
	if k.K8S_POD_NAMESPACE != "ns" || k.K8S_POD_NAME != "p" || raw["UNKNOWN"] != "1" {
		t.Errorf("ParseArgs = %+v %v", k, raw)
	}
	_, _, err = ParseArgs("novalue")
	var e *types.Error
	if !errors.As(err, &e) || e.Code != types.ErrInvalidEnvironmentVariables {
		t.Errorf("ParseArgs(malformed) = %v, want code %d", err, types.ErrInvalidEnvironmentVariables)
	}
}

// FuzzParse checks that no input panics and every accepted configuration
// satisfies the invariants the plugin relies on.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"axon","type":"axon-cni"}`))
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"a","socket":"/s","timeout":"1s","mtu":1500,"runtimeConfig":{"ips":["fd00::1/64"]}}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"a","prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.1/32"}]}}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"a","cni.dev/valid-attachments":[{"containerID":"x","ifname":"eth0"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not a CNI error", err)
			}
			return
		}
		if !strings.HasPrefix(c.Socket, "/") || c.Timeout.Duration <= 0 {
			t.Fatalf("accepted invalid config: socket %q timeout %s", c.Socket, c.Timeout)
		}
		if _, err := c.RequestedIPs(); err != nil {
			t.Fatalf("accepted config with bad IPs: %v", err)
		}
	})
}

func FuzzParseArgs(f *testing.F) {
	f.Add("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;IgnoreUnknown=1")
	f.Add("a=b=c;;=")
	f.Fuzz(func(t *testing.T, s string) {
		_, _, _ = ParseArgs(s)
	})
}

// TestSampleConflist keeps the shipped configuration valid: each plugin
// entry, with the list's name and version as a runtime passes them, parses.
func TestSampleConflist(t *testing.T) {
	b, err := os.ReadFile("../../conf/10-axon.conflist")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		CNIVersion string            `json:"cniVersion"`
		Name       string            `json:"name"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	for _, raw := range list.Plugins {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		m["cniVersion"], m["name"] = list.CNIVersion, list.Name
		conf, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(conf); err != nil {
			t.Errorf("sample plugin config %s: %v", raw, err)
		}
	}
}
