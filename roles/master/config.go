package master

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/haagent/haagent/cluster/addons"
	"github.com/haagent/haagent/cluster/roll"
	"github.com/haagent/haagent/embed/etcdmember"
	"github.com/haagent/haagent/netsetup/flannel"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/systemd/nodeconf"
	"github.com/haagent/haagent/trust/join"
	"github.com/haagent/haagent/trust/pki"
)

// Defaults for the master's flags.
const (
	DefaultListenAddress = "0.0.0.0"
	DefaultDataDir       = "/var/lib/haagent/etcd"
	DefaultRoot          = node.DefaultRoot
)

// Config is everything a master needs; see AddFlags for each field's flag.
type Config struct {
	// Config holds the flags every role shares: name, token, insecure, root, status
	// address, join port and systemd.
	node.Config
	node.Address
	// Peers is --peers as given; Complete resolves it into peers (PeerList).
	Peers          etcdmember.PeersValue
	peers          etcdmember.Peers
	ListenAddress  string
	EtcdClientPort int
	EtcdPeerPort   int
	DataDir        string
	// RollGateTimeout bounds a new haagent binary's gate (package roll).
	RollGateTimeout time.Duration
	ClusterToken    string
	// HeartbeatInterval and ElectionTimeout are etcd's raft timings.
	HeartbeatInterval time.Duration
	ElectionTimeout   time.Duration
	FlannelPrefix     string
	// EtcdAuth makes the master enable etcd's authorization, with one user per
	// certificate CN (master.NewAuthPolicy). Off, it leaves etcd as it finds it: a
	// cluster built before does not get auth, and one that has it keeps it.
	EtcdAuth         bool
	FlannelNetwork   string
	FlannelSubnetLen int
	FlannelBackend   string
	// LB is the lb's address: it goes into the masters' SANs and the admin kubeconfig.
	LB string
	// ServiceClusterIPRange is the Kubernetes service range; its first IP is in the apiserver's SANs.
	ServiceClusterIPRange string
	// ClusterDomain is the cluster's DNS domain, which CoreDNS serves.
	ClusterDomain string
	// Disable are the built-in add-ons (addons.Builtins) this master has no master apply.
	Disable []string
	// AgentToken is the agent token a new cluster starts with (pki.ParseToken form);
	// empty makes one. The cluster's agent token lives sealed in etcd after that.
	AgentToken string
	// AgentTokenFile is a file holding AgentToken, which keeps it out of ps.
	AgentTokenFile string
	// LBToken is the lb token a new cluster (or one made before lb tokens) starts with
	// (pki.ParseToken form); empty makes one. It lives sealed in etcd after that.
	LBToken string
	// LBTokenFile is a file holding LBToken.
	LBTokenFile string
	// Args are the operator's flags for kube-apiserver, kube-controller-manager,
	// kube-scheduler and flanneld.
	Args node.ComponentArgs
	// Recovery holds the scheduled snapshots' flags and etcd's space quota.
	Recovery
	// savedToken is whether Complete found the token this master saved (TokenFile):
	// with it, a master of several starts without --token, as one of a cluster made
	// with a token the flags now refuse must.
	savedToken bool
}

// DefaultServiceClusterIPRange is the seed's service range.
const DefaultServiceClusterIPRange = "10.254.0.0/16"

// NewConfig returns a Config holding the defaults.
func NewConfig() *Config {
	return &Config{
		Config:            node.NewConfig(),
		ListenAddress:     DefaultListenAddress,
		EtcdClientPort:    etcdmember.DefaultClientPort,
		EtcdPeerPort:      etcdmember.DefaultPeerPort,
		DataDir:           DefaultDataDir,
		ClusterToken:      etcdmember.DefaultClusterToken,
		HeartbeatInterval: etcdmember.DefaultHeartbeatInterval,
		ElectionTimeout:   etcdmember.DefaultElectionTimeout,
		FlannelPrefix:     flannel.DefaultPrefix,
		EtcdAuth:          true,
		FlannelNetwork:    flannel.DefaultNetwork,
		FlannelSubnetLen:  flannel.DefaultSubnetLen,
		FlannelBackend:    flannel.DefaultBackend,

		ServiceClusterIPRange: DefaultServiceClusterIPRange,
		ClusterDomain:         nodeconf.DefaultClusterDomain,
		Recovery:              NewRecovery(),
		RollGateTimeout:       roll.DefaultGateTimeout,
	}
}

