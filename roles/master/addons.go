package master

import (
	"context"
	"net/netip"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/haagent/haagent/cluster/addons"
	"github.com/haagent/haagent/trust/pki"
)

// runAddons applies CoreDNS and the operator's add-ons (addons package) while this
// master holds their election, as the admin, through the admin kubeconfig's server.
func (m *Master) runAddons(ctx context.Context, g *errgroup.Group) {
	c := addons.NewController(addons.ControllerConfig{
		Client:   m.member.Client,
		Master:   m.cfg.Name,
		Disable:  m.cfg.Disable,
		Builtins: m.cfg.builtinAddons,
		Applier: func() (*addons.Applier, error) {
			return addons.NewApplier(filepath.Join(m.cfg.Root, pki.AdminKubeconfig))
		},
		Logger: m.lg,
	})
	g.Go(func() error { return c.Run(ctx) })
}

// builtinAddons renders the built-in add-ons: the RBAC of the minions' NetworkPolicy
// controllers, and CoreDNS at the service range's tenth
// address, where the minions' --cluster-dns points, watching the API through the lb
// when --lb is an IP.
func (c *Config) builtinAddons(f addons.Facts) (map[string][]byte, error) {
	ip, err := addons.DNSServiceIP(c.ServiceClusterIPRange)
	if err != nil {
		return nil, err
	}
	var api netip.AddrPort
	if lb, err := netip.ParseAddr(c.LB); err == nil {
		api = netip.AddrPortFrom(lb, 6443)
	}
	dns, err := addons.RenderCoreDNS(addons.DNSOptions{ServiceIP: ip, Domain: c.ClusterDomain, Image: addons.CoreDNSImage,
		RootCAHash: f.RootCAHash, APIServer: api})
	if err != nil {
		return nil, err
	}
	return map[string][]byte{addons.CoreDNS: dns, addons.NetworkPolicy: addons.RenderNetworkPolicy(pki.NetworkPolicyUser)}, nil
}
