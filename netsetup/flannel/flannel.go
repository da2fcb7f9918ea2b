// Package flannel owns flannel's network config: its JSON form and the one-time
// seeding of it into etcd, where every flanneld reads it.
package flannel

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"path"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults match the classic CentOS layout.
const (
	DefaultPrefix    = "/kube-centos/network"
	DefaultNetwork   = "172.30.0.0/16"
	DefaultSubnetLen = 24
	DefaultBackend   = "vxlan"
)

// Backends flannel 0.28 ships that need no cloud API.
var Backends = []string{"vxlan", "host-gw", "wireguard", "udp", "ipip", "ipsec"}

// Network is flannel's network config, as stored at <prefix>/config.
type Network struct {
	Network   string  `json:"Network"`
	SubnetLen int     `json:"SubnetLen"`
	Backend   Backend `json:"Backend"`
}

// Backend is the "Backend" object of the config.
type Backend struct {
	Type string `json:"Type"`
}

// ConfigKey is the etcd key flanneld reads its config from.
func ConfigKey(prefix string) string { return path.Join(prefix, "config") }

// JSON renders the config exactly as flanneld expects it.
func (n Network) JSON() string {
	b, _ := json.Marshal(n) // a struct of strings and ints always marshals
	return string(b)
}

// InvalidError is a config flanneld would refuse; Field says which of its fields.
type InvalidError struct {
	// Field is "Network" or "SubnetLen", as the JSON names them.
	Field string
	msg   string
}

func (e *InvalidError) Error() string { return e.msg }

// Validate checks the config the way flanneld would refuse it; the error is an
// *InvalidError.
func (n Network) Validate() error {
	p, err := netip.ParsePrefix(n.Network)
	if err != nil || !p.Addr().Is4() || p.Masked() != p {
		return &InvalidError{Field: "Network", msg: fmt.Sprintf("network %q is not an IPv4 CIDR such as 172.30.0.0/16", n.Network)}
	}
	if n.SubnetLen <= p.Bits() || n.SubnetLen > 30 {
		return &InvalidError{Field: "SubnetLen", msg: fmt.Sprintf("subnet length %d must be larger than the network's /%d and at most 30", n.SubnetLen, p.Bits())}
	}
	return nil
}

// Seed writes the config if the key is absent, in one transaction so that three masters
// racing at bootstrap write it once. An existing, different value wins and is reported.
func Seed(ctx context.Context, kv clientv3.KV, prefix string, n Network, lg *slog.Logger) error {
	key := ConfigKey(prefix)
	want := n.JSON()
	resp, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, want)).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return fmt.Errorf("seed flannel config %s: %w", key, err)
	}
	if resp.Succeeded {
		lg.Info("seeded flannel network config", "key", key, "value", want)
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return fmt.Errorf("seed flannel config %s: key vanished during the transaction", key)
	}
	have := string(kvs[0].Value)
	var got Network
	if json.Unmarshal(kvs[0].Value, &got) != nil || got != n {
		lg.Warn("flannel network config in etcd differs from the flags; keeping the stored value",
			"key", key, "stored", have, "flags", want)
	}
	return nil
}
