package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/roles/master"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/procs"
	"github.com/haagent/haagent/trust/join"
	"github.com/haagent/haagent/trust/pki"
)

// serverToken is the server token of TestAgentToken's cluster: having a kind makes it a
// new-style cluster, whose first master makes an agent token.
const serverToken = "server:haagent-integration-test-0123456789"

// runNamedMinion is runMinion with a name of the test's choosing.
func runNamedMinion(t *testing.T, name, root, joinHost, token string) (code int, out string) {
	t.Helper()
	return runMinionWith(t, procs.MinionConfig{Name: name, IP: "127.0.0.31", LB: joinHost, Token: token, Root: root})
}

// tokenShow is `haagent token show` on a master: the server, the agent and the lb token.
func tokenShow(t *testing.T, m *procs.Master) (server, agent, lb string) {
	t.Helper()
	out, err := exec.Command(bin, "token", "show", "--root="+m.Root).Output()
	if err != nil {
		t.Fatalf("token show: %v", err)
	}
	lines := strings.Fields(string(out))
	if len(lines) != 3 || !strings.Contains(lines[0], "::server:") || !strings.Contains(lines[1], "::agent:") || !strings.Contains(lines[2], "::lb:") {
		t.Fatalf("token show = %q, want a pinned server, agent and lb token", out)
	}
	return lines[0], lines[1], lines[2]
}

// requireNothingWritten fails if a refused node wrote anything under root.
func requireNothingWritten(t *testing.T, root string) {
	t.Helper()
	for _, p := range []string{"etc/kubernetes", node.NodeSecretFile} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("a refused node wrote %s", p)
		}
	}
}

func TestAgentToken(t *testing.T) {
	c := newCluster(t)
	c.Secure(serverToken)
	startReady(t, c)
	m1, m2 := c.Masters[0], c.Masters[1]
	server, agent, lb := tokenShow(t, m1)
	if s2, a2, l2 := tokenShow(t, m2); s2 != server || a2 != agent || l2 != lb {
		t.Fatalf("m2 shows other tokens than m1:\n%s\n%s\n%s", s2, a2, l2)
	}
	joined := t.TempDir()

	t.Run("the server token on a minion is refused at parse", func(t *testing.T) {
		root := t.TempDir()
		out, err := exec.Command(bin, "--role=minion", "--lb="+m2.IP, "--token="+server, "--root="+root).CombinedOutput()
		want := "--token: this is the server token; minions take the agent token from 'haagent token show --kind=agent' on a master"
		if exitOf(err) != 2 || strings.TrimSpace(string(out)) != "haagent: "+want {
			t.Fatalf("exit %d, %q; want exit 2 and %q", exitOf(err), out, want)
		}
		requireNothingWritten(t, root)
	})
	t.Run("the agent token on a master is refused at parse", func(t *testing.T) {
		out, err := exec.Command(bin, "--role=master", "--name=m9", "--token="+agent, "--data-dir="+t.TempDir()).CombinedOutput()
		if exitOf(err) != 2 || !strings.Contains(string(out), "--token: this is the agent token") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
			t.Fatalf("exit %d, %q; want exit 2 and one line about the agent token", exitOf(err), out)
		}
	})
	t.Run("the agent token joins a minion", func(t *testing.T) {
		if code, log := runNamedMinion(t, "minion1", joined, m2.IP, agent); code != 0 {
			t.Fatalf("minion exit %d:\n%s", code, log)
		}
		for _, p := range []string{pki.CAKey, pki.SAKey, pki.AdminKubeconfig} {
			if _, err := os.Stat(filepath.Join(joined, p)); err == nil {
				t.Errorf("the minion received %s", p)
			}
		}
		if _, err := os.Stat(filepath.Join(joined, node.NodeSecretFile)); err != nil {
			t.Errorf("the minion kept no node secret: %v", err)
		}
	})
	t.Run("the agent token asking for the master bundle gets 403", func(t *testing.T) {
		tok, _ := pki.ParseToken(agent)
		_, _, err := join.Fetch(context.Background(), m1.IP+":9345", tok, nil, nil, join.Request{Role: "master", Name: "m1"})
		if !errors.Is(err, join.ErrForbidden) || !strings.Contains(err.Error(), "403") {
			t.Fatalf("err = %v, want 403", err)
		}
		if !strings.Contains(m1.Logs(), "join refused: the agent token can't obtain a master's certificates") {
			t.Fatal("m1 did not log the refusal")
		}
	})
	t.Run("a minion with a master's name gets 403", func(t *testing.T) {
		root := t.TempDir()
		code, log := runNamedMinion(t, "m3", root, m2.IP, agent)
		if code == 0 || !strings.Contains(log, `is a master's`) || !strings.Contains(log, "403") {
			t.Fatalf("exit %d:\n%s", code, log)
		}
		requireNothingWritten(t, root)
	})
	t.Run("a second minion with the same name gets 403", func(t *testing.T) {
		root := t.TempDir()
		code, log := runNamedMinion(t, "minion1", root, m2.IP, agent)
		if code == 0 || !strings.Contains(log, "belongs to another node") || !strings.Contains(log, "403") {
			t.Fatalf("exit %d:\n%s", code, log)
		}
		requireNothingWritten(t, root)
	})

	out, err := exec.Command(bin, "token", "rotate", "--agent", "--root="+m1.Root, "--endpoints="+m1.ClientURL()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "::agent:") {
		t.Fatalf("token rotate: %v\n%s", err, out)
	}
	rotated := strings.TrimSpace(string(out))
	rotatedTok, _ := pki.ParseToken(rotated)
	// Every master's watch picks the new token up; m3 is the one no command ran on.
	err = await.Until(context.Background(), "m3 to pick up the rotated agent token", 20*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(c.Masters[2].Root, master.AgentTokenFile))
		if err != nil {
			return err
		}
		if got, _ := pki.ParseToken(string(b)); got.Secret != rotatedTok.Secret {
			return errors.New("m3 still holds the previous agent token")
		}
		return nil
	}, await.Every(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("after rotation the old agent token is refused for a new join", func(t *testing.T) {
		root := t.TempDir()
		code, log := runNamedMinion(t, "minion2", root, c.Masters[2].IP, agent)
		if code == 0 || !strings.Contains(log, "wrong token") {
			t.Fatalf("exit %d:\n%s", code, log)
		}
		requireNothingWritten(t, root)
	})
	t.Run("after rotation a joined minion still renews, with its certificate", func(t *testing.T) {
		// A missing file makes the minion get every certificate again at start, as a
		// renewal at 2/3 of their lifetime does; it still holds only the old token.
		before, _ := os.ReadFile(filepath.Join(joined, pki.KubeletClientCert))
		if err := os.Remove(filepath.Join(joined, pki.FlannelEtcdCert)); err != nil {
			t.Fatal(err)
		}
		code, log := runNamedMinion(t, "minion1", joined, c.Masters[2].IP, agent)
		if code != 0 || !strings.Contains(log, "client certificate") {
			t.Fatalf("renewal: exit %d:\n%s", code, log)
		}
		after, _ := os.ReadFile(filepath.Join(joined, pki.KubeletClientCert))
		if string(after) == string(before) {
			t.Fatal("the kubelet client certificate was not renewed")
		}
		if _, err := tls.LoadX509KeyPair(filepath.Join(joined, pki.FlannelEtcdCert), filepath.Join(joined, pki.FlannelEtcdKey)); err != nil {
			t.Fatalf("the renewed flannel certificate: %v", err)
		}
	})
	t.Run("the rotated agent token joins a new minion", func(t *testing.T) {
		if code, log := runNamedMinion(t, "minion2", t.TempDir(), m2.IP, rotated); code != 0 {
			t.Fatalf("minion exit %d:\n%s", code, log)
		}
	})
}

