// Package upgrade owns the rules that an upgrade of the cluster's Kubernetes and etcd
// versions must keep, and the plan that follows them: which component of which node
// moves, and in what order. The rules are Kubernetes' version-skew policy (apiservers
// within one minor of each other and never skipping one; kubelets never newer than an
// apiserver and at most three minors older) and etcd's (one minor at a time; a minor
// downgrade needs etcd's own downgrade procedure). It reads the running versions from
// the cluster (gather.go); it changes nothing.
package upgrade

import (
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/util/version"
)

// Roles of the nodes in a plan.
const (
	RoleMaster = "master"
	RoleMinion = "minion"
)

// Node is one node's running versions, as the cluster reports them. An empty version
// is unknown: Unreachable says why.
type Node struct {
	Name string
	Role string
	// APIServer is the running kube-apiserver's version (masters).
	APIServer string
	// Etcd is the etcd member's version (masters).
	Etcd string
	// Kubelet is the Node object's kubelet version (minions).
	Kubelet string
	// Unreachable says why some of this node's versions are unknown.
	Unreachable string
}

// Target is what the nodes move to: the installed Kubernetes binaries' version and
// the etcd version of the installed haagent binary.
type Target struct {
	Kube string
	Etcd string
}

// Rule names a rule that a plan breaks.
type Rule string

// The rules.
const (
	RuleSkippedMinor     Rule = "skipped-minor"
	RuleDowngrade        Rule = "downgrade"
	RuleMajor            Rule = "major-version"
	RuleAPIServerSkew    Rule = "apiserver-skew"
	RuleKubeletNewer     Rule = "kubelet-newer-than-apiserver"
	RuleKubeletTooOld    Rule = "kubelet-too-old"
	RuleEtcdMinorJump    Rule = "etcd-minor-jump"
	RuleEtcdDowngrade    Rule = "etcd-downgrade"
	RuleUnparsedVersion  Rule = "unparsed-version"
	maxKubeletMinorsBack      = 3
)

// RefusedError is a plan that breaks a rule: the first one found, on one node.
type RefusedError struct {
	Rule      Rule
	Node      string
	Component string
	From, To  string
	// Why is the rule in words, for the one line an operator reads.
	Why string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s's %s %s to %s: %s (rule %s)", e.Node, e.Component, e.From, e.To, e.Why, e.Rule)
}

// Row is one component of one node: its version now and after the upgrade.
type Row struct {
	Node, Role, Component string
	Now, After            string
}

// Plan is what an upgrade to a Target does.
type Plan struct {
	Rows []Row
	// Steps are in the order they happen.
	Steps []string
	// Warnings are what the plan can't see (a node unreachable) or can't do yet.
	Warnings []string
}

