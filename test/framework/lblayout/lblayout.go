// Package lblayout is the layouts that the lb tests, the chaos run and the benchmarks
// share: three masters, an lb and a client, each in a network namespace of a lab that
// the test makes (10.77.0.0/24), with every request coming from the client; and the
// VIP's layout, with two lbs.
package lblayout

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/haagent/haagent/test/framework/hosts"
	"github.com/haagent/haagent/test/framework/netlab"
	"github.com/haagent/haagent/test/framework/probe"
	"github.com/haagent/haagent/test/framework/procs"
)

// The layout's addresses.
const (
	LBIP     = "10.77.0.10"
	ClientIP = "10.77.0.5"
)

// MasterIPs are m1, m2 and m3's addresses.
var MasterIPs = []string{"10.77.0.21", "10.77.0.22", "10.77.0.23"}

// VIP is the layout of the VIP tests and benchmark, in a subnet of its own: three
// masters, two lbs that share the VIP, and a client that sends every request to it.
var VIP = struct {
	Subnet      netip.Prefix
	VIP, Client string
	LBs         []string
	Masters     []string
}{
	Subnet:  netip.MustParsePrefix("10.81.0.0/24"),
	VIP:     "10.81.0.10",
	Client:  "10.81.0.5",
	LBs:     []string{"10.81.0.11", "10.81.0.12"},
	Masters: []string{"10.81.0.21", "10.81.0.22", "10.81.0.23"},
}

// Layout is the running masters and the nodes; the lb is the test's own to start.
type Layout struct {
	C       *procs.Cluster
	Masters []*netlab.Node
	LBNode  *netlab.Node
	Client  *netlab.Node
	Dir     string
	// LBEndpoint is the lb's etcd client URL.
	LBEndpoint string
	// Dialer connects from the client node, with m1's etcd client certificate when
	// the masters are secure (it stays on disk when m1 is killed).
	Dialer probe.Dialer
}

// Start makes the lab and starts the three masters, secure with token or --insecure
// when token is "", and returns once all are ready. When the test ends it stops them,
// with the logs of a failed test.
func Start(t *testing.T, bin, token string) *Layout {
	t.Helper()
	lab := hosts.NewWith(t, hosts.LabOptions{NetworkOnly: true})
	pairs := []string{"lb=" + LBIP, "client=" + ClientIP}
	for i, ip := range MasterIPs {
		pairs = append(pairs, fmt.Sprintf("m%d=%s", i+1, ip))
	}
	ns, err := lab.AddNodes(context.Background(), pairs...)
	if err != nil {
		t.Fatal(err)
	}
	l := &Layout{LBNode: ns[0], Client: ns[1], Masters: ns[2:], Dir: t.TempDir(), LBEndpoint: "http://" + LBIP + ":2379"}
	l.C = procs.NewClusterWith(bin, l.Dir, 3, procs.Options{Nodes: l.Masters})
	if token != "" {
		l.C.Secure(token)
		for _, m := range l.C.Masters {
			m.Extra = append(m.Extra, "--lb="+LBIP) // the lb's IP in the serving certificates
		}
		l.LBEndpoint = "https://" + LBIP + ":2379"
	}
	t.Cleanup(func() {
		l.C.StopAll()
		if t.Failed() {
			for _, m := range l.C.Masters {
				t.Logf("--- log of %s ---\n%s", m.Name, m.LogTail(30))
			}
		}
	})
	if err := l.C.StartAll(); err != nil {
		t.Fatal(err)
	}
	if err := l.C.WaitReady(procs.ReadyTimeout); err != nil {
		t.Fatal(err)
	}
	l.Dialer = probe.Dialer{Dial: l.Client.DialContext}
	if token != "" {
		f := l.TLSFiles()
		tc, err := probe.ClientTLS(f[0], f[1], f[2])
		if err != nil {
			t.Fatal(err)
		}
		l.Dialer.TLS = tc
	}
	return l
}

// TLSFiles are m1's CA, etcd client certificate and key.
func (l *Layout) TLSFiles() [3]string {
	pki := filepath.Join(l.C.Masters[0].Root, "etc/kubernetes/pki")
	return [3]string{filepath.Join(pki, "ca.crt"), filepath.Join(pki, "etcd-client.crt"), filepath.Join(pki, "etcd-client.key")}
}
