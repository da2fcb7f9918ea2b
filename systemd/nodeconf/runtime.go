package nodeconf

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/haagent/haagent/base/files"
)

// Paths of a minion's runtime and pod-network files, relative to --root.
const (
	ContainerdConfig = "etc/containerd/config.toml"
	// ContainerdCertsDir holds one hosts.toml per mirrored registry (containerd's config_path).
	ContainerdCertsDir = "etc/containerd/certs.d"
	// CNIConfList is the pod network: a bridge on the node's flannel subnet.
	CNIConfList = "etc/cni/net.d/10-haagent.conflist"
	// CNIConfDir is where the runtime looks for CNI configs.
	CNIConfDir = "etc/cni/net.d"
	// FlannelSubnetEnv is where flanneld writes the node's lease (a runtime file, not rendered).
	FlannelSubnetEnv = "run/flannel/subnet.env"
)

// PrunedDirs are the directories in which every file haagent writes comes from Render,
// so that a file it wrote there and no longer renders is stale: the hosts.toml of a
// registry mirror taken off --registry-mirror. The reconciler removes those.
func PrunedDirs() []string { return []string{ContainerdCertsDir} }

// DefaultSandboxImage is the pause image containerd pins; the kubelet has no say since 1.35.
const DefaultSandboxImage = "registry.k8s.io/pause:3.10"

// Mirror sends pulls for Registry to Endpoint first, as k3s's registries.yaml does.
type Mirror struct {
	// Registry is the registry host as images name it: docker.io, registry.k8s.io, quay.io.
	Registry string
	// Endpoint is the mirror's URL, http or https.
	Endpoint string
}

// ParseMirror reads one --registry-mirror value, REGISTRY=URL.
func ParseMirror(s string) (Mirror, error) {
	reg, ep, ok := strings.Cut(s, "=")
	if !ok || reg == "" || ep == "" {
		return Mirror{}, fmt.Errorf("%q is not REGISTRY=URL (e.g. docker.io=http://10.0.0.11:5000)", s)
	}
	if strings.ContainsAny(reg, "/:@ \t") && !isHostPort(reg) {
		return Mirror{}, fmt.Errorf("%q: registry %q must be a host name such as docker.io", s, reg)
	}
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return Mirror{}, fmt.Errorf("%q: mirror %q must be an http:// or https:// URL with a host and no path", s, ep)
	}
	return Mirror{Registry: reg, Endpoint: strings.TrimSuffix(ep, "/")}, nil
}

