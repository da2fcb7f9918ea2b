package master

import (
	"net"
	"strconv"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/systemd/nodeconf"
)

// NodeConfig is what this master's kube and flannel files are rendered from.
// The apiserver and flanneld talk to the local etcd member.
func (c *Config) NodeConfig() nodeconf.Config {
	return nodeconf.Config{
		Role: "master", Name: c.Name, AdvertiseAddress: c.AdvertiseAddress, LB: c.LB,
		EtcdEndpoints:         []string{c.Scheme() + "://" + net.JoinHostPort(c.AdvertiseAddress, strconv.Itoa(c.EtcdClientPort))},
		ServiceClusterIPRange: c.ServiceClusterIPRange,
		FlannelPrefix:         c.FlannelPrefix, FlannelIface: c.Iface,
		Root: c.Root, Insecure: c.Insecure, ExtraArgs: c.Args,
	}
}

// Render returns every file this master owns besides its certificates: the
// EnvironmentFiles and the unit files no package provides.
func (c *Config) Render() ([]files.File, error) {
	return nodeconf.Files(c.NodeConfig())
}
