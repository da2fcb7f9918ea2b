package nodeconf

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/haagent/haagent/trust/pki"
)

// Files of the apiserver's encryption at rest and audit log, relative to --root, and
// where the audit log goes (the unit's LogsDirectory=kubernetes makes the directory).
const (
	EncryptionConfig     = "etc/kubernetes/encryption-config.yaml"
	AuditPolicy          = "etc/kubernetes/audit-policy.yaml"
	AuditLog             = "/var/log/kubernetes/audit.log"
	AuthenticationConfig = "etc/kubernetes/authentication-config.yaml"
)

// authenticationConfig limits anonymous requests to the health endpoints (KEP-4633,
// stable since Kubernetes 1.34): the lb checks /readyz without a client certificate,
// and nothing else needs to reach the apiserver unauthenticated, so a binding to
// system:anonymous or system:unauthenticated made by mistake exposes nothing else.
const authenticationConfig = `apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
anonymous:
  enabled: true
  conditions:
  - path: /livez
  - path: /readyz
  - path: /healthz
`

// The audit log's rotation by size: 100 MB a file, ten old files, a month at most.
const (
	AuditLogMaxSizeMB  = 100
	AuditLogMaxBackups = 10
	AuditLogMaxAgeDays = 30
)

// encryptionConfig is the EncryptionConfiguration for Secrets. secretbox
// (XSalsa20-Poly1305) draws a 192-bit random nonce per write, so a key has no practical
// write limit; aesgcm's 96-bit random nonces make upstream ask for a rotation every
// 200k writes, and aescbc is open to padding oracles. identity comes last, so that
// Secrets written before the cluster had a key still read; a rotation rewrites them.
func encryptionConfig(keys []pki.EncryptionKey) []byte {
	var b strings.Builder
	b.WriteString(Header + "\n" + `# The first key encrypts; every key listed decrypts. 'haagent secrets rotate-key' changes them.
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources:
  - secrets
  providers:
  - secretbox:
      keys:
`)
	for _, k := range keys {
		b.WriteString("      - name: " + k.Name + "\n        secret: " + base64.StdEncoding.EncodeToString(k.Secret) + "\n")
	}
	b.WriteString("  - identity: {}\n")
	return []byte(b.String())
}

// auditPolicy logs who did what to which object for most requests, never a body (so no
// Secret's data), and skips the read-only chatter of the system components and the
// health probes, as kubeadm's and GKE's policies do.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages:
- RequestReceived
rules:
# kube-proxy watches Services and EndpointSlices from every node.
- level: None
  users: ["system:kube-proxy"]
  verbs: ["watch", "list", "get"]
  resources:
  - group: ""
    resources: ["endpoints", "services", "services/status"]
  - group: "discovery.k8s.io"
    resources: ["endpointslices"]
# Kubelets read their Node and renew their leases every few seconds.
- level: None
  userGroups: ["system:nodes"]
  verbs: ["get"]
  resources:
  - group: ""
    resources: ["nodes", "nodes/status"]
- level: None
  userGroups: ["system:nodes"]
  verbs: ["get", "update"]
  resources:
  - group: "coordination.k8s.io"
    resources: ["leases"]
# Leader election of the controller manager and the scheduler.
- level: None
  users: ["system:kube-controller-manager", "system:kube-scheduler"]
  verbs: ["get", "update"]
  namespaces: ["kube-system"]
  resources:
  - group: "coordination.k8s.io"
    resources: ["leases"]
  - group: ""
    resources: ["endpoints"]
- level: None
  users: ["system:apiserver"]
  verbs: ["get"]
  resources:
  - group: ""
    resources: ["namespaces", "namespaces/status", "namespaces/finalize"]
# Health probes, discovery and metrics scrapes.
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version", "/metrics", "/openapi*", "/api", "/apis"]
# Events are a log of their own.
- level: None
  resources:
  - group: ""
    resources: ["events"]
  - group: "events.k8s.io"
    resources: ["events"]
# Secrets, ConfigMaps and token requests carry credentials: metadata only, never a body.
- level: Metadata
  resources:
  - group: ""
    resources: ["secrets", "configmaps", "serviceaccounts/token"]
  - group: "authentication.k8s.io"
    resources: ["tokenreviews"]
# Everything else: who, what, which object, when and the answer's code.
- level: Metadata
`

// securityFlags are the apiserver's flags for anonymous requests, the audit log and,
// with keys, encryption at rest. The apiserver is restarted when the encryption config changes, not told to
// reload it (--encryption-provider-config-automatic-reload): a finished restart of a
// Type=notify unit tells haagent that the new keys are in use, which a rotation must
// know before its next step, while a reload is only seen in the apiserver's metrics.
func securityFlags(c Config, p func(string) string) []string {
	flags := []string{
		"--authentication-config=" + p(AuthenticationConfig),
		"--audit-policy-file=" + p(AuditPolicy),
		"--audit-log-path=" + AuditLog,
		"--audit-log-maxsize=" + strconv.Itoa(AuditLogMaxSizeMB),
		"--audit-log-maxbackup=" + strconv.Itoa(AuditLogMaxBackups),
		"--audit-log-maxage=" + strconv.Itoa(AuditLogMaxAgeDays),
	}
	if len(c.EncryptionKeys) > 0 {
		flags = append(flags, "--encryption-provider-config="+p(EncryptionConfig))
	}
	return flags
}