// AddFlags binds the master's flags to c.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.Var(&c.Peers, "peers", "the masters: name=http://ip:2380,... or plain hosts host1,host2,host3 (default: a single-member cluster on this host)")
	c.Address.AddFlags(fs)
	fs.StringVar(&c.ListenAddress, "listen-address", c.ListenAddress, "IP that etcd's client and peer ports bind to")
	fs.IntVar(&c.EtcdClientPort, "etcd-client-port", c.EtcdClientPort, "etcd client port")
	fs.IntVar(&c.EtcdPeerPort, "etcd-peer-port", c.EtcdPeerPort, "etcd peer port, used for plain hosts in --peers")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "etcd data dir; haagent never deletes it")
	fs.DurationVar(&c.RollGateTimeout, "roll-gate-timeout", c.RollGateTimeout, "how long a newly installed haagent binary has, once it runs, to get this master serving again (etcd member caught up, apiserver ready) before the master goes back to the binary before it and the roll stops")
	fs.StringVar(&c.ClusterToken, "cluster-token", c.ClusterToken, "etcd initial cluster token, the same on every master")
	fs.DurationVar(&c.HeartbeatInterval, "etcd-heartbeat-interval", c.HeartbeatInterval, "etcd raft heartbeat interval")
	fs.DurationVar(&c.ElectionTimeout, "etcd-election-timeout", c.ElectionTimeout, "etcd raft election timeout")
	fs.StringVar(&c.FlannelPrefix, "flannel-prefix", c.FlannelPrefix, "etcd prefix of flannel's network config")
	fs.BoolVar(&c.EtcdAuth, "etcd-auth", c.EtcdAuth, "enable etcd authorization: each etcd client certificate's CN is its etcd user, limited to what it needs (secure mode only; false leaves etcd's auth as it is, it never disables it)")
	fs.StringVar(&c.FlannelNetwork, "flannel-network", c.FlannelNetwork, "flannel overlay network CIDR")
	fs.IntVar(&c.FlannelSubnetLen, "flannel-subnet-len", c.FlannelSubnetLen, "prefix length of each host's flannel subnet")
	fs.StringVar(&c.FlannelBackend, "flannel-backend", c.FlannelBackend, "flannel backend type: "+strings.Join(flannel.Backends, ", "))
	fs.StringVar(&c.LB, "lb", c.LB, "the lb's address, for the masters' certificates and the admin kubeconfig")
	fs.StringVar(&c.ServiceClusterIPRange, "service-cluster-ip-range", c.ServiceClusterIPRange, "Kubernetes service CIDR")
	fs.StringVar(&c.ClusterDomain, "cluster-domain", c.ClusterDomain, "the cluster's DNS domain, which CoreDNS serves; the minions' --cluster-domain must be the same")
	fs.StringSliceVar(&c.Disable, "disable", c.Disable, "built-in add-ons no master is to apply, comma-separated ("+strings.Join(addons.Builtins, ", ")+"); a master that names one deletes its objects cluster-wide")
	fs.StringVar(&c.AgentToken, "agent-token", c.AgentToken, "the agent token a new cluster starts with, for minions (default: the first master makes one); 'haagent token rotate --agent' changes it later. Prefer --agent-token-file")
	fs.StringVar(&c.AgentTokenFile, "agent-token-file", c.AgentTokenFile, "file holding the agent token a new cluster starts with (instead of --agent-token)")
	fs.StringVar(&c.LBToken, "lb-token", c.LBToken, "the lb token a new cluster starts with, for lbs (default: the first master makes one); 'haagent token rotate --lb' changes it later. Prefer --lb-token-file")
	fs.StringVar(&c.LBTokenFile, "lb-token-file", c.LBTokenFile, "file holding the lb token a new cluster starts with (instead of --lb-token)")
	c.Recovery.AddFlags(fs)
	c.Args.AddFlags(fs, nodeconf.ComponentAPIServer, nodeconf.ComponentControllerManager, nodeconf.ComponentScheduler, nodeconf.ComponentFlanneld)
	c.Config.AddFlags(fs)
}

