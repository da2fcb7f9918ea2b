package minion

import (
	"context"
	"fmt"
	"os/exec"
	"time"

	"github.com/haagent/haagent/netsetup/hostinfo"
)

// HostFacts are the facts of the host that the minion's files depend on.
type HostFacts struct {
	CgroupMode hostinfo.CgroupMode `json:"cgroupMode"`
	// ContainerdVersion is "major.minor", empty when containerd is not installed.
	ContainerdVersion string `json:"containerdVersion,omitempty"`
	containerdMajor   int
	CNIBinDir         string `json:"cniBinDir"`
	// RestrictOOMScoreAdj is set where haagent lacks CAP_SYS_RESOURCE (inside a container).
	RestrictOOMScoreAdj bool `json:"restrictOOMScoreAdj,omitempty"`
}

// ReadHostFacts reads the cgroup mode, the containerd version, the CNI plugin dir and
// whether runc may lower oom_score_adj.
func ReadHostFacts(root string) HostFacts {
	h := HostFacts{CgroupMode: hostinfo.DetectCgroupMode(root), CNIBinDir: hostinfo.CNIBinDir(root)}
	// A containerd that isn't installed yet gets the config version 2 format, which
	// containerd 2.x also reads (it migrates it in memory).
	if bin, err := exec.LookPath("containerd"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if major, minor, err := hostinfo.ContainerdVersion(ctx, bin); err == nil {
			h.containerdMajor, h.ContainerdVersion = major, fmt.Sprintf("%d.%d", major, minor)
		}
	}
	if ok, err := hostinfo.CanRaiseOOMPriority(); err == nil && !ok {
		h.RestrictOOMScoreAdj = true
	}
	return h
}
