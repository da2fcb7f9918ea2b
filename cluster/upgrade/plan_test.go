package upgrade

import (
	"errors"
	"strings"
	"testing"
)

func cluster(apiserver, etcd, kubelet string) []Node {
	var ns []Node
	for _, m := range []string{"master1", "master2", "master3"} {
		ns = append(ns, Node{Name: m, Role: RoleMaster, APIServer: apiserver, Etcd: etcd})
	}
	for _, m := range []string{"minion1", "minion2"} {
		ns = append(ns, Node{Name: m, Role: RoleMinion, Kubelet: kubelet})
	}
	return ns
}

func TestAMinorUpgradeGoesInSkewOrder(t *testing.T) {
	p, err := Make(cluster("v1.36.3", "3.7.3", "v1.36.3"), Target{Kube: "v1.37.2", Etcd: "3.7.3"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"master1: restart kube-apiserver", "master2: restart kube-apiserver", "master3: restart kube-apiserver",
		"master1: restart kube-controller-manager", "master2: restart kube-controller-manager", "master3: restart kube-controller-manager",
		"minion1: cordon, drain", "minion2: cordon, drain",
	}
	if len(p.Steps) != len(want) {
		t.Fatalf("steps:\n%s", strings.Join(p.Steps, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(p.Steps[i], w) {
			t.Errorf("step %d is %q, want it to start %q", i+1, p.Steps[i], w)
		}
	}
	if len(p.Rows) != 3*2+2 {
		t.Errorf("rows: %+v", p.Rows)
	}
}

func TestAPatchRestartsKubeletsWithoutADrain(t *testing.T) {
	p, err := Make(cluster("v1.37.1", "3.7.3", "v1.37.1"), Target{Kube: "v1.37.2", Etcd: "3.7.3"})
	if err != nil {
		t.Fatal(err)
	}
	last := p.Steps[len(p.Steps)-1]
	if !strings.Contains(last, "no drain") || strings.Contains(last, "cordon") {
		t.Errorf("the last step of a patch upgrade: %q", last)
	}
}

func TestNothingToDo(t *testing.T) {
	p, err := Make(cluster("v1.37.2", "3.7.3", "v1.37.2"), Target{Kube: "v1.37.2", Etcd: "3.7.3"})
	if err != nil || len(p.Steps) != 0 {
		t.Fatalf("steps %q, err %v", p.Steps, err)
	}
}

func TestAnEtcdMinorRollsTheMastersFirst(t *testing.T) {
	p, err := Make(cluster("v1.37.2", "3.6.5", "v1.37.2"), Target{Kube: "v1.37.2", Etcd: "3.7.3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Steps) != 3 || !strings.Contains(p.Steps[0], "etcd member 3.6.5 to 3.7.3") {
		t.Fatalf("steps:\n%s", strings.Join(p.Steps, "\n"))
	}
}

func TestTheRulesRefuse(t *testing.T) {
	mixed := cluster("v1.36.3", "3.7.3", "v1.36.3")
	mixed[1].APIServer = "v1.34.0"
	newKubelet := cluster("v1.36.3", "3.7.3", "v1.36.3")
	newKubelet[4].Kubelet = "v1.37.0"
	for _, tc := range []struct {
		name  string
		nodes []Node
		to    Target
		rule  Rule
		node  string
	}{
		{"a skipped minor", cluster("v1.35.4", "3.7.3", "v1.35.4"), Target{"v1.37.2", "3.7.3"}, RuleSkippedMinor, "master1"},
		{"a minor downgrade", cluster("v1.37.2", "3.7.3", "v1.37.2"), Target{"v1.36.3", "3.7.3"}, RuleDowngrade, "master1"},
		{"a major change", cluster("v1.37.2", "3.7.3", "v1.37.2"), Target{"v2.0.0", "3.7.3"}, RuleMajor, "master1"},
		{"a kubelet newer than the target", cluster("v1.37.2", "3.7.3", "v1.38.0"), Target{"v1.37.2", "3.7.3"}, RuleKubeletNewer, "minion1"},
		{"a kubelet newer than a running apiserver", newKubelet, Target{"v1.37.2", "3.7.3"}, RuleKubeletNewer, "minion2"},
		{"a kubelet four minors back", cluster("v1.36.3", "3.7.3", "v1.33.0"), Target{"v1.37.2", "3.7.3"}, RuleKubeletTooOld, "minion1"},
		{"an etcd minor jump", cluster("v1.37.2", "3.5.21", "v1.37.2"), Target{"v1.37.2", "3.7.3"}, RuleEtcdMinorJump, "master1"},
		{"an etcd minor downgrade", cluster("v1.37.2", "3.7.3", "v1.37.2"), Target{"v1.37.2", "3.6.5"}, RuleEtcdDowngrade, "master1"},
		{"apiservers already two minors apart", mixed, Target{"v1.36.3", "3.7.3"}, RuleAPIServerSkew, "the cluster"},
		{"a target that is no version", cluster("v1.37.2", "3.7.3", "v1.37.2"), Target{"latest", "3.7.3"}, RuleUnparsedVersion, "the target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Make(tc.nodes, tc.to)
			var re *RefusedError
			if !errors.As(err, &re) || re.Rule != tc.rule || re.Node != tc.node {
				t.Fatalf("got %v, want rule %s on %s", err, tc.rule, tc.node)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("the refusal is not one line: %q", err)
			}
		})
	}
}

func TestAnUnreachableMasterIsAWarning(t *testing.T) {
	ns := cluster("v1.36.3", "3.7.3", "v1.36.3")
	ns[0] = Node{Name: "master1", Role: RoleMaster, Unreachable: "etcd member at https://10.0.0.21:2379: context deadline exceeded"}
	p, err := Make(ns, Target{"v1.37.2", "3.7.3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) == 0 || !strings.Contains(p.Warnings[0], "master1: etcd member") {
		t.Errorf("warnings: %q", p.Warnings)
	}
}
