package lb

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/haagent/haagent/embed/loadbalancer"
	"github.com/haagent/haagent/embed/vip"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/trust/join"
)

// Defaults for the lb's flags. The health-check timings are the balancer's; its
// package documents why they are what they are.
const (
	DefaultListenAddress = loadbalancer.DefaultListenAddress
	DefaultRoot          = node.DefaultRoot
	DefaultPolicy        = string(loadbalancer.DefaultPolicy)
	DefaultCheckInterval = loadbalancer.DefaultCheckInterval
	DefaultCheckTimeout  = loadbalancer.DefaultCheckTimeout
	DefaultFall          = loadbalancer.DefaultFall
	DefaultRise          = loadbalancer.DefaultRise
	DefaultDialTimeout   = loadbalancer.DefaultDialTimeout
	DefaultMaxConns      = loadbalancer.DefaultMaxConns
	DefaultImpl          = ImplBuiltin
)

// Implementations of --lb-impl.
const (
	// ImplBuiltin balances in this process, with active health checks.
	ImplBuiltin = "builtin"
	// ImplNginx writes an nginx stream config and leaves the balancing to nginx.
	ImplNginx = "nginx"
)

// DefaultPorts are the masters' ports the lb fronts unless --lb-ports says otherwise:
// the apiserver, etcd's client port and the join service, so that nodes join through the lb.
func DefaultPorts() []int {
	return []int{loadbalancer.PortAPIServer, loadbalancer.PortEtcdClient, join.DefaultPort}
}

// Config is everything the lb needs; see AddFlags for each field's flag.
type Config struct {
	// Config holds the flags every role shares. The lb joins with the token for the
	// etcd client certificate its health checks need, and checks the apiserver against
	// the cluster CA; with Insecure it checks plain-http etcd instead.
	node.Config
	// Masters are the masters' IPs or hostnames, primary first.
	Masters []string
	// Ports are the ports balanced, each on the same port of every master.
	Ports  []int
	Policy string
	// CheckInterval, CheckTimeout and DialTimeout are durations; Fall and Rise are
	// counts of checks in a row.
	CheckInterval time.Duration
	CheckTimeout  time.Duration
	Fall          int
	Rise          int
	DialTimeout   time.Duration
	// MaxConns caps the client connections held at once; each uses two file descriptors.
	MaxConns      int
	Impl          string
	ListenAddress string
	// VIP is the virtual IP with its prefix length (--vip), empty without one: then
	// this lb is one of two or more that elect a holder for it through the masters'
	// etcd (package vip).
	VIP string
	// VIPInterface carries the VIP; Preflight fills it with the interface whose subnet
	// holds the VIP when it is empty.
	VIPInterface string
}

// NewConfig returns a Config holding the defaults.
func NewConfig() *Config {
	return &Config{
		Config:        node.NewConfig(),
		Ports:         DefaultPorts(),
		Policy:        DefaultPolicy,
		CheckInterval: DefaultCheckInterval,
		CheckTimeout:  DefaultCheckTimeout,
		Fall:          DefaultFall,
		Rise:          DefaultRise,
		DialTimeout:   DefaultDialTimeout,
		MaxConns:      DefaultMaxConns,
		Impl:          DefaultImpl,
		ListenAddress: DefaultListenAddress,
	}
}

