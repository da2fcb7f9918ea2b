package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/hosts"
	"github.com/haagent/haagent/test/framework/sixhost"
)

// walk is what the walkthrough's subtests share with the ones that follow it.
type walk struct {
	ctx         context.Context
	l           *sixhost.Lab
	apply       func(name, manifest string)
	waitRunning func(name string, timeout time.Duration) (netip.Addr, string)
}

// localPod is a pod of the nginx image the minions already hold: a new pod after lb1,
// which serves the lab's registry, is gone.
func localPod(name, nodeSelector string) string {
	m := `apiVersion: v1
kind: Pod
metadata:
  name: ` + name + `
spec:
`
	if nodeSelector != "" {
		m += "  nodeSelector:\n    kubernetes.io/hostname: " + nodeSelector + "\n"
	}
	return m + `  containers:
  - name: nginx
    image: nginx
    imagePullPolicy: IfNotPresent
`
}

// awaitHolder waits until exactly the named lb carries the VIP in its kernel.
func (w walk) awaitHolder(t *testing.T, name string, timeout time.Duration) time.Duration {
	t.Helper()
	return waitFor(t, w.ctx, "the VIP on "+name+" alone", timeout, func() error {
		hs, err := w.l.VIPHolders(w.ctx)
		if err != nil {
			return err
		}
		if !slices.Equal(hs, []string{name}) {
			return fmt.Errorf("held by %v", hs)
		}
		return nil
	})
}

// awaitVIPServes waits until kubectl through the VIP answers again after the fault,
// and returns how long that took.
func (w walk) awaitVIPServes(t *testing.T, fault string) time.Duration {
	t.Helper()
	return waitFor(t, w.ctx, "kubectl through the VIP after "+fault, time.Minute, func() error {
		_, err := w.l.Kubectl(w.ctx, "--request-timeout=2s", "get", "--raw=/readyz")
		return err
	})
}

