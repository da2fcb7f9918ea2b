package etcdmember

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/embed/vip"
	"github.com/haagent/haagent/trust/pki"
)

// The etcd users, one per client certificate CN that pki issues: with client-cert-auth
// and auth enabled, etcd takes the user from the CN of the verified certificate, so no
// user has a password.
const (
	// UserRoot must exist, holding the root role, before etcd lets auth be enabled. No
	// certificate carries its name, so nobody logs in as it.
	UserRoot = "root"
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

	roleRoot      = "root"
	roleAPIServer = "kube-apiserver"
	roleFlannel   = "flannel"
	roleLB        = "haagent-lb"

	// DefaultAPIServerPrefix is kube-apiserver's --etcd-prefix default.
	DefaultAPIServerPrefix = "/registry"
)

// Perm is one key permission of a role: Key alone is one key; with Prefix it is every
// key that starts with Key.
type Perm struct {
	Key    string
	Prefix bool
	Type   authpb.Permission_Type
}

func (p Perm) rangeEnd() string {
	if p.Prefix {
		return clientv3.GetPrefixRangeEnd(p.Key)
	}
	return ""
}

func (p Perm) String() string {
	s := p.Key
	if p.Prefix {
		s += "*"
	}
	return p.Type.String() + " " + s
}

// Role is an etcd role and its key permissions.
type Role struct {
	Name  string
	Perms []Perm
}

// User is an etcd user and its roles.
type User struct {
	Name  string
	Roles []string
}

// AuthPolicy is the users and roles haagent keeps in etcd.
type AuthPolicy struct {
	Roles []Role
	Users []User
	// Revoked are roles that earlier policies granted and this one takes away.
	Revoked []User
}

// LBUser is the etcd user of the lb called name, whose certificate's CN is its name
// after pki.LBNamePrefix: its health check (etcd answers GET /health as root whatever
// the certificate, so that needs no permission) and, with --vip, its part in the
// election of the VIP's holder, which reads and writes under vip.KeyPrefix and nowhere
// else. The masters add it when they first issue that lb's certificate (EnsureLBUser).
func LBUser(name string) User {
	return User{Name: pki.LBNamePrefix + name, Roles: []string{roleLB}}
}

// EnsureLBUser adds the lb's user, LBUser(name), unless it is there with its role.
func EnsureLBUser(ctx context.Context, cli *clientv3.Client, name string, lg *slog.Logger) error {
	u := LBUser(name)
	if err := ensureUser(ctx, cli, u, lg); err != nil {
		return fmt.Errorf("etcd user %s: %w", u.Name, err)
	}
	return nil
}

// NewAuthPolicy is the policy for a cluster whose kube-apiserver stores under
// apiserverPrefix (its --etcd-prefix) and whose flannel config is under flannelPrefix.
func NewAuthPolicy(apiserverPrefix, flannelPrefix string) AuthPolicy {
	apiserverPrefix = strings.TrimSuffix(apiserverPrefix, "/") + "/"
	flannelPrefix = strings.TrimSuffix(flannelPrefix, "/")
	return AuthPolicy{
		Roles: []Role{
			{Name: roleRoot},
			// The apiserver's health check reads <prefix>/health, inside the prefix. Its
			// compactor, which kept compact_rev_key at the root, is off: etcd allows
			// Compact to root only, and the members compact themselves.
			{Name: roleAPIServer, Perms: []Perm{
				{Key: apiserverPrefix, Prefix: true, Type: clientv3.PermReadWrite},
			}},
			// flannel 0.28's etcd subnet manager reads <prefix>/config and reads, writes
			// and watches <prefix>/subnets*; lease grants need no key permission, and a
			// lease revoke needs write on the keys attached, which are subnets. It may not
			// change the network config that the masters seed.
			{Name: roleFlannel, Perms: []Perm{
				{Key: flannelPrefix + "/", Prefix: true, Type: clientv3.PermRead},
				{Key: path.Join(flannelPrefix, "subnets"), Prefix: true, Type: clientv3.PermReadWrite},
			}},
			// The VIP's election: a key per lb under the prefix, attached to its lease; a
			// standby revokes a stale holder's lease, which needs write on its key, so
			// every lb may write every lb's key (etcd's permissions are by key range, and
			// the key's name is the lease's ID, which etcd picks at grant).
			{Name: roleLB, Perms: []Perm{
				{Key: vip.KeyPrefix, Prefix: true, Type: clientv3.PermReadWrite},
			}},
		},
		Users: []User{
			{Name: UserRoot, Roles: []string{roleRoot}},
			{Name: UserHaagent, Roles: []string{roleRoot}},
			{Name: UserAPIServer, Roles: []string{roleAPIServer}},
			{Name: UserFlannel, Roles: []string{roleFlannel}},
			{Name: UserLB},
		},
		// The shared lb identity held the VIP's election role before lb names were
		// bound; an lb's own user (LBUser) holds it now.
		Revoked: []User{{Name: UserLB, Roles: []string{roleLB}}},
	}
}

