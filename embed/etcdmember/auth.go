package etcdmember

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// UserRoot is the etcd user that must exist, holding the root role, before etcd lets
// auth be enabled. No certificate carries its name, so nobody logs in as it. With
// client-cert-auth and auth enabled, etcd takes the user from the CN of the verified
// certificate, so no user has a password.
const (
	UserRoot = "root"
	RoleRoot = "root"
)

// Perm is one key permission of a role: Key alone is one key; with Prefix it is every
// key that starts with Key.
type Perm struct {
	Key    string
	Prefix bool
	Type   authpb.Permission_Type
}

// RangeEnd is the end of the range the permission covers, as etcd takes it.
func (p Perm) RangeEnd() string {
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

// AuthPolicy is a set of users and roles to keep in etcd; the master writes haagent's
// (package master, NewAuthPolicy).
type AuthPolicy struct {
	Roles []Role
	Users []User
	// Revoked are roles that earlier policies granted and this one takes away.
	Revoked []User
}

// EnsureUser adds the user, and grants it the roles it lacks.
func EnsureUser(ctx context.Context, cli *clientv3.Client, u User, lg *slog.Logger) error {
	if err := ensureUser(ctx, cli, u, lg); err != nil {
		return fmt.Errorf("etcd user %s: %w", u.Name, err)
	}
	return nil
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
			return bytes.Equal(have.Key, []byte(want.Key)) && bytes.Equal(have.RangeEnd, []byte(want.RangeEnd())) &&
				(have.PermType == want.Type || have.PermType == authpb.READWRITE)
		}) {
			continue
		}
		if _, err := cli.RoleGrantPermission(ctx, r.Name, want.Key, want.RangeEnd(), clientv3.PermissionType(want.Type)); err != nil {
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
