package master

import (
	"slices"
	"testing"

	"github.com/haagent/haagent/embed/etcdmember"
)

func TestAuthPolicy(t *testing.T) {
	p := NewAuthPolicy("/registry/", "/coreos.com/network/")
	roles := map[string][]string{}
	for _, r := range p.Roles {
		for _, perm := range r.Perms {
			roles[r.Name] = append(roles[r.Name], perm.String()+" end="+perm.RangeEnd())
		}
	}
	want := map[string][]string{
		roleAPIServer: {"READWRITE /registry/* end=/registry0"},
		roleFlannel:   {"READ /coreos.com/network/* end=/coreos.com/network0", "READWRITE /coreos.com/network/subnets* end=/coreos.com/network/subnett"},
		// The lb's VIP election, under its prefix only.
		roleLB: {"READWRITE /haagent/vip/* end=/haagent/vip0"},
	}
	for name, w := range want {
		if !slices.Equal(roles[name], w) {
			t.Errorf("role %s: %q, want %q", name, roles[name], w)
		}
	}
	if len(roles[etcdmember.RoleRoot]) != 0 {
		t.Errorf("root role carries key permissions: %q", roles[etcdmember.RoleRoot])
	}
	users := map[string][]string{}
	for _, u := range p.Users {
		users[u.Name] = u.Roles
	}
	for name, w := range map[string][]string{
		etcdmember.UserRoot: {etcdmember.RoleRoot}, UserHaagent: {etcdmember.RoleRoot}, UserAPIServer: {roleAPIServer}, UserFlannel: {roleFlannel},
		// The identity every lb shared before lb names were bound has no role: each lb
		// has its own user, and its own is taken away on upgrade.
		UserLB: nil,
	} {
		got, ok := users[name]
		if !ok || !slices.Equal(got, w) {
			t.Errorf("user %s: roles %q (listed %v), want %q", name, got, ok, w)
		}
	}
	if len(users) != 5 {
		t.Errorf("users %v, want exactly root, haagent, the apiserver, flannel and the lb", users)
	}
	if len(p.Revoked) != 1 || p.Revoked[0].Name != UserLB || !slices.Equal(p.Revoked[0].Roles, []string{roleLB}) {
		t.Errorf("revoked %v, want the VIP's role taken from %s", p.Revoked, UserLB)
	}
	if u := LBUser("lb1"); u.Name != "haagent-lb:lb1" || !slices.Equal(u.Roles, []string{roleLB}) {
		t.Errorf("LBUser(lb1) = %v, want haagent-lb:lb1 with the VIP's role", u)
	}
}
