package upgrade

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// apiserverTimeout bounds the question to one apiserver: a master that does not answer
// in it is shown as unreachable.
const apiserverTimeout = 5 * time.Second

// Gather reads the running versions: each etcd member's from its own Status, each
// master's kube-apiserver's from /version at the address it publishes in the
// kubernetes Service's EndpointSlice, and each minion's kubelet from its Node.
func Gather(ctx context.Context, etcd *clientv3.Client, kube *rest.Config) ([]Node, error) {
	members, err := etcd.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("etcd member list: %w", err)
	}
	cs, err := kubernetes.NewForConfig(kube)
	if err != nil {
		return nil, fmt.Errorf("kube client: %w", err)
	}
	apiservers, err := apiserverAddresses(ctx, cs)
	if err != nil {
		return nil, err
	}
	var nodes []Node
	for _, m := range members.Members {
		n := Node{Name: m.Name, Role: RoleMaster}
		if len(m.ClientURLs) > 0 {
			st, err := etcd.Status(ctx, m.ClientURLs[0])
			if err != nil {
				n.Unreachable = fmt.Sprintf("etcd member at %s: %v", m.ClientURLs[0], err)
			} else {
				n.Etcd = st.Version
			}
		}
		addr := ""
		if len(m.PeerURLs) > 0 {
			if u, err := url.Parse(m.PeerURLs[0]); err == nil {
				addr = apiservers[u.Hostname()]
			}
		}
		if addr == "" {
			n.Unreachable = join(n.Unreachable, "no kube-apiserver of its address in the kubernetes Service's endpoints")
		} else if v, err := apiserverVersion(kube, addr); err != nil {
			n.Unreachable = join(n.Unreachable, err.Error())
		} else {
			n.APIServer = v
		}
		nodes = append(nodes, n)
	}
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	// The member list is in no useful order; a plan reads best masters first, by name.
	slices.SortFunc(nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	for _, kn := range list.Items {
		nodes = append(nodes, Node{Name: kn.Name, Role: RoleMinion, Kubelet: kn.Status.NodeInfo.KubeletVersion})
	}
	return nodes, nil
}

// apiserverAddresses maps each ready apiserver's IP to its host:port, from the
// kubernetes Service's EndpointSlices, which each apiserver keeps its own entry in.
func apiserverAddresses(ctx context.Context, cs kubernetes.Interface) (map[string]string, error) {
	eps, err := cs.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).List(ctx,
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=kubernetes"})
	if err != nil {
		return nil, fmt.Errorf("the kubernetes Service's endpoints: %w", err)
	}
	addrs := map[string]string{}
	for _, s := range eps.Items {
		port := 0
		for _, p := range s.Ports {
			if p.Port != nil && (p.Name == nil || *p.Name == "https") {
				port = int(*p.Port)
			}
		}
		for _, e := range s.Endpoints {
			for _, a := range e.Addresses {
				addrs[a] = net.JoinHostPort(a, strconv.Itoa(port))
			}
		}
	}
	return addrs, nil
}

// apiserverVersion asks one apiserver, not the lb, for its version.
func apiserverVersion(kube *rest.Config, addr string) (string, error) {
	c := rest.CopyConfig(kube)
	c.Host = "https://" + addr
	c.Timeout = apiserverTimeout
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		return "", fmt.Errorf("kube-apiserver at %s: %w", addr, err)
	}
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		return "", fmt.Errorf("kube-apiserver at %s: %w", addr, err)
	}
	return v.GitVersion, nil
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// InstalledKube is the version of the installed Kubernetes binary at path, from its
// --version ("Kubernetes v1.37.2").
func InstalledKube(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, apiserverTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", path, err)
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return "", fmt.Errorf("%s --version printed nothing", path)
	}
	v := f[len(f)-1]
	if _, err := version.ParseGeneric(v); err != nil {
		return "", fmt.Errorf("%s --version: %q: %w", path, strings.TrimSpace(string(out)), err)
	}
	return v, nil
}
