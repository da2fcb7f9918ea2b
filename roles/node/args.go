package node

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/haagent/haagent/systemd/nodeconf"
)

// ComponentArgs are the flags an operator adds to the components a node runs
// (--kube-apiserver-arg and friends), key=value each, by component.
type ComponentArgs map[nodeconf.Component][]string

// argFlags names each component's flag.
var argFlags = []struct {
	component nodeconf.Component
	flag      string
}{
	{nodeconf.ComponentAPIServer, "kube-apiserver-arg"},
	{nodeconf.ComponentControllerManager, "kube-controller-manager-arg"},
	{nodeconf.ComponentScheduler, "kube-scheduler-arg"},
	{nodeconf.ComponentKubelet, "kubelet-arg"},
	{nodeconf.ComponentProxy, "kube-proxy-arg"},
	{nodeconf.ComponentFlanneld, "flannel-arg"},
}

// AddFlags binds the flag of each of components.
func (a *ComponentArgs) AddFlags(fs *pflag.FlagSet, components ...nodeconf.Component) {
	if *a == nil {
		*a = ComponentArgs{}
	}
	for _, af := range argFlags {
		for _, c := range components {
			if c == af.component {
				fs.Var(argValue{a, c}, af.flag, fmt.Sprintf("a flag for %s as key=value, repeatable; it replaces one that haagent sets, "+
					"and one haagent guarantees (etcd, certificates, ports) is refused. In HAAGENT_%s several go in one value, separated by blanks",
					c, strings.ToUpper(strings.ReplaceAll(af.flag, "-", "_"))))
			}
		}
	}
}

// Validate checks every added flag, one problem a line, each naming its flag.
func (a ComponentArgs) Validate() []error {
	var errs []error
	for _, af := range argFlags {
		for _, s := range a[af.component] {
			if err := nodeconf.CheckArg(af.component, s); err != nil {
				errs = append(errs, fmt.Errorf("--%s: %w", af.flag, err))
			}
		}
	}
	return errs
}

// LogOverrides says, once at start, which of the operator's flags replace one that
// haagent sets.
func (n *Node) LogOverrides(ovs []nodeconf.Override) {
	for _, o := range ovs {
		attrs := []any{"component", o.Component, "flag", "--" + o.Flag, "haagent", o.Haagent, "yours", o.Operator}
		if o.File != "" {
			attrs = append(attrs, "haagent's stays in", o.File)
		}
		n.lg.Info("[files] your flag replaces the one haagent sets", attrs...)
	}
}

// argValue is one component's flag: each Set adds a value, as pflag's StringArray
// does, so that a value may hold commas (--kubelet-arg=node-labels=a=1,b=2).
type argValue struct {
	args      *ComponentArgs
	component nodeconf.Component
}

func (v argValue) String() string {
	if v.args == nil {
		return ""
	}
	return strings.Join((*v.args)[v.component], " ")
}

func (v argValue) Set(s string) error {
	(*v.args)[v.component] = append((*v.args)[v.component], s)
	return nil
}

// Type is pflag's name for a repeatable string flag; the CLI reads several values
// from one HAAGENT_ variable for it.
func (v argValue) Type() string { return "stringArray" }

var _ pflag.Value = argValue{}
