package addons

import (
	"bytes"
	"fmt"
	"net/netip"
	"text/template"
)

// CoreDNS is the built-in cluster DNS add-on's name, as --disable names it.
const CoreDNS = "coredns"

// Builtins are the built-in add-ons, by name.
var Builtins = []string{CoreDNS, NetworkPolicy}

// CoreDNSVersion is the CoreDNS that Kubernetes 1.37 ships, and CoreDNSImage the image
// its Deployment runs: the airgap images and the lab's registry hold it, built from
// source (scripts/build-kube.sh).
const (
	CoreDNSVersion = "v1.14.6"
	CoreDNSImage   = "registry.k8s.io/coredns/coredns:" + CoreDNSVersion
)

// CoreDNSCustom is the ConfigMap whose *.override keys go into the cluster.local server
// block and whose *.server keys are servers of their own, as in k3s: haagent never
// writes it, so an operator's changes survive restarts and upgrades.
const CoreDNSCustom = "coredns-custom"

// RootCAAnnotation on a built-in's pods holds Facts.RootCAHash.
const RootCAAnnotation = "addons.haagent.io/root-ca"

// DNSOptions are what the built-in DNS add-on is rendered from.
type DNSOptions struct {
	// ServiceIP is kube-dns's ClusterIP, the kubelets' clusterDNS.
	ServiceIP netip.Addr
	// Domain is the cluster domain (cluster.local).
	Domain string
	// Image is the CoreDNS image.
	Image string
	// RootCAHash goes into the pods' annotations (Facts.RootCAHash).
	RootCAHash string
	// APIServer is the lb's apiserver address (IP:port) that CoreDNS watches the API
	// through, instead of the kubernetes Service: the lb closes its connections to a
	// master that dies, so CoreDNS's watch moves at once, where a connection through
	// kube-proxy to a dead master hangs until client-go's health check gives up (about
	// 45 s), and new Services don't resolve meanwhile. Empty keeps the Service.
	APIServer netip.AddrPort
}

// DNSServiceIP is the tenth address of the service range, where kubeadm puts kube-dns.
func DNSServiceIP(serviceRange string) (netip.Addr, error) {
	p, err := netip.ParsePrefix(serviceRange)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("service range: %w", err)
	}
	a := p.Masked().Addr()
	for range 10 {
		a = a.Next()
	}
	if !p.Contains(a) {
		return netip.Addr{}, fmt.Errorf("service range %s has no tenth address", serviceRange)
	}
	return a, nil
}

// RenderCoreDNS renders the CoreDNS add-on as kubeadm applies it (its RBAC, Corefile,
// Deployment and kube-dns Service), with two replicas on different nodes where it can,
// a PodDisruptionBudget, and the coredns-custom imports.
func RenderCoreDNS(o DNSOptions) ([]byte, error) {
	if !o.ServiceIP.IsValid() || o.Domain == "" || o.Image == "" {
		return nil, fmt.Errorf("coredns: service IP, domain and image are needed: %+v", o)
	}
	var b bytes.Buffer
	if err := corednsTemplate.Execute(&b, o); err != nil {
		return nil, fmt.Errorf("coredns: %w", err)
	}
	return b.Bytes(), nil
}

var corednsTemplate = template.Must(template.New("coredns").Parse(`apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {
        errors
        health {
           lameduck 5s
        }
        ready
        kubernetes {{.Domain}} in-addr.arpa ip6.arpa {
           pods insecure
           fallthrough in-addr.arpa ip6.arpa
           ttl 30
        }
        prometheus :9153
        import /etc/coredns/custom/*.override
        forward . /etc/resolv.conf {
           max_concurrent 1000
        }
        cache 30 {
           disable success {{.Domain}}
           disable denial {{.Domain}}
        }
        loop
        reload
        loadbalance
    }
    import /etc/coredns/custom/*.server
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  replicas: 2
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 1
  selector:
    matchLabels:
      k8s-app: kube-dns
  template:
    metadata:
      labels:
        k8s-app: kube-dns
      annotations:
        ` + RootCAAnnotation + `: "{{.RootCAHash}}"
    spec:
      priorityClassName: system-cluster-critical
      serviceAccountName: coredns
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              labelSelector:
                matchExpressions:
                - key: k8s-app
                  operator: In
                  values: [kube-dns]
              topologyKey: kubernetes.io/hostname
      tolerations:
      - key: CriticalAddonsOnly
        operator: Exists
      - key: node-role.kubernetes.io/control-plane
        effect: NoSchedule
      nodeSelector:
        kubernetes.io/os: linux
      containers:
      - name: coredns
        image: {{.Image}}
        imagePullPolicy: IfNotPresent
        args: [-conf, /etc/coredns/Corefile]
{{- if .APIServer.IsValid}}
        env:
        - {name: KUBERNETES_SERVICE_HOST, value: "{{.APIServer.Addr}}"}
        - {name: KUBERNETES_SERVICE_PORT, value: "{{.APIServer.Port}}"}
{{- end}}
        resources:
          limits:
            memory: 170Mi
          requests:
            cpu: 100m
            memory: 70Mi
        volumeMounts:
        - name: config-volume
          mountPath: /etc/coredns
          readOnly: true
        - name: custom-config-volume
          mountPath: /etc/coredns/custom
          readOnly: true
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        - {name: metrics, containerPort: 9153, protocol: TCP}
        securityContext:
          allowPrivilegeEscalation: false
          capabilities:
            add: [NET_BIND_SERVICE]
            drop: [ALL]
          readOnlyRootFilesystem: true
        livenessProbe:
          httpGet:
            path: /health
            port: 8080
            scheme: HTTP
          initialDelaySeconds: 60
          timeoutSeconds: 5
          successThreshold: 1
          failureThreshold: 5
        readinessProbe:
          httpGet:
            path: /ready
            port: 8181
            scheme: HTTP
      dnsPolicy: Default
      volumes:
      - name: config-volume
        configMap:
          name: coredns
          items:
          - key: Corefile
            path: Corefile
      - name: custom-config-volume
        configMap:
          name: ` + CoreDNSCustom + `
          optional: true
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: coredns
  namespace: kube-system
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      k8s-app: kube-dns
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
    kubernetes.io/cluster-service: "true"
    kubernetes.io/name: CoreDNS
  annotations:
    prometheus.io/port: "9153"
    prometheus.io/scrape: "true"
spec:
  selector:
    k8s-app: kube-dns
  clusterIP: {{.ServiceIP}}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
  - {name: metrics, port: 9153, protocol: TCP}
`))