// AddFlags binds the lb's flags to c.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	node.AddMastersFlag(fs, &c.Masters, "the masters' IPs or hostnames, comma-separated, primary first (required)")
	fs.IntSliceVar(&c.Ports, "lb-ports", c.Ports, "ports to balance, each forwarded to the same port on every master")
	fs.StringVar(&c.Policy, "lb-policy", c.Policy, "failover (first healthy master in --masters order) or least-conn")
	fs.DurationVar(&c.CheckInterval, "lb-check-interval", c.CheckInterval, "time between health checks of each master (builtin only)")
	fs.DurationVar(&c.CheckTimeout, "lb-check-timeout", c.CheckTimeout, "timeout of one health check (builtin only)")
	fs.IntVar(&c.Fall, "lb-fall", c.Fall, "failed checks in a row that take a master out (builtin only)")
	fs.IntVar(&c.Rise, "lb-rise", c.Rise, "passed checks in a row that bring a master back (builtin only)")
	fs.DurationVar(&c.DialTimeout, "lb-dial-timeout", c.DialTimeout, "timeout of the connect to a master")
	fs.IntVar(&c.MaxConns, "lb-max-conns", c.MaxConns, "client connections held at once; more are closed at once (builtin only)")
	fs.StringVar(&c.Impl, "lb-impl", c.Impl, "builtin (balance in haagent) or nginx (write "+NginxConfPath+" for nginx)")
	fs.StringVar(&c.ListenAddress, "listen-address", c.ListenAddress, "IP that the balanced ports bind to")
	fs.StringVar(&c.VIP, "vip", c.VIP, "virtual IP with its prefix length, e.g. 10.0.0.10/24, held by one of the lbs given the same --vip (elected through the masters' etcd)")
	fs.StringVar(&c.VIPInterface, "vip-iface", c.VIPInterface, "interface that carries --vip (default: the one whose subnet contains it)")
	c.Config.AddFlags(fs)
}

// Complete fills the defaults that depend on the host (the name) and trims the
// blanks around --masters entries. It reads the host but changes nothing on it.
func (c *Config) Complete() error {
	if err := c.Config.Complete(); err != nil {
		return err
	}
	node.TrimMasters(c.Masters)
	return nil
}

// Validate reports every problem at once, each naming its flag and the fix. It does
// no I/O.
func (c *Config) Validate() error {
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
	}
	if len(c.Masters) == 0 {
		bad("masters", "required; list the masters' IPs or hostnames, primary first, e.g. --masters=10.0.0.11,10.0.0.12,10.0.0.13")
	}
	errs = append(errs, node.ValidateMasters(c.Masters)...)
	if len(c.Ports) == 0 {
		bad("lb-ports", "required; e.g. --lb-ports=6443,2379")
	}
	seenPort := map[int]bool{}
	for _, p := range c.Ports {
		if p < 1 || p > 65535 {
			bad("lb-ports", "%d is not a port in 1-65535", p)
		} else if seenPort[p] {
			bad("lb-ports", "%d is listed twice; list each port once", p)
		}
		seenPort[p] = true
	}
	policies := make([]string, len(loadbalancer.Policies))
	for i, p := range loadbalancer.Policies {
		policies[i] = string(p)
	}
	if !slices.Contains(policies, c.Policy) {
		bad("lb-policy", "%q is not one of %s", c.Policy, strings.Join(policies, ", "))
	}
	if c.CheckInterval < 10*time.Millisecond || c.CheckInterval > time.Minute {
		bad("lb-check-interval", "%s is outside 10ms-1m; the default is %s", c.CheckInterval, DefaultCheckInterval)
	}
	if c.CheckTimeout < 10*time.Millisecond || c.CheckTimeout > 30*time.Second {
		bad("lb-check-timeout", "%s is outside 10ms-30s; the default is %s", c.CheckTimeout, DefaultCheckTimeout)
	}
	if c.Fall < 1 {
		bad("lb-fall", "%d must be at least 1", c.Fall)
	}
	if c.Rise < 1 {
		bad("lb-rise", "%d must be at least 1", c.Rise)
	}
	if c.DialTimeout < 10*time.Millisecond || c.DialTimeout > time.Minute {
		bad("lb-dial-timeout", "%s is outside 10ms-1m; the default is %s", c.DialTimeout, DefaultDialTimeout)
	}
	if c.MaxConns < 1 {
		bad("lb-max-conns", "%d must be at least 1", c.MaxConns)
	}
	if c.Impl != ImplBuiltin && c.Impl != ImplNginx {
		bad("lb-impl", "%q is not %s or %s", c.Impl, ImplBuiltin, ImplNginx)
	}
	if net.ParseIP(c.ListenAddress) == nil {
		bad("listen-address", "%q is not an IP address; use 0.0.0.0 or one of this host's IPs", c.ListenAddress)
	}
	if _, port, err := net.SplitHostPort(c.StatusAddress); err == nil {
		if p, err := strconv.Atoi(port); err == nil && seenPort[p] {
			bad("status-address", "port %d is also in --lb-ports; choose another port", p)
		}
	}
	if c.VIP != "" {
		c.validateVIP(bad)
	} else if c.VIPInterface != "" {
		bad("vip-iface", "given without --vip; add --vip=ADDRESS/BITS or drop --vip-iface")
	}
	tokenNeeded := ""
	if c.Impl == ImplBuiltin {
		tokenNeeded = "for the lb's health checks, which need a certificate; run 'haagent token show' on a master (or --insecure for a lab)"
	}
	errs = append(errs, c.Config.Validate("lb", tokenNeeded)...)
	return errors.Join(errs...)
}