// TestLegacyTokenMigration: a cluster built with one bare token, as before there were
// two, keeps joining minions with it until the operator sets an agent token, as the
// README's migration says; then the single token joins masters only.
func TestLegacyTokenMigration(t *testing.T) {
	c := newCluster(t) // testToken: a bare, legacy token
	startReady(t, c)
	m1, m2 := c.Masters[0], c.Masters[1]
	out, err := exec.Command(bin, "token", "show", "--root="+m1.Root).Output()
	if err != nil || len(strings.Fields(string(out))) != 1 {
		t.Fatalf("token show on a legacy cluster = %q, %v; want the single token", out, err)
	}
	joined := t.TempDir()
	if code, log := runNamedMinion(t, "minion1", joined, m2.IP, testToken); code != 0 {
		t.Fatalf("a legacy minion join: exit %d:\n%s", code, log)
	}
	if !strings.Contains(m2.Logs(), "joined with the single legacy token") {
		t.Fatal("m2 did not warn about the legacy token")
	}

	out, err = exec.Command(bin, "token", "rotate", "--agent", "--root="+m1.Root, "--endpoints="+m1.ClientURL()).CombinedOutput()
	if err != nil {
		t.Fatalf("token rotate: %v\n%s", err, out)
	}
	agent := strings.TrimSpace(string(out))
	agentTok, _ := pki.ParseToken(agent)
	err = await.Until(context.Background(), "m2 to pick up the new agent token", 20*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(m2.Root, master.AgentTokenFile))
		if err != nil {
			return err
		}
		if got, _ := pki.ParseToken(string(b)); got.Secret != agentTok.Secret {
			return errors.New("m2 holds another agent token")
		}
		return nil
	}, await.Every(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}

	// The lb token comes with the first agent token, and m2 follows it too.
	err = await.Until(context.Background(), "m2 to show an lb token", 10*time.Second, func() error {
		out, err := exec.Command(bin, "token", "show", "--kind=lb", "--root="+m2.Root).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "::lb:") {
			return fmt.Errorf("token show --kind=lb = %q, %v", out, err)
		}
		return nil
	}, await.Every(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	code, log := runNamedMinion(t, "minion2", root, m2.IP, testToken)
	if code == 0 || !strings.Contains(log, "this is the server token") {
		t.Fatalf("the single token on a new minion after migration: exit %d:\n%s", code, log)
	}
	requireNothingWritten(t, root)
	if err := os.Remove(filepath.Join(joined, pki.FlannelEtcdCert)); err != nil {
		t.Fatal(err)
	}
	if code, log := runNamedMinion(t, "minion1", joined, m2.IP, testToken); code != 0 || !strings.Contains(log, "client certificate") {
		t.Fatalf("the joined minion renewing after migration: exit %d:\n%s", code, log)
	}
	if code, log := runNamedMinion(t, "minion2", t.TempDir(), m2.IP, agent); code != 0 {
		t.Fatalf("a new minion with the agent token: exit %d:\n%s", code, log)
	}
}
