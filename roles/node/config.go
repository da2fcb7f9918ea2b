package node

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/haagent/haagent/base/statusapi"
	"github.com/haagent/haagent/netsetup/hostinfo"
	"github.com/haagent/haagent/systemd/reconcile"
	"github.com/haagent/haagent/trust/join"
	"github.com/haagent/haagent/trust/pki"
)

// DefaultRoot is --root's default: haagent writes into the host's own tree.
const DefaultRoot = "/"

// Config is the part of every role's configuration that they share; each role's
// Config embeds it, so that these flags are declared, defaulted and checked once.
type Config struct {
	// Name is this node's name; on a master, its etcd member name. Complete fills in
	// the short hostname.
	Name string
	// Token is the cluster secret (pki.ParseToken form); Complete reads it from TokenFile
	// when that is given.
	Token string
	// TokenFile is a file holding Token, which keeps the token out of ps.
	TokenFile string
	// Insecure runs the whole cluster on plain-http etcd with no certificates: labs only.
	Insecure bool
	// Root prefixes every path haagent writes outside a master's etcd data dir.
	Root string
	// StatusAddress is host:port of /healthz, /readyz, /metrics and /status.
	StatusAddress string
	// JoinPort is the masters' join service port; the lb forwards the same port.
	JoinPort int
	// Systemd is auto, on or off: whether haagent manages this node's units over D-Bus.
	Systemd string
}

// NewConfig returns the shared defaults.
func NewConfig() Config {
	return Config{
		Root:          DefaultRoot,
		StatusAddress: statusapi.DefaultAddress,
		JoinPort:      join.DefaultPort,
		Systemd:       reconcile.SystemdAuto,
	}
}

// AddFlags binds the shared flags to c.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Name, "name", c.Name, "this node's name; on a master, its etcd member name (default: the short hostname)")
	fs.StringVar(&c.Token, "token", c.Token, "cluster token: the server token on masters, the agent token on minions, the lb token on lbs; 'haagent token generate' makes them, 'haagent token show' on a master prints them (needed unless --insecure; a single master makes its own). Every user sees a command line: prefer --token-file or HAAGENT_TOKEN in a 0600 file")
	fs.StringVar(&c.TokenFile, "token-file", c.TokenFile, "file holding the cluster token (instead of --token)")
	fs.BoolVar(&c.Insecure, "insecure", c.Insecure, "the cluster runs plain-http etcd with no certificates and no authentication: for labs only")
	fs.IntVar(&c.JoinPort, "join-port", c.JoinPort, "port of the masters' join service, which hands nodes their certificates (the lb forwards it)")
	fs.StringVar(&c.Root, "root", c.Root, "prefix for every file haagent writes (outside a master's data dir)")
	fs.StringVar(&c.StatusAddress, "status-address", c.StatusAddress, "host:port for /healthz, /readyz, /metrics and /status")
	fs.StringVar(&c.Systemd, "systemd", c.Systemd, "manage this node's units over D-Bus: auto (where systemd runs), on or off")
}

// Complete reads --token-file and fills the name with the short hostname. It reads the
// host but changes nothing on it.
func (c *Config) Complete() error {
	if err := ReadTokenFile(&c.Token, c.TokenFile, "token"); err != nil {
		return err
	}
	if c.Name != "" {
		return nil
	}
	name, err := hostinfo.ShortHostname()
	if err != nil {
		return fmt.Errorf("--name: not given and the hostname is unreadable: %w; set --name", err)
	}
	c.Name = name
	return nil
}

// ReadTokenFile is what a --FLAG-file does in Complete: it sets *value, the token of
// --FLAG, from file. Giving both is an error.
func ReadTokenFile(value *string, file, flag string) error {
	if file == "" {
		return nil
	}
	if *value != "" {
		return fmt.Errorf("--%s and --%s-file: both given; keep --%s-file only", flag, flag, flag)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("--%s-file: %v; write the token from 'haagent token generate' into it, mode 0600", flag, err)
	}
	if *value = strings.TrimSpace(string(b)); *value == "" {
		return fmt.Errorf("--%s-file: %s is empty; write the token from 'haagent token generate' into it, mode 0600", flag, file)
	}
	return nil
}