// Make checks the cluster's versions against the rules for a move to t, and returns
// the plan, or a *RefusedError for the first rule broken.
func Make(nodes []Node, t Target) (Plan, error) {
	kube, err := version.ParseGeneric(t.Kube)
	if err != nil {
		return Plan{}, &RefusedError{Rule: RuleUnparsedVersion, Node: "the target", Component: "Kubernetes", To: t.Kube, Why: err.Error()}
	}
	etcd, err := version.ParseGeneric(t.Etcd)
	if err != nil {
		return Plan{}, &RefusedError{Rule: RuleUnparsedVersion, Node: "the target", Component: "etcd", To: t.Etcd, Why: err.Error()}
	}
	// The running apiservers, parsed once. A cluster already outside the policy is the
	// first thing to say: each node's own step would be refused for a reason that
	// hides it.
	running := map[string]*version.Version{}
	var apiservers []*version.Version
	for _, n := range nodes {
		if n.Role == RoleMaster && n.APIServer != "" {
			now, err := parse(n, "kube-apiserver", n.APIServer, t.Kube)
			if err != nil {
				return Plan{}, err
			}
			running[n.Name] = now
			apiservers = append(apiservers, now)
		}
	}
	if err := checkAPIServerSkew(apiservers); err != nil {
		return Plan{}, err
	}
	var p Plan
	var kubelets []kubelet
	var apiserverSteps, controllerSteps, etcdSteps, minionSteps []string
	for _, n := range nodes {
		if n.Unreachable != "" {
			p.Warnings = append(p.Warnings, fmt.Sprintf("%s: %s; its versions are unknown, and the roll waits for it", n.Name, n.Unreachable))
		}
		switch n.Role {
		case RoleMaster:
			if n.Etcd != "" {
				now, err := parse(n, "etcd", n.Etcd, t.Etcd)
				if err != nil {
					return Plan{}, err
				}
				if err := checkEtcd(n, now, etcd, t.Etcd); err != nil {
					return Plan{}, err
				}
				p.Rows = append(p.Rows, Row{n.Name, n.Role, "etcd (in haagent)", n.Etcd, t.Etcd})
				if !now.EqualTo(etcd) {
					etcdSteps = append(etcdSteps, fmt.Sprintf("%s: haagent rolls onto the installed binary, its etcd member %s to %s", n.Name, n.Etcd, t.Etcd))
				}
			}
			if now := running[n.Name]; now != nil {
				if err := checkAPIServer(n, now, kube, t.Kube); err != nil {
					return Plan{}, err
				}
				p.Rows = append(p.Rows, Row{n.Name, n.Role, "kube-apiserver", n.APIServer, t.Kube})
				if !now.EqualTo(kube) {
					apiserverSteps = append(apiserverSteps, fmt.Sprintf("%s: restart kube-apiserver (%s to %s) out of the lbs' rotation, under the roll lock; gated on /readyz through the lb", n.Name, n.APIServer, t.Kube))
					controllerSteps = append(controllerSteps, fmt.Sprintf("%s: restart kube-controller-manager and kube-scheduler on %s", n.Name, t.Kube))
				}
			}
		case RoleMinion:
			if n.Kubelet == "" {
				continue
			}
			now, err := parse(n, "kubelet", n.Kubelet, t.Kube)
			if err != nil {
				return Plan{}, err
			}
			kubelets = append(kubelets, kubelet{n, now})
			p.Rows = append(p.Rows, Row{n.Name, n.Role, "kubelet, kube-proxy", n.Kubelet, t.Kube})
			if now.EqualTo(kube) {
				continue
			}
			if now.Minor() == kube.Minor() {
				minionSteps = append(minionSteps, fmt.Sprintf("%s: restart kubelet and kube-proxy (%s to %s, a patch release: no drain), wait until Ready", n.Name, n.Kubelet, t.Kube))
			} else {
				minionSteps = append(minionSteps, fmt.Sprintf("%s: cordon, drain (PodDisruptionBudgets kept), restart kubelet and kube-proxy (%s to %s), wait until Ready, uncordon", n.Name, n.Kubelet, t.Kube))
			}
		}
	}
	if err := checkKubelets(kubelets, apiservers, kube, t.Kube); err != nil {
		return Plan{}, err
	}
	p.Steps = slices.Concat(etcdSteps, apiserverSteps, controllerSteps, minionSteps)
	if len(apiserverSteps)+len(minionSteps) > 0 {
		p.Warnings = append(p.Warnings, "haagent rolls its own binary (and etcd with it) by itself, not yet the Kubernetes units: "+
			"take the Kubernetes steps in this order yourself (systemctl restart on each node, kubectl drain and uncordon for the minions)")
	}
	return p, nil
}

func checkAPIServerSkew(running []*version.Version) error {
	if len(running) < 2 {
		return nil
	}
	lo, hi := slices.MinFunc(running, cmpVersion), slices.MaxFunc(running, cmpVersion)
	if lo.Major() != hi.Major() || hi.Minor()-lo.Minor() > 1 {
		return &RefusedError{Rule: RuleAPIServerSkew, Node: "the cluster", Component: "kube-apiservers", From: lo.String(), To: hi.String(),
			Why: "the running apiservers are already more than one minor apart; bring the oldest up first"}
	}
	return nil
}

