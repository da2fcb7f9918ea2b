package lb

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func validConfig() *Config {
	c := NewConfig()
	c.Token = "0123456789abcdef0123456789abcdef"
	c.Name = "lb1"
	c.Masters = []string{"10.0.0.11", "10.0.0.12", "10.0.0.13"}
	return c
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want []string // one substring per expected error line; nil means valid
	}{
		{"defaults with masters", func(*Config) {}, nil},
		{"hostnames and IPv6", func(c *Config) { c.Masters = []string{"m1.example.com", "m2", "fd00::3"} }, nil},
		{"nginx least-conn", func(c *Config) { c.Impl = ImplNginx; c.Policy = "least-conn" }, nil},
		{"no token", func(c *Config) { c.Token = "" }, []string{"--token: required"}},
		{"no token needed when insecure", func(c *Config) { c.Token = ""; c.Insecure = true }, nil},
		{"no token needed for nginx", func(c *Config) { c.Token = ""; c.Impl = ImplNginx }, nil},
		{"malformed token", func(c *Config) { c.Token = "short" }, []string{"--token: malformed"}},
		{"no masters", func(c *Config) { c.Masters = nil }, []string{"--masters: required; list the masters' IPs"}},
		{"empty master", func(c *Config) { c.Masters = []string{"10.0.0.11", ""} }, []string{"--masters: has an empty entry"}},
		{"master with port", func(c *Config) { c.Masters = []string{"10.0.0.11:6443"} }, []string{`--masters: "10.0.0.11:6443" has a port`}},
		{"peer syntax", func(c *Config) { c.Masters = []string{"m1=http://10.0.0.11:2380"} }, []string{`--masters: "m1=http://10.0.0.11:2380" is not a plain host`}},
		{"bad hostname", func(c *Config) { c.Masters = []string{"bad_host!"} }, []string{`--masters: "bad_host!" is not an IP address or hostname`}},
		{"duplicate master", func(c *Config) { c.Masters = []string{"M1", "m1"} }, []string{`--masters: "m1" is listed twice`}},
		{"no ports", func(c *Config) { c.Ports = nil }, []string{"--lb-ports: required"}},
		{"bad port", func(c *Config) { c.Ports = []int{0, 70000} }, []string{"--lb-ports: 0 is not a port", "--lb-ports: 70000 is not a port"}},
		{"duplicate port", func(c *Config) { c.Ports = []int{6443, 6443} }, []string{"--lb-ports: 6443 is listed twice"}},
		{"policy", func(c *Config) { c.Policy = "roundrobin" }, []string{`--lb-policy: "roundrobin" is not one of failover, least-conn`}},
		{"interval", func(c *Config) { c.CheckInterval = time.Millisecond }, []string{"--lb-check-interval: 1ms is outside 10ms-1m"}},
		{"timeout", func(c *Config) { c.CheckTimeout = 0 }, []string{"--lb-check-timeout: 0s is outside"}},
		{"fall and rise", func(c *Config) { c.Fall, c.Rise = 0, -1 }, []string{"--lb-fall: 0 must be at least 1", "--lb-rise: -1 must be at least 1"}},
		{"dial timeout", func(c *Config) { c.DialTimeout = 0 }, []string{"--lb-dial-timeout: 0s is outside"}},
		{"max conns", func(c *Config) { c.MaxConns = 0 }, []string{"--lb-max-conns: 0 must be at least 1"}},
		{"impl", func(c *Config) { c.Impl = "haproxy" }, []string{`--lb-impl: "haproxy" is not builtin or nginx`}},
		{"listen address", func(c *Config) { c.ListenAddress = "lb.example.com" }, []string{`--listen-address: "lb.example.com" is not an IP address`}},
		{"status address", func(c *Config) { c.StatusAddress = "9110" }, []string{`--status-address: "9110" is not host:port`}},
		{"status port clash", func(c *Config) { c.StatusAddress = "127.0.0.1:6443" }, []string{"--status-address: port 6443 is also in --lb-ports"}},
		{"root", func(c *Config) { c.Root = "rel" }, []string{`--root: "rel" must be an absolute path`}},
		{"name", func(c *Config) { c.Name = "" }, []string{"--name: must not be empty"}},
		{"all at once", func(c *Config) { c.Masters = nil; c.Policy = "x"; c.Root = "" }, []string{"--masters:", "--lb-policy:", "--root:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mod(c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil; want %q", tt.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("got %d errors, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for i, w := range tt.want {
				if i < len(lines) && !strings.Contains(lines[i], w) {
					t.Errorf("error %d = %q; want it to contain %q", i, lines[i], w)
				}
				if i < len(lines) && !strings.HasPrefix(lines[i], "--") {
					t.Errorf("error %q does not start with its flag", lines[i])
				}
			}
		})
	}
}

func TestValidateIsPure(t *testing.T) {
	c := validConfig()
	c.Masters = []string{" 10.0.0.11 "}
	before := *c
	_ = c.Validate()
	if c.Masters[0] != " 10.0.0.11 " || c.Name != before.Name {
		t.Error("Validate changed the config")
	}
}

func TestFlags(t *testing.T) {
	c := NewConfig()
	fs := pflag.NewFlagSet("lb", pflag.ContinueOnError)
	c.AddFlags(fs)
	err := fs.Parse([]string{
		"--masters=10.0.0.11, 10.0.0.12,10.0.0.13", "--lb-ports=6443,2379,9345", "--lb-policy=least-conn",
		"--lb-check-interval=500ms", "--lb-fall=3", "--lb-impl=nginx", "--name=lb1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Complete(); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Masters, ","); got != "10.0.0.11,10.0.0.12,10.0.0.13" {
		t.Errorf("masters %q", got)
	}
	if len(c.Ports) != 3 || c.Policy != "least-conn" || c.CheckInterval != 500*time.Millisecond || c.Fall != 3 || c.Impl != ImplNginx {
		t.Errorf("parsed %+v", c)
	}
	d := NewConfig()
	if d.DialTimeout != time.Second || d.MaxConns != 10000 || d.Impl != ImplBuiltin || d.StatusAddress != "127.0.0.1:9110" ||
		d.ListenAddress != "0.0.0.0" || d.Root != "/" || len(d.Ports) != 3 || d.Ports[0] != 6443 || d.Ports[1] != 2379 || d.Ports[2] != 9345 {
		t.Errorf("defaults %+v", d)
	}
}

func TestCompleteName(t *testing.T) {
	c := NewConfig()
	if err := c.Complete(); err != nil {
		t.Fatal(err)
	}
	if c.Name == "" || strings.Contains(c.Name, ".") {
		t.Errorf("name %q is not a short hostname", c.Name)
	}
}