// CheckToken is Validate's check of an operator's token in --FLAG (or --FLAG-file when
// file is given): well formed, and not guessable. It returns the parsed token, or the
// one-line problem naming the flag and the fix.
func CheckToken(value, file, flag string) (pki.Token, error) {
	if file != "" {
		flag += "-file"
	}
	t, err := pki.ParseToken(value)
	if err != nil {
		return t, fmt.Errorf("--%s: malformed: %v; get one with 'haagent token generate', or 'haagent token show' on a running master", flag, err)
	}
	if bits := pki.SecretBits(t.Secret); bits < pki.MinSecretBits {
		return t, fmt.Errorf("--%s: the secret has about %d bits of entropy, fewer than %d, so a stolen etcd snapshot could be brute-forced; use a token from 'haagent token generate'",
			flag, bits, pki.MinSecretBits)
	}
	return t, nil
}

// Validate reports every problem of the shared flags, each naming its flag. role
// decides which kind of token --token must be; tokenNeeded says why the role needs
// --token (the rest of "--token: required ..."), or is empty where it can do without.
// It does no I/O.
func (c *Config) Validate(role, tokenNeeded string) []error {
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
	}
	if c.Name == "" {
		bad("name", "must not be empty; set --name or fix the hostname")
	}
	if !c.Insecure {
		if c.Token != "" {
			if t, err := CheckToken(c.Token, c.TokenFile, "token"); err != nil {
				errs = append(errs, err)
			} else if want := roleTokenKind[role]; t.Kind != pki.KindLegacy && t.Kind != want {
				bad("token", "this is the %s token; %ss take the %s token from 'haagent token show --kind=%s' on a master", t.Kind, role, want, want)
			}
		} else if tokenNeeded != "" {
			bad("token", "required %s", tokenNeeded)
		}
	}
	if c.JoinPort < 1 || c.JoinPort > 65535 {
		bad("join-port", "%d is not a port in 1-65535", c.JoinPort)
	}
	if !filepath.IsAbs(c.Root) {
		bad("root", "%q must be an absolute path", c.Root)
	}
	if _, _, err := net.SplitHostPort(c.StatusAddress); err != nil {
		bad("status-address", "%q is not host:port", c.StatusAddress)
	}
	if !slices.Contains([]string{reconcile.SystemdAuto, reconcile.SystemdOn, reconcile.SystemdOff}, c.Systemd) {
		bad("systemd", "%q is not auto, on or off", c.Systemd)
	}
	return errs
}

// roleTokenKind is the kind of token each role joins with; a legacy token, from a
// cluster made with one, joins every role.
var roleTokenKind = map[string]pki.Kind{"master": pki.KindServer, "minion": pki.KindAgent, "lb": pki.KindLB}

// JoinToken is the parsed --token; Validate has checked it unless --insecure.
func (c *Config) JoinToken() (pki.Token, error) {
	if c.Token == "" {
		return pki.Token{}, errors.New("--token: not given")
	}
	return pki.ParseToken(c.Token)
}

// Scheme is the scheme of etcd's URLs in this cluster.
func (c *Config) Scheme() string {
	if c.Insecure {
		return "http"
	}
	return "https"
}

// Address is the flags of a node that announces an address: masters and minions.
type Address struct {
	// AdvertiseAddress is the IP or host this node announces; Complete fills in the
	// IPv4 of Iface.
	AdvertiseAddress string
	// Iface is the network interface whose IPv4 address is announced; flanneld's too.
	Iface string
}

// AddFlags binds the address flags to a.
func (a *Address) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&a.AdvertiseAddress, "advertise-address", a.AdvertiseAddress, "IP or host this node announces (default: the IPv4 of --iface; on a master, else its host in --peers)")
	fs.StringVar(&a.Iface, "iface", a.Iface, "network interface whose IPv4 address this node announces, and flannel's interface")
}

// Complete fills the advertised address from the interface, when one is named.
func (a *Address) Complete() error {
	if a.Iface == "" || a.AdvertiseAddress != "" {
		return nil
	}
	ip, err := hostinfo.InterfaceIPv4(a.Iface)
	if err != nil {
		return fmt.Errorf("--iface: %w", err)
	}
	a.AdvertiseAddress = ip.String()
	return nil
}
