package master

import (
	"path"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/embed/etcdmember"
	"github.com/haagent/haagent/embed/vip"
	"github.com/haagent/haagent/trust/pki"
)

// The master keeps haagent's etcd auth policy: which identity may touch which keys.
// etcdmember applies it (EnsureAuth), knowing nothing of the roles it serves.

// haagent's etcd users, one per client certificate CN that pki issues, beside
// etcdmember.UserRoot, and their roles.
const (
	// UserHaagent is haagent on the masters (status, member add/remove/promote, snapshots,
	// flannel seeding, the sealed shared doc, this policy itself). etcd allows member
	// changes, snapshots and user and role changes only to the root role, so it holds it.
	UserHaagent = "haagent"
	// UserAPIServer is kube-apiserver's etcd client.
	UserAPIServer = "kube-apiserver-etcd-client"
	// UserFlannel is flanneld, on masters and on minions (through the lb).
	UserFlannel = "flannel"
	// UserLB is the identity that every lb shared before lb names were bound (anyone
	// with the agent token could get its certificate): it keeps no role. An lb's own
	// user is LBUser's.
	UserLB = "haagent-lb"

	roleAPIServer = "kube-apiserver"
	roleFlannel   = "flannel"
	roleLB        = "haagent-lb"

	// DefaultAPIServerPrefix is kube-apiserver's --etcd-prefix default.
	DefaultAPIServerPrefix = "/registry"
)

// LBUser is the etcd user of the lb called name, whose certificate's CN is its name
// after pki.LBNamePrefix: its health check (etcd answers GET /health as root whatever
// the certificate, so that needs no permission) and, with --vip, its part in the
// election of the VIP's holder, which reads and writes under vip.KeyPrefix and nowhere
// else. The masters add it when they first issue that lb's certificate (EnsureLBUser).
func LBUser(name string) etcdmember.User {
	return etcdmember.User{Name: pki.LBNamePrefix + name, Roles: []string{roleLB}}
}

// NewAuthPolicy is the policy for a cluster whose kube-apiserver stores under
// apiserverPrefix (its --etcd-prefix) and whose flannel config is under flannelPrefix.
func NewAuthPolicy(apiserverPrefix, flannelPrefix string) etcdmember.AuthPolicy {
	apiserverPrefix = strings.TrimSuffix(apiserverPrefix, "/") + "/"
	flannelPrefix = strings.TrimSuffix(flannelPrefix, "/")
	return etcdmember.AuthPolicy{
		Roles: []etcdmember.Role{
			{Name: etcdmember.RoleRoot},
			// The apiserver's health check reads <prefix>/health, inside the prefix. Its
			// compactor, which kept compact_rev_key at the root, is off: etcd allows
			// Compact to root only, and the members compact themselves.
			{Name: roleAPIServer, Perms: []etcdmember.Perm{
				{Key: apiserverPrefix, Prefix: true, Type: clientv3.PermReadWrite},
			}},
			// flannel 0.28's etcd subnet manager reads <prefix>/config and reads, writes
			// and watches <prefix>/subnets*; lease grants need no key permission, and a
			// lease revoke needs write on the keys attached, which are subnets. It may not
			// change the network config that the masters seed.
			{Name: roleFlannel, Perms: []etcdmember.Perm{
				{Key: flannelPrefix + "/", Prefix: true, Type: clientv3.PermRead},
				{Key: path.Join(flannelPrefix, "subnets"), Prefix: true, Type: clientv3.PermReadWrite},
			}},
			// The VIP's election: a key per lb under the prefix, attached to its lease; a
			// standby revokes a stale holder's lease, which needs write on its key, so
			// every lb may write every lb's key (etcd's permissions are by key range, and
			// the key's name is the lease's ID, which etcd picks at grant).
			{Name: roleLB, Perms: []etcdmember.Perm{
				{Key: vip.KeyPrefix, Prefix: true, Type: clientv3.PermReadWrite},
			}},
		},
		Users: []etcdmember.User{
			{Name: etcdmember.UserRoot, Roles: []string{etcdmember.RoleRoot}},
			{Name: UserHaagent, Roles: []string{etcdmember.RoleRoot}},
			{Name: UserAPIServer, Roles: []string{roleAPIServer}},
			{Name: UserFlannel, Roles: []string{roleFlannel}},
			{Name: UserLB},
		},
		// The shared lb identity held the VIP's election role before lb names were
		// bound; an lb's own user (LBUser) holds it now.
		Revoked: []etcdmember.User{{Name: UserLB, Roles: []string{roleLB}}},
	}
}