// awaitStandby waits until lb's haagent, back from a fault, sees holder hold the VIP,
// and then checks from the kernels that lb did not take it: holder alone carries it.
func (w walk) awaitStandby(t *testing.T, lb *hosts.Host, holder string, timeout time.Duration) {
	t.Helper()
	waitFor(t, w.ctx, "haagent on "+lb.Name+" to see "+holder+" hold the VIP", timeout, func() error {
		out, err := lb.Exec(w.ctx, "haagent", "status")
		if err != nil || !strings.Contains(out, "holder "+holder+" (this host: false)") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if hs, _ := w.l.VIPHolders(w.ctx); !slices.Equal(hs, []string{holder}) {
		t.Fatalf("after %s came back the VIP is held by %v, want %s alone", lb.Name, hs, holder)
	}
}

// awaitLeases waits until every named node's kubelet has renewed its Lease after since:
// its kubelet reaches an apiserver, whatever the node's Ready condition still says.
func (w walk) awaitLeases(t *testing.T, kubectl func(args ...string) (string, error), since time.Time, nodes ...string) time.Duration {
	t.Helper()
	return waitFor(t, w.ctx, "the Leases of "+strings.Join(nodes, ", ")+" renewed after the fault", 45*time.Second, func() error {
		for _, n := range nodes {
			out, err := kubectl("-n", "kube-node-lease", "get", "lease", n, "-o", "jsonpath={.spec.renewTime}")
			if err != nil {
				return err
			}
			renewed, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(out))
			if err != nil {
				return fmt.Errorf("lease %s: renewTime %q: %w", n, out, err)
			}
			if !renewed.After(since) {
				return fmt.Errorf("lease %s last renewed %s, before the fault", n, renewed.Format(time.RFC3339Nano))
			}
		}
		return nil
	})
}

// awaitReady checks the named nodes are Ready.
func (w walk) awaitReady(t *testing.T, kubectl func(args ...string) (string, error), nodes ...string) {
	t.Helper()
	waitFor(t, w.ctx, strings.Join(nodes, ", ")+" Ready", time.Minute, func() error {
		for _, n := range nodes {
			out, err := kubectl("get", "node", n, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			if err != nil {
				return err
			}
			if strings.TrimSpace(out) != "True" {
				return fmt.Errorf("%s Ready=%q", n, out)
			}
		}
		return nil
	})
}

// noSPOF takes away what stands in front of the masters, one piece at a time, after the
// walkthrough has halted master1.
func (w walk) noSPOF(t *testing.T) {
	l, ctx := w.l, w.ctx
	viaVIP := func(args ...string) (string, error) { return l.Kubectl(ctx, args...) }
	lb1, lb2 := l.Host("lb1"), l.Host("lb2")
	minions := []string{"minion1", "minion2"}

	ok := t.Run("the VIP: lb1 holding it is killed; kubectl through the VIP works again, the minions stay Ready, a new pod Runs", func(t *testing.T) {
		// The first lb up holds the VIP; a clean stop of lb2 hands it over at once. Right
		// after master1's kill etcd may still be settling, and lb1's first term can end
		// before it renews (seen once in CI: "requested lease not found"), when lb2, back
		// by then, takes the VIP again: hand it over again, at most every 5 s.
		var handedOver time.Time
		waitFor(t, ctx, "the VIP on lb1 alone", time.Minute, func() error {
			hs, err := l.VIPHolders(ctx)
			if err != nil {
				return err
			}
			if slices.Equal(hs, []string{"lb1"}) {
				return nil
			}
			if slices.Equal(hs, []string{"lb2"}) && time.Since(handedOver) > 5*time.Second {
				if _, err := lb2.Exec(ctx, "systemctl", "restart", "haagent"); err != nil {
					return err
				}
				handedOver = time.Now()
			}
			return fmt.Errorf("held by %v", hs)
		})
		fault := time.Now()
		must(t, lb1.Kill())
		back := w.awaitVIPServes(t, "lb1's kill")
		w.awaitHolder(t, "lb2", 10*time.Second)
		t.Logf("lb1 killed: kubectl through the VIP answered again after %s", back.Round(100*time.Millisecond))
		renewed := w.awaitLeases(t, viaVIP, fault, minions...)
		w.awaitReady(t, viaVIP, minions...)
		t.Logf("both minions renewed their Leases %s after the kill", renewed.Round(100*time.Millisecond))
		w.apply("vip-lb1-killed", localPod("vip-lb1-killed", ""))
		w.waitRunning("vip-lb1-killed", 2*time.Minute)
	})
	if !ok {
		return
	}

	ok = t.Run("the VIP: lb2 holding it is blackholed; lb1 takes it, and lb2 healed does not take it back", func(t *testing.T) {
		must(t, lb1.Start(ctx))
		must(t, lb1.WaitRunning(ctx))
		w.awaitStandby(t, lb1, "lb2", 2*time.Minute)
		fault := time.Now()
		must(t, lb2.Blackhole())
		back := w.awaitVIPServes(t, "lb2's blackhole")
		// lb2, cut off, must have dropped the address itself by the lease's deadline.
		w.awaitHolder(t, "lb1", 15*time.Second)
		t.Logf("lb2 blackholed: kubectl through the VIP answered again after %s; lb2 dropped the VIP %s after the cut",
			back.Round(100*time.Millisecond), time.Since(fault).Round(100*time.Millisecond))
		w.awaitLeases(t, viaVIP, fault, minions...)
		w.awaitReady(t, viaVIP, minions...)
		w.apply("vip-lb2-cut", localPod("vip-lb2-cut", ""))
		w.waitRunning("vip-lb2-cut", 2*time.Minute)

		must(t, lb2.Heal())
		w.awaitStandby(t, lb2, "lb1", time.Minute)
	})
	if !ok {
		return
	}

	ok = t.Run("node-local: both lbs and master1 down, minion2 stays Ready and runs a pod", func(t *testing.T) {
		direct := func(args ...string) (string, error) { return l.KubectlDirect(ctx, "master2", args...) }
		fault := time.Now()
		must(t, lb1.Kill())
		must(t, lb2.Kill())
		renewed := w.awaitLeases(t, direct, fault, sixhost.NodeLocal)
		w.awaitReady(t, direct, sixhost.NodeLocal)
		t.Logf("lb1, lb2 and master1 down: %s renewed its Lease %s after the lbs were killed", sixhost.NodeLocal, renewed.Round(100*time.Millisecond))
		must(t, l.Host(sixhost.Client).WriteFile("/var/tmp/node-local.yaml", []byte(localPod("node-local", sixhost.NodeLocal)), 0o644))
		_, err := direct("create", "-f", "/var/tmp/node-local.yaml")
		must(t, err)
		waitFor(t, ctx, "pod node-local Running on "+sixhost.NodeLocal, 2*time.Minute, func() error {
			out, err := direct("get", "pod", "node-local", "-o", "jsonpath={.status.phase} {.status.podIP} {.spec.nodeName}")
			if err != nil {
				return err
			}
			f := strings.Fields(out)
			if len(f) != 3 || f[0] != "Running" || f[2] != sixhost.NodeLocal {
				return fmt.Errorf("pod node-local: %v", f)
			}
			return nil
		})
		out, _ := l.Host(sixhost.NodeLocal).Exec(ctx, "haagent", "status")
		t.Logf("%s's haagent status:\n%s", sixhost.NodeLocal, out)
	})
	if !ok {
		return
	}
	w.quorumLost(t)
}

// quorumLost takes master2 too, after master1: the survivor has no quorum, and one
// guided command on it brings back the cluster's Pods and Secrets.
func (w walk) quorumLost(t *testing.T) {
	l, ctx := w.l, w.ctx
	m3 := l.Host("master3")
	direct := func(args ...string) (string, error) { return l.KubectlDirect(ctx, "master3", args...) }
	t.Run("quorum lost: master2 killed after master1; haagent cluster-reset on master3 brings the Pods and Secrets back", func(t *testing.T) {
		must(t, l.Host("master2").Kill())
		waitFor(t, ctx, "master3 to say its etcd has no leader", time.Minute, func() error {
			out, _ := m3.Exec(ctx, "haagent", "status")
			if !strings.Contains(out, "no leader") {
				return fmt.Errorf("status: %s", out)
			}
			return nil
		})
		start := time.Now()
		out, err := m3.Shell(ctx, "systemctl stop haagent && haagent cluster-reset --yes 2>&1 && systemctl start haagent")
		t.Logf("systemctl stop haagent && haagent cluster-reset --yes && systemctl start haagent, on master3, %s:\n%s", time.Since(start).Round(100*time.Millisecond), out)
		must(t, err)
		waitFor(t, ctx, "the Secret and nginx-pod through master3's apiserver", 2*time.Minute, func() error {
			if _, err := direct("get", "secret", "at-rest"); err != nil {
				return err
			}
			_, err := direct("get", "pod", "nginx-pod")
			return err
		})
		t.Logf("the cluster's Pods and Secrets answer through master3 %s after the reset began", time.Since(start).Round(100*time.Millisecond))
		status, err := m3.Exec(ctx, "haagent", "status")
		must(t, err)
		if !strings.Contains(status, "1 of 3 masters are members") {
			t.Errorf("master3's status after the reset does not say it is the only member:\n%s", status)
		}
		// A write, through the one-member cluster.
		_, err = direct("create", "configmap", "after-reset", "--from-literal=k=v")
		must(t, err)
	})
}