// EnsureAuth creates the policy's roles and users where they are missing, grants what
// is missing, then enables auth. Every step first reads, then changes only what
// differs, and treats "already exists" as done, so masters that run it at the same
// time agree without a lock, and a restart changes nothing: each change bumps etcd's
// auth revision, which fails requests in flight with ErrAuthOldRevision. haagent's own
// user holds the root role before auth is enabled, so the next start can still read
// and change the policy. It only adds, but for the roles the policy lists as revoked:
// a permission granted by hand stays.
func EnsureAuth(ctx context.Context, cli *clientv3.Client, p AuthPolicy, lg *slog.Logger) error {
	for _, r := range p.Roles {
		if err := ensureRole(ctx, cli, r, lg); err != nil {
			return fmt.Errorf("enable etcd auth: role %s: %w", r.Name, err)
		}
	}
	for _, u := range p.Users {
		if err := ensureUser(ctx, cli, u, lg); err != nil {
			return fmt.Errorf("enable etcd auth: user %s: %w", u.Name, err)
		}
	}
	for _, u := range p.Revoked {
		if err := revokeRoles(ctx, cli, u, lg); err != nil {
			return fmt.Errorf("enable etcd auth: user %s: %w", u.Name, err)
		}
	}
	st, err := cli.AuthStatus(ctx)
	if err != nil {
		return fmt.Errorf("enable etcd auth: status: %w", err)
	}
	if st.Enabled {
		return nil
	}
	// etcd ignores an enable when auth is already on, so a race with another master is harmless.
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("enable etcd auth: %w", err)
	}
	lg.Info("[auth] enabled etcd authentication: each client certificate's CN is its etcd user")
	return nil
}

func ensureRole(ctx context.Context, cli *clientv3.Client, r Role, lg *slog.Logger) error {
	got, err := cli.RoleGet(ctx, r.Name)
	if isEtcdError(err, rpctypes.ErrRoleNotFound) {
		if _, err := cli.RoleAdd(ctx, r.Name); err != nil && !isEtcdError(err, rpctypes.ErrRoleAlreadyExist) {
			return fmt.Errorf("add: %w", err)
		}
		lg.Info("[auth] added etcd role", "role", r.Name)
		got = &clientv3.AuthRoleGetResponse{}
	} else if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	for _, want := range r.Perms {
		if slices.ContainsFunc(got.Perm, func(have *authpb.Permission) bool {
			return bytes.Equal(have.Key, []byte(want.Key)) && bytes.Equal(have.RangeEnd, []byte(want.rangeEnd())) &&
				(have.PermType == want.Type || have.PermType == authpb.READWRITE)
		}) {
			continue
		}
		if _, err := cli.RoleGrantPermission(ctx, r.Name, want.Key, want.rangeEnd(), clientv3.PermissionType(want.Type)); err != nil {
			return fmt.Errorf("grant %s: %w", want, err)
		}
		lg.Info("[auth] granted etcd permission", "role", r.Name, "perm", want.String())
	}
	return nil
}

func ensureUser(ctx context.Context, cli *clientv3.Client, u User, lg *slog.Logger) error {
	var have []string
	got, err := cli.UserGet(ctx, u.Name)
	switch {
	case isEtcdError(err, rpctypes.ErrUserNotFound):
		// No password: the user logs in only with a certificate that carries its name.
		_, err := cli.UserAddWithOptions(ctx, u.Name, "", &clientv3.UserAddOptions{NoPassword: true})
		if err != nil && !isEtcdError(err, rpctypes.ErrUserAlreadyExist) {
			return fmt.Errorf("add: %w", err)
		}
		lg.Info("[auth] added etcd user", "user", u.Name)
	case err != nil:
		return fmt.Errorf("get: %w", err)
	default:
		have = got.Roles
	}
	for _, r := range u.Roles {
		if slices.Contains(have, r) {
			continue
		}
		if _, err := cli.UserGrantRole(ctx, u.Name, r); err != nil {
			return fmt.Errorf("grant role %s: %w", r, err)
		}
		lg.Info("[auth] granted etcd role", "user", u.Name, "role", r)
	}
	return nil
}

// revokeRoles takes u's roles away from the user, where it holds them.
func revokeRoles(ctx context.Context, cli *clientv3.Client, u User, lg *slog.Logger) error {
	got, err := cli.UserGet(ctx, u.Name)
	if isEtcdError(err, rpctypes.ErrUserNotFound) {
		return nil
	} else if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	for _, r := range u.Roles {
		if !slices.Contains(got.Roles, r) {
			continue
		}
		if _, err := cli.UserRevokeRole(ctx, u.Name, r); err != nil && !isEtcdError(err, rpctypes.ErrRoleNotGranted) {
			return fmt.Errorf("revoke role %s: %w", r, err)
		}
		lg.Info("[auth] revoked etcd role", "user", u.Name, "role", r)
	}
	return nil
}