// Complete fills the defaults that depend on the host: the hostname, the interface
// address and the single-member peer list. It reads the host but changes nothing.
func (c *Config) Complete() error {
	if err := errors.Join(c.Config.Complete(), c.Address.Complete(), node.ReadTokenFile(&c.AgentToken, c.AgentTokenFile, "agent-token"),
		node.ReadTokenFile(&c.LBToken, c.LBTokenFile, "lb-token")); err != nil {
		return err
	}
	if c.Token == "" {
		_, err := os.Stat(filepath.Join(c.Root, TokenFile))
		c.savedToken = err == nil
	}
	if !c.Peers.IsSet() {
		host := c.AdvertiseAddress
		if host == "" {
			host = "127.0.0.1"
			if ip := net.ParseIP(c.ListenAddress); ip != nil && !ip.IsUnspecified() {
				host = c.ListenAddress
			}
		}
		if err := c.Peers.Set(c.Name + "=http://" + net.JoinHostPort(host, strconv.Itoa(c.EtcdPeerPort))); err != nil {
			return fmt.Errorf("--name: %w", err)
		}
	}
	c.peers = c.Peers.Resolve(c.Scheme(), c.EtcdPeerPort)
	if c.AdvertiseAddress == "" {
		if self, ok := c.peers.ByName(c.Name); ok {
			c.AdvertiseAddress = self.Host()
		}
	}
	return nil
}

// PeerList is --peers as Complete resolved it: in secure mode every peer URL is https.
func (c *Config) PeerList() etcdmember.Peers {
	return c.peers
}

// Flannel is the flannel network config the flags describe.
func (c *Config) Flannel() flannel.Network {
	return flannel.Network{Network: c.FlannelNetwork, SubnetLen: c.FlannelSubnetLen, Backend: flannel.Backend{Type: c.FlannelBackend}}
}

// Validate reports every problem at once, each naming its flag. It does no I/O.
func (c *Config) Validate() error {
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
	}
	peers := c.PeerList()
	if len(peers) == 0 {
		bad("peers", "no masters listed; use name=http://ip:2380,... or host1,host2,host3")
	} else if i := slices.IndexFunc(peers, func(p etcdmember.Peer) bool { return pki.NonMasterName(p.Name) }); i >= 0 {
		bad("peers", "%q can't name a master: non-masters hold certificates with that name; use another", peers[i].Name)
	} else if self, ok := peers.ByName(c.Name); !ok {
		bad("name", "%q is not in --peers (%s); set --name to one of the listed names", c.Name, peerNames(peers))
	} else if c.AdvertiseAddress != "" && !sameHost(c.AdvertiseAddress, self.Host()) {
		bad("advertise-address", "%s does not match the peer URL %s that --peers lists for %s; make them agree",
			c.AdvertiseAddress, self.URL.String(), c.Name)
	}
	if ip := net.ParseIP(c.ListenAddress); ip == nil {
		bad("listen-address", "%q is not an IP address; use 0.0.0.0 or one of this host's IPs", c.ListenAddress)
	}
	if c.RollGateTimeout < 10*time.Second {
		bad("roll-gate-timeout", "%s is too short for an etcd member and an apiserver to start; use at least 10s (default %s)", c.RollGateTimeout, roll.DefaultGateTimeout)
	}
	checkPort := func(flag string, p int) {
		if p < 1 || p > 65535 {
			bad(flag, "%d is not a port in 1-65535", p)
		}
	}
	checkPort("etcd-client-port", c.EtcdClientPort)
	checkPort("etcd-peer-port", c.EtcdPeerPort)
	if !filepath.IsAbs(c.DataDir) {
		bad("data-dir", "%q must be an absolute path", c.DataDir)
	}
	if c.ClusterToken == "" {
		bad("cluster-token", "must not be empty")
	}
	if c.HeartbeatInterval < 10*time.Millisecond || c.ElectionTimeout < 5*c.HeartbeatInterval {
		bad("etcd-election-timeout", "%s must be at least 5x --etcd-heartbeat-interval (%s), which must be at least 10ms",
			c.ElectionTimeout, c.HeartbeatInterval)
	}
	fl := c.Flannel()
	if err := fl.Validate(); err != nil {
		flag := "flannel-network"
		if ie, ok := errors.AsType[*flannel.InvalidError](err); ok && ie.Field == "SubnetLen" {
			flag = "flannel-subnet-len"
		}
		bad(flag, "%v", err)
	}
	if !slices.Contains(flannel.Backends, c.FlannelBackend) {
		bad("flannel-backend", "%q is not one of %s", c.FlannelBackend, strings.Join(flannel.Backends, ", "))
	}
	if !strings.HasPrefix(c.FlannelPrefix, "/") {
		bad("flannel-prefix", "%q must start with /", c.FlannelPrefix)
	}
	if p, err := netip.ParsePrefix(c.ServiceClusterIPRange); err != nil || p.Masked() != p {
		bad("service-cluster-ip-range", "%q is not a CIDR such as 10.254.0.0/16", c.ServiceClusterIPRange)
	} else if _, err := addons.DNSServiceIP(c.ServiceClusterIPRange); err != nil {
		bad("service-cluster-ip-range", "%v: CoreDNS's Service takes the tenth address; use a larger range", err)
	}
	if !join.ValidDNSName(c.ClusterDomain) {
		bad("cluster-domain", "%q is not a DNS domain such as cluster.local", c.ClusterDomain)
	}
	for _, a := range c.Disable {
		if !slices.Contains(addons.Builtins, a) {
			bad("disable", "%q is not a built-in add-on; use one of %s", a, strings.Join(addons.Builtins, ", "))
		}
	}
	tokenNeeded := ""
	if len(peers) > 1 && !c.savedToken {
		tokenNeeded = "for a cluster of several masters; run 'haagent token generate' once and give its server token as --token to every master (or --insecure for a lab)"
	}
	for _, tk := range []struct {
		kind        pki.Kind
		value, file string
	}{{pki.KindAgent, c.AgentToken, c.AgentTokenFile}, {pki.KindLB, c.LBToken, c.LBTokenFile}} {
		if tk.value == "" || c.Insecure {
			continue
		}
		flag := string(tk.kind) + "-token"
		if t, err := node.CheckToken(tk.value, tk.file, flag); err != nil {
			errs = append(errs, err)
		} else if t.Kind != tk.kind && t.Kind != pki.KindLegacy {
			bad(flag, "this is the %s token; give the %s token from 'haagent token generate'", t.Kind, tk.kind)
		}
	}
	errs = append(errs, c.Recovery.Validate()...)
	errs = append(errs, c.Args.Validate()...)
	errs = append(errs, c.Config.Validate("master", tokenNeeded)...)
	return errors.Join(errs...)
}