// validateVIP checks --vip and what it needs of the other flags, purely.
func (c *Config) validateVIP(bad func(flag, format string, args ...any)) {
	p, err := netip.ParsePrefix(c.VIP)
	switch {
	case err != nil:
		bad("vip", "%q is not ADDRESS/BITS; give the VIP with its subnet's prefix length, e.g. --vip=10.0.0.10/24", c.VIP)
	case !p.Addr().Is4():
		bad("vip", "%s is not IPv4; the VIP is announced with ARP, so give an IPv4 address", p.Addr())
	case p.Bits() < 8 || p.Bits() > 32:
		bad("vip", "prefix length /%d is outside 8-32; give the lbs' subnet's, e.g. /24", p.Bits())
	case p.Addr().IsLoopback() || p.Addr().IsMulticast() || p.Addr().IsUnspecified() || p.Addr().IsLinkLocalUnicast():
		bad("vip", "%s is not a unicast address that other hosts can reach; pick a free address in the lbs' subnet", p.Addr())
	case p.Bits() < 31 && (p.Addr() == p.Masked().Addr() || p.Addr() == lastAddr(p)):
		bad("vip", "%s is the network or broadcast address of %s; pick a free host address in it", p.Addr(), p.Masked())
	}
	if c.Impl != ImplBuiltin {
		bad("vip", "needs --lb-impl=builtin: the VIP's election runs in haagent with the lb's etcd certificate")
	}
	if ip := net.ParseIP(c.ListenAddress); ip != nil && !ip.IsUnspecified() {
		bad("listen-address", "%s with --vip: the lb must also answer on the VIP, so use --listen-address=0.0.0.0", c.ListenAddress)
	}
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Preflight checks what Validate can't without reading the host, and touches nothing:
// that --vip-iface exists and --vip lies in one of its subnets, or, without
// --vip-iface, which interface has a subnet that holds --vip.
func (c *Config) Preflight() error {
	if c.VIP == "" {
		return nil
	}
	iface, err := vip.FindInterface(netip.MustParsePrefix(c.VIP), c.VIPInterface)
	if err != nil {
		return err
	}
	c.VIPInterface = iface
	return nil
}

// VIPConfig is the VIP's configuration, without its logger, metrics and credentials, for a
// Config that passed Validate and Preflight with --vip set.
func (c *Config) VIPConfig() vip.Config {
	var eps []string
	for _, m := range c.Masters {
		eps = append(eps, c.Scheme()+"://"+net.JoinHostPort(m, strconv.Itoa(loadbalancer.PortEtcdClient)))
	}
	return vip.Config{Address: netip.MustParsePrefix(c.VIP), Interface: c.VIPInterface, Name: c.Name, Endpoints: eps}
}

// BalancerConfig turns a validated Config into the balancer's configuration.
func (c *Config) BalancerConfig() loadbalancer.Config {
	return loadbalancer.Config{
		ListenAddress: c.ListenAddress,
		Ports:         slices.Clone(c.Ports),
		Backends:      slices.Clone(c.Masters),
		Policy:        loadbalancer.Policy(c.Policy),
		CheckInterval: c.CheckInterval,
		CheckTimeout:  c.CheckTimeout,
		Fall:          c.Fall,
		Rise:          c.Rise,
		DialTimeout:   c.DialTimeout,
		MaxConns:      c.MaxConns,
	}
}