func parse(n Node, component, v, to string) (*version.Version, error) {
	parsed, err := version.ParseGeneric(v)
	if err != nil {
		return nil, &RefusedError{Rule: RuleUnparsedVersion, Node: n.Name, Component: component, From: v, To: to, Why: err.Error()}
	}
	return parsed, nil
}

func cmpVersion(a, b *version.Version) int {
	switch {
	case a.LessThan(b):
		return -1
	case b.LessThan(a):
		return 1
	}
	return 0
}

func checkAPIServer(n Node, now, to *version.Version, toS string) error {
	refuse := func(r Rule, why string) error {
		return &RefusedError{Rule: r, Node: n.Name, Component: "kube-apiserver", From: n.APIServer, To: toS, Why: why}
	}
	switch {
	case now.Major() != to.Major():
		return refuse(RuleMajor, "a major version change is not a supported upgrade")
	case to.Minor() < now.Minor():
		return refuse(RuleDowngrade, "a minor downgrade is not supported; install the running minor's binaries again")
	case to.Minor() > now.Minor()+1:
		return refuse(RuleSkippedMinor, fmt.Sprintf("it skips a minor; upgrade to %d.%d first", now.Major(), now.Minor()+1))
	}
	return nil
}

// kubelet is a minion's kubelet version, as Make parsed it.
type kubelet struct {
	node    Node
	version *version.Version
}

// checkKubelets refuses a kubelet newer than the target or than a running apiserver
// (the skew policy forbids it at every moment of the roll, and kubelets go last), and
// one too old for the new apiservers it will talk to before its own turn.
func checkKubelets(kubelets []kubelet, apiservers []*version.Version, to *version.Version, toS string) error {
	oldest := to
	for _, a := range apiservers {
		if a.LessThan(oldest) {
			oldest = a
		}
	}
	for _, kl := range kubelets {
		n, k := kl.node, kl.version
		refuse := func(r Rule, why string) error {
			return &RefusedError{Rule: r, Node: n.Name, Component: "kubelet", From: n.Kubelet, To: toS, Why: why}
		}
		switch {
		case k.Major() != to.Major():
			return refuse(RuleMajor, "a major version change is not a supported upgrade")
		case k.Minor() > oldest.Minor():
			return refuse(RuleKubeletNewer, fmt.Sprintf("the kubelet is newer than an apiserver (%s); kubelets may never be", oldest))
		case to.Minor() > k.Minor()+maxKubeletMinorsBack:
			return refuse(RuleKubeletTooOld, fmt.Sprintf("the new apiservers would be more than %d minors ahead of this kubelet before its turn; upgrade it to %d.%d first",
				maxKubeletMinorsBack, k.Major(), to.Minor()-maxKubeletMinorsBack))
		}
	}
	return nil
}

func checkEtcd(n Node, now, to *version.Version, toS string) error {
	refuse := func(r Rule, why string) error {
		return &RefusedError{Rule: r, Node: n.Name, Component: "etcd", From: n.Etcd, To: toS, Why: why}
	}
	switch {
	case now.Major() != to.Major():
		return refuse(RuleMajor, "etcd upgrades one minor at a time, never across a major")
	case to.Minor() < now.Minor():
		return refuse(RuleEtcdDowngrade, "a minor downgrade needs etcd's downgrade procedure (etcdctl downgrade enable) before the binaries change")
	case to.Minor() > now.Minor()+1:
		return refuse(RuleEtcdMinorJump, fmt.Sprintf("etcd upgrades one minor at a time; install a haagent built on etcd %d.%d first", now.Major(), now.Minor()+1))
	}
	return nil
}