// Preflight checks what Validate can't without touching the disk: that the data dir
// and the snapshot dir can be created or written. It writes nothing.
func (c *Config) Preflight() error {
	if err := c.preflightDataDir(); err != nil {
		return err
	}
	return c.preflightSnapshotDir()
}

func (c *Config) preflightDataDir() error {
	dir := c.DataDir
	for {
		fi, err := os.Stat(dir)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("--data-dir: %s is not a directory; point --data-dir at a directory", dir)
			}
			if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
				return fmt.Errorf("--data-dir: %s is not writable (%v); fix its permissions or choose another --data-dir", dir, err)
			}
			var st unix.Statfs_t
			if unix.Statfs(dir, &st) == nil && st.Flags&unix.ST_RDONLY != 0 {
				return fmt.Errorf("--data-dir: %s is on a read-only file system; choose another --data-dir", dir)
			}
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("--data-dir: %v; choose another --data-dir", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return fmt.Errorf("--data-dir: no existing parent of %s", c.DataDir)
		}
		dir = parent
	}
}

func peerNames(ps etcdmember.Peers) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return strings.Join(names, ", ")
}

func sameHost(a, b string) bool {
	if ipa, ipb := net.ParseIP(a), net.ParseIP(b); ipa != nil && ipb != nil {
		return ipa.Equal(ipb)
	}
	if net.ParseIP(a) != nil || net.ParseIP(b) != nil {
		// An IP against a DNS name can't be compared without a lookup; trust the operator.
		return true
	}
	return strings.EqualFold(a, b)
}

// EmbedConfig turns a completed Config into the etcd member's configuration, the one
// way it is built: for the member the master runs, for cluster-reset's one-time start,
// and for the commands that reach the local member. etcdmember.New fills the rest.
func (c *Config) EmbedConfig() etcdmember.Config {
	ec := etcdmember.Config{
		Name:                c.Name,
		Peers:               c.PeerList(),
		ListenHost:          c.ListenAddress,
		AdvertiseHost:       c.AdvertiseAddress,
		ClientPort:          c.EtcdClientPort,
		DataDir:             c.DataDir,
		ClusterToken:        c.ClusterToken,
		HeartbeatInterval:   c.HeartbeatInterval,
		ElectionTimeout:     c.ElectionTimeout,
		QuotaBackendBytes:   c.QuotaBackendBytes,
		CompactionRetention: c.CompactionRetention,
	}
	if !c.Insecure {
		ec.TLS = c.TLSFiles()
	}
	return ec
}

// APIServerEtcdPrefix is kube-apiserver's --etcd-prefix: the operator's, from
// --kube-apiserver-arg, or the apiserver's default.
func (c *Config) APIServerEtcdPrefix() string {
	prefix := DefaultAPIServerPrefix
	for _, a := range c.Args[nodeconf.ComponentAPIServer] {
		if v, ok := strings.CutPrefix(strings.TrimLeft(a, "-"), "etcd-prefix="); ok && v != "" {
			prefix = v
		}
	}
	return prefix
}
