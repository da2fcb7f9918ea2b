package addons

// NetworkPolicy is the built-in add-on that lets the minions' NetworkPolicy
// controllers (package netpol) read what they enforce: pods, namespaces and
// NetworkPolicies, list and watch only.
const NetworkPolicy = "network-policy"

// RenderNetworkPolicy renders its RBAC for the controllers' user.
func RenderNetworkPolicy(user string) []byte {
	return []byte(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: haagent:network-policy
rules:
- apiGroups: [""]
  resources: [pods, namespaces]
  verbs: [list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: haagent:network-policy
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: haagent:network-policy
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: ` + user + `
`)
}
