package nodeconf

import (
	"bytes"
	"os"
	"path/filepath"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/systemd/reconcile"
)

// unitTemplates are the units haagent installs where no package ships one. They read the
// same EnvironmentFiles, in the same variables, as the distro packages' units, so that a
// distro unit and ours are interchangeable.
var unitTemplates = map[string]string{
	"kube-apiserver.service": `[Unit]
Description=Kubernetes API Server
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kube-apiserver/
After=network-online.target haagent.service
Wants=network-online.target

[Service]
# The audit log: systemd makes /var/log/kubernetes before the start.
LogsDirectory=kubernetes
EnvironmentFile=-/etc/kubernetes/config
EnvironmentFile=-/etc/kubernetes/apiserver
ExecStart=/usr/bin/kube-apiserver $KUBE_LOGTOSTDERR $KUBE_LOG_LEVEL $KUBE_ETCD_SERVERS $KUBE_API_ADDRESS $KUBE_API_PORT $KUBELET_PORT $KUBE_ALLOW_PRIV $KUBE_SERVICE_ADDRESSES $KUBE_ADMISSION_CONTROL $KUBE_API_ARGS
Restart=on-failure
RestartSec=2
Type=notify
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`,
	"kube-controller-manager.service": `[Unit]
Description=Kubernetes Controller Manager
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kube-controller-manager/
After=kube-apiserver.service

[Service]
EnvironmentFile=-/etc/kubernetes/config
EnvironmentFile=-/etc/kubernetes/controller-manager
ExecStart=/usr/bin/kube-controller-manager $KUBE_LOGTOSTDERR $KUBE_LOG_LEVEL $KUBE_MASTER $KUBE_CONTROLLER_MANAGER_ARGS
Restart=on-failure
RestartSec=2
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`,
	"kube-scheduler.service": `[Unit]
Description=Kubernetes Scheduler
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kube-scheduler/
After=kube-apiserver.service

[Service]
EnvironmentFile=-/etc/kubernetes/config
EnvironmentFile=-/etc/kubernetes/scheduler
ExecStart=/usr/bin/kube-scheduler $KUBE_LOGTOSTDERR $KUBE_LOG_LEVEL $KUBE_MASTER $KUBE_SCHEDULER_ARGS
Restart=on-failure
RestartSec=2
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`,
	"flanneld.service": `[Unit]
Description=Flanneld overlay address etcd agent
After=network-online.target haagent.service
Wants=network-online.target
Before=docker.service containerd.service

[Service]
Type=notify
EnvironmentFile=-/etc/sysconfig/flanneld
ExecStart=/usr/bin/flanneld --etcd-endpoints=${FLANNEL_ETCD_ENDPOINTS} --etcd-prefix=${FLANNEL_ETCD_PREFIX} $FLANNEL_OPTIONS
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
`,
	"kubelet.service": `[Unit]
Description=Kubernetes Kubelet Server
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/
After=containerd.service docker.service flanneld.service
Wants=flanneld.service

[Service]
# systemd makes /var/lib/kubelet before it changes into it.
StateDirectory=kubelet
WorkingDirectory=/var/lib/kubelet
EnvironmentFile=-/etc/kubernetes/config
EnvironmentFile=-/etc/kubernetes/kubelet
ExecStart=/usr/bin/kubelet $KUBE_LOGTOSTDERR $KUBE_LOG_LEVEL $KUBELET_API_SERVER $KUBELET_ADDRESS $KUBELET_PORT $KUBELET_HOSTNAME $KUBE_ALLOW_PRIV $KUBELET_ARGS
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
`,
	"kube-proxy.service": `[Unit]
Description=Kubernetes Kube-Proxy Server
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kube-proxy/
After=network-online.target

[Service]
EnvironmentFile=-/etc/kubernetes/config
EnvironmentFile=-/etc/kubernetes/proxy
ExecStart=/usr/bin/kube-proxy $KUBE_LOGTOSTDERR $KUBE_LOG_LEVEL $KUBE_MASTER $KUBE_PROXY_ARGS
Restart=on-failure
RestartSec=2
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`,
}

// unitSearchPath is where packages put units, in systemd's order of precedence.
var unitSearchPath = []string{"etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"}

// UnitFiles returns the unit files haagent must install under root: one per unit that
// no package provides (a unit that haagent installed before is its own and kept current).
// Units with no template, such as the container runtime, are never installed.
func UnitFiles(root string, units []reconcile.Unit) []files.File {
	var out []files.File
	for _, u := range units {
		tmpl, ok := unitTemplates[u.Name]
		if !ok {
			continue
		}
		want := []byte(Header + "\n" + tmpl)
		if providedByPackage(root, u.Name) {
			continue
		}
		out = append(out, files.File{Path: filepath.Join(UnitDir, u.Name), Mode: 0o644, Data: want})
	}
	return out
}

func providedByPackage(root, unit string) bool {
	for _, dir := range unitSearchPath {
		b, err := os.ReadFile(filepath.Join(root, dir, unit))
		if err != nil {
			continue
		}
		return !bytes.HasPrefix(b, []byte(Header))
	}
	return false
}

// Files is everything a role owns besides its certificates: Render's EnvironmentFiles
// and the unit files that no package provides.
func Files(c Config) ([]files.File, error) {
	fs, err := Render(c)
	if err != nil {
		return nil, err
	}
	return append(fs, UnitFiles(c.Root, Units(c))...), nil
}
