package minion

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/haagent/haagent/base/release"
	"github.com/haagent/haagent/cluster/airgap"
	"github.com/haagent/haagent/netsetup/netpol"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/systemd/reconcile"
	"github.com/haagent/haagent/trust/pki"
)

// Status is the document behind /status on a minion.
type Status struct {
	Role    string    `json:"role"`
	Name    string    `json:"name"`
	Version string    `json:"version"`
	LB      string    `json:"lb"`
	Host    HostFacts `json:"host"`
	Driver  string    `json:"cgroupDriver"`
	Subnet  string    `json:"podSubnet,omitempty"`
	// LocalLB is the node-local lb (--lb=local): its masters and backends.
	LocalLB *LocalLBStatus `json:"localLB,omitempty"`
	Images  *airgap.Result `json:"airgapImages,omitempty"`
	Certs   []pki.CertInfo `json:"certs,omitempty"`
	// CertWarnings are the certificates among Certs that expire within 120 days.
	CertWarnings []node.CertWarning `json:"certWarnings,omitempty"`
	Node         *reconcile.Status  `json:"node,omitempty"`
	// NetworkPolicy is the NetworkPolicy controller's state; nil with --network-policy=false.
	NetworkPolicy *netpol.Status `json:"networkPolicy,omitempty"`
}

func (m *Minion) ready() error {
	if err := m.node.FilesWritten(); err != nil {
		return err
	}
	if m.cfg.Insecure {
		return nil
	}
	if _, err := os.Stat(filepath.Join(m.cfg.Root, pki.KubeletKubeconfig)); err != nil {
		return errors.New("not joined yet")
	}
	return nil
}

func (m *Minion) status(ctx context.Context) (any, error) {
	certs, _ := pki.Inspect(m.cfg.Root)
	st := Status{Role: "minion", Name: m.cfg.Name, Version: release.Version, LB: m.cfg.LB, Certs: certs,
		Host: m.cfg.Host, Driver: m.cfg.cgroupDriver()}
	if s := m.cfg.subnet(); s != nil {
		st.Subnet = s.Subnet.Masked().String()
	}
	st.Node = m.node.FilesStatus()
	st.CertWarnings = m.node.CertWarnings()
	if m.local != nil {
		st.LocalLB = m.local.status()
	}
	m.mu.Lock()
	st.Images = m.images
	m.mu.Unlock()
	st.NetworkPolicy = m.networkPolicyStatus()
	return st, nil
}

// PrintStatus writes the minion's part of `haagent status`.
func PrintStatus(w io.Writer, st Status) {
	fmt.Fprintf(w, "role: %s   name: %s   version: %s   lb: %s\n", st.Role, st.Name, st.Version, st.LB)
	cg := string(st.Host.CgroupMode)
	if st.Host.CgroupMode.IsV1() {
		cg += " (deprecated upstream; the kubelet runs with failCgroupV1: false unless --fail-cgroup-v1)"
	}
	fmt.Fprintf(w, "cgroups: %s   driver: %s\n", cg, st.Driver)
	rt := "containerd " + st.Host.ContainerdVersion
	if st.Host.ContainerdVersion == "" {
		rt = "containerd: not found on PATH"
	}
	subnet := st.Subnet
	if subnet == "" {
		subnet = "none yet (waiting for flanneld's lease)"
	}
	fmt.Fprintf(w, "runtime: %s   CNI plugins: %s   pod subnet: %s\n", rt, st.Host.CNIBinDir, subnet)
	if im := st.Images; im != nil && (len(im.Imported) > 0 || len(im.Failed) > 0) {
		fmt.Fprintf(w, "airgap images: %d imported", len(im.Imported))
		for f, e := range im.Failed {
			fmt.Fprintf(w, "; %s failed: %s", f, e)
		}
		fmt.Fprintln(w)
	}
	if st.LocalLB != nil {
		printLocalLB(w, *st.LocalLB)
	}
	node.PrintCertWarnings(w, st.CertWarnings)
}