// isHostPort accepts a registry named with a port, such as lb1:5000.
func isHostPort(s string) bool {
	h, p, ok := strings.Cut(s, ":")
	if !ok || h == "" || strings.ContainsAny(h, "/@ \t") {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 65536
}

// FlannelSubnet is the node's lease as flanneld reports it in subnet.env.
type FlannelSubnet struct {
	// Network is the whole overlay (FLANNEL_NETWORK), e.g. 172.30.0.0/16.
	Network netip.Prefix
	// Subnet is this node's share (FLANNEL_SUBNET), e.g. 172.30.20.1/24: the gateway
	// address with the subnet's length.
	Subnet netip.Prefix
	// MTU is the overlay's MTU (FLANNEL_MTU), the vxlan header taken off.
	MTU int
	// IPMasq is FLANNEL_IPMASQ: flanneld masquerades traffic leaving the overlay itself.
	IPMasq bool
}

// ParseSubnetEnv reads flanneld's subnet.env.
func ParseSubnetEnv(b []byte) (*FlannelSubnet, error) {
	vars, err := ParseEnv(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	var s FlannelSubnet
	if s.Network, err = netip.ParsePrefix(vars["FLANNEL_NETWORK"]); err != nil {
		return nil, fmt.Errorf("FLANNEL_NETWORK: %w", err)
	}
	if s.Subnet, err = netip.ParsePrefix(vars["FLANNEL_SUBNET"]); err != nil {
		return nil, fmt.Errorf("FLANNEL_SUBNET: %w", err)
	}
	if !s.Network.Contains(s.Subnet.Addr()) {
		return nil, fmt.Errorf("FLANNEL_SUBNET %s is outside FLANNEL_NETWORK %s", s.Subnet, s.Network)
	}
	if s.MTU, err = strconv.Atoi(vars["FLANNEL_MTU"]); err != nil || s.MTU < 576 {
		return nil, fmt.Errorf("FLANNEL_MTU %q is not an MTU", vars["FLANNEL_MTU"])
	}
	s.IPMasq = vars["FLANNEL_IPMASQ"] == "true"
	return &s, nil
}

// cniConfList is the pod network as flannel's own CNI plugin would delegate it (that
// plugin is in no distro package): a bridge with host-local addresses from the node's
// subnet, the bridge as the pods' default gateway, and portmap for hostPorts. The
// runtime adds loopback itself.
func cniConfList(s *FlannelSubnet) ([]byte, error) {
	type obj = map[string]any
	conf := obj{
		"cniVersion": "0.4.0",
		"name":       "haagent",
		"plugins": []obj{
			{
				"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
				// flanneld --ip-masq already masquerades what leaves the overlay; doing it
				// twice would hide pod addresses from pods on other nodes.
				"ipMasq": !s.IPMasq, "hairpinMode": true, "mtu": s.MTU,
				"ipam": obj{
					"type":   "host-local",
					"ranges": [][]obj{{{"subnet": s.Subnet.Masked().String(), "gateway": s.Subnet.Addr().String()}}},
					"routes": []obj{{"dst": s.Network.String()}},
				},
			},
			{"type": "portmap", "capabilities": obj{"portMappings": true}},
		},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// containerdConfig renders containerd's config for its major version: config version 2
// (the CRI plugin under io.containerd.grpc.v1.cri) for containerd 1.x, version 3 (split
// into io.containerd.cri.v1.images and .runtime) for 2.x.
func containerdConfig(c Config) []byte {
	systemdCgroup := strconv.FormatBool(c.CgroupDriver == "systemd")
	restrict := strconv.FormatBool(c.RestrictOOMScoreAdj)
	cniBin := c.CNIBinDir
	if cniBin == "" {
		cniBin = "/opt/cni/bin"
	}
	sandbox := c.SandboxImage
	if sandbox == "" {
		sandbox = DefaultSandboxImage
	}
	certs := "/" + ContainerdCertsDir
	conf := "/" + CNIConfDir
	var b strings.Builder
	b.WriteString(Header + "\n")
	if c.ContainerdMajor >= 2 {
		fmt.Fprintf(&b, `version = 3
root = "/var/lib/containerd"
state = "/run/containerd"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %q
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = %q

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = %s
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = %s
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [%q]
    conf_dir = %q
`, sandbox, certs, restrict, systemdCgroup, cniBin, conf)
		return []byte(b.String())
	}
	fmt.Fprintf(&b, `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = %s
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = %s
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`, sandbox, restrict, systemdCgroup, cniBin, conf, certs)
	return []byte(b.String())
}

// registryHosts is one registry's hosts.toml: the mirror first, then the registry itself.
func registryHosts(m Mirror) files.File {
	server := "https://" + m.Registry
	if m.Registry == "docker.io" {
		server = "https://registry-1.docker.io"
	}
	data := fmt.Sprintf("%s\nserver = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", Header, server, m.Endpoint)
	return files.File{Path: ContainerdCertsDir + "/" + m.Registry + "/hosts.toml", Mode: 0o644, Data: []byte(data)}
}

// ParseEnv reads an environment file as systemd's EnvironmentFile= does, for the
// simple lines that haagent's files and the operators' hold: KEY=VALUE, blank lines and
// lines starting with # or ; skipped, a value in matching single or double quotes
// unquoted.
func ParseEnv(r io.Reader) (map[string]string, error) {
	vars := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		vars[strings.TrimSpace(k)] = v
	}
	return vars, sc.Err()
}
