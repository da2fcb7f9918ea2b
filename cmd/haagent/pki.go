package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/haagent/haagent/roles/master"
	"github.com/haagent/haagent/trust/join"
	"github.com/haagent/haagent/trust/pki"
)

// tokenCmd is `haagent token generate|show|rotate`.
type tokenCmd struct {
	root  string
	only  string // show: "server", "agent", "lb" or "" for all
	agent bool   // rotate --agent
	lb    bool   // rotate --lb
	etcd  etcdClientFlags
}

func (t *tokenCmd) showFlags(fs *pflag.FlagSet) {
	fs.StringVar(&t.root, "root", master.DefaultRoot, "the master's --root")
	fs.StringVar(&t.only, "kind", "", "print only the server, the agent or the lb token")
}

func (t *tokenCmd) rotateFlags(fs *pflag.FlagSet) {
	t.etcd.add(fs)
	fs.BoolVar(&t.agent, "agent", false, "rotate the agent token, the minions'")
	fs.BoolVar(&t.lb, "lb", false, "rotate the lb token, the lbs'")
}

func (t *tokenCmd) generate(ctx context.Context, w io.Writer, _ []string) error {
	for _, k := range []pki.Kind{pki.KindServer, pki.KindAgent, pki.KindLB} {
		tok, err := pki.GenerateToken(k)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintln(w, tok); err != nil {
			return err
		}
	}
	return nil
}

// show prints the tokens, each on its own line and self-describing (K10...::server:,
// K10...::agent:, K10...::lb:); a legacy cluster has one token and prints it alone.
func (t *tokenCmd) show(ctx context.Context, w io.Writer, _ []string) error {
	kinds := []pki.Kind{pki.KindServer, pki.KindAgent, pki.KindLB}
	if t.only != "" && !slices.Contains(kinds, pki.Kind(t.only)) {
		return usageError{fmt.Errorf("--kind: %q is not server, agent or lb", t.only)}
	}
	server, err := master.ServerToken(t.root)
	if err != nil {
		return fmt.Errorf("token show: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(t.root, pki.CACert))
	if err != nil {
		return fmt.Errorf("token show: the cluster CA is not here yet (%w); start the master first", err)
	}
	ca, err := pki.ParseCert(caPEM)
	if err != nil {
		return fmt.Errorf("token show: %s: %w", pki.CACert, err)
	}
	kept := map[pki.Kind]string{pki.KindAgent: master.AgentTokenFile, pki.KindLB: master.LBTokenFile}
	for _, k := range kinds {
		if t.only != "" && t.only != string(k) {
			continue
		}
		tok := server
		if k != pki.KindServer {
			tok, err = pki.ReadTokenFile(filepath.Join(t.root, kept[k]))
			switch {
			case errors.Is(err, os.ErrNotExist) && t.only == "":
				continue // a legacy cluster, or one whose masters don't make lb tokens yet
			case errors.Is(err, os.ErrNotExist):
				return fmt.Errorf("token show: this cluster has no %s token yet; 'haagent token rotate --agent' makes the agent and the lb token of a cluster built with one token", k)
			case err != nil:
				return fmt.Errorf("token show: %w", err)
			}
		}
		if _, err := fmt.Fprintln(w, tok.Pinned(ca.Raw)); err != nil {
			return err
		}
	}
	return nil
}

// rotate stores a new agent or lb token in the sealed shared doc, only if the doc is
// still the one it read, so that two rotations at once can't lose the other's fields.
// A cluster built with one token gets its lb token with its first agent token.
func (t *tokenCmd) rotate(ctx context.Context, w io.Writer, _ []string) error {
	if t.agent == t.lb {
		return usageError{errors.New("--agent or --lb: give one; only the agent and lb tokens rotate (the server token seals the CA in etcd)")}
	}
	kind := pki.KindAgent
	if t.lb {
		kind = pki.KindLB
	}
	cli, err := t.etcd.client()
	if err != nil {
		return fmt.Errorf("token rotate: %w", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	pinned, err := master.RotateToken(ctx, cli, t.etcd.root, kind)
	if err != nil {
		return fmt.Errorf("token rotate: %w", err)
	}
	_, err = fmt.Fprintln(w, pinned)
	return err
}

// certsCmd is `haagent certs check|renew|rotate-ca`.
type certsCmd struct {
	root string         // check's --root
	mc   *master.Config // renew's flags
	// rotate-ca's flags
	etcd    etcdClientFlags
	timeout time.Duration
	skip    []string
}

func (c *certsCmd) rotateFlags(fs *pflag.FlagSet) {
	c.etcd.add(fs)
	fs.DurationVar(&c.timeout, "timeout", 30*time.Minute, "how long each phase waits for every master and node to apply the one before")
	fs.StringSliceVar(&c.skip, "skip", nil, "minions or lbs gone for good, not to wait for (by name, comma-separated)")
}

const rotateCALong = `Rotate-ca replaces the cluster CA, and with it the CAs derived from it (the etcd peer CA
and the kubelet-serving CA), on a running cluster, in three phases, each logged:
[trust] every component trusts the new CA beside the old one, which still signs;
[reissue] the new CA signs, and every master and node gets all its certificates again
from it; [drop] the old CA leaves every trust file. Before each phase it waits until
every master (one at a time: each restarts its etcd member and the kube units whose
files changed) and every minion and lb (they renew through the join service within
about 15 s) has applied the one before, so every master and node must be up; --skip
names a node gone for good. Run it on any master; run it again after an interruption
and it carries on. The service-account keys are not rotated: they sign no certificate.

Joined nodes need nothing. A token pinned to the old CA (K10<old hash>::...) joins no
new node once the rotation is done: take the new one from 'haagent token show'.`

// rotateCA runs a CA rotation to its end, or carries one on.
func (c *certsCmd) rotateCA(ctx context.Context, w io.Writer, args []string) error {
	var errs []error
	if c.timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout: %s is not a positive duration (e.g. 30m)", c.timeout))
	}
	for _, name := range c.skip {
		if !join.ValidDNSName(name) {
			errs = append(errs, fmt.Errorf("--skip: %q is not a node name (lower case letters, digits, '-' and '.')", name))
		}
	}
	if c.etcd.insecure {
		errs = append(errs, errors.New("--insecure: a cluster without TLS has no CA to rotate"))
	}
	if len(errs) > 0 {
		return usageError{errors.Join(errs...)}
	}
	cli, err := c.etcd.client()
	if err != nil {
		return fmt.Errorf("certs rotate-ca: %w", err)
	}
	defer cli.Close()
	if err := master.RotateCA(ctx, cli, c.etcd.root, c.skip, c.timeout, commandLogger(w)); err != nil {
		return fmt.Errorf("certs rotate-ca: %w", err)
	}
	return nil
}

func (c *certsCmd) checkFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.root, "root", master.DefaultRoot, "the master's --root")
}

// renewFlags are the master's own: renew reissues with this master's identity, from the
// same flags and HAAGENT_* variables as the agent.
func (c *certsCmd) renewFlags(fs *pflag.FlagSet) {
	c.mc = master.NewConfig()
	c.mc.AddFlags(fs)
}

func (c *certsCmd) renew(ctx context.Context, w io.Writer, _ []string) error {
	mc := c.mc
	sh, err := pki.LoadShared(mc.Root)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("certs renew: no CA key under %s: renew runs on a master; a minion renews by rejoining (restart haagent)", mc.Root)
	} else if err != nil {
		return fmt.Errorf("certs renew: %w", err)
	}
	if err := mc.Complete(); err != nil {
		return usageError{err}
	}
	if _, err := master.Reissue(mc.Root, sh, mc.Node(), time.Now()); err != nil {
		return fmt.Errorf("certs renew: %w", err)
	}
	fmt.Fprintln(w, "renewed every certificate of this master; etcd and the join service pick them up at their next handshake")
	return listCerts(w, mc.Root)
}

func (c *certsCmd) check(ctx context.Context, w io.Writer, _ []string) error {
	return listCerts(w, c.root)
}

// listCerts prints the certificates under root with their expiry and renewal date.
func listCerts(w io.Writer, root string) error {
	infos, err := pki.Inspect(root)
	if err != nil {
		return fmt.Errorf("certs check: %w", err)
	}
	if len(infos) == 0 {
		return fmt.Errorf("certs check: no certificates under %s", filepath.Join(root, pki.Dir))
	}
	now := time.Now()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tSUBJECT\tKEY ID\tSIGNED BY\tEXPIRES\tRENEW AT\tSTATE")
	for _, ci := range infos {
		state := "ok"
		switch {
		case now.After(ci.NotAfter):
			state = "EXPIRED"
		case ci.IsCA:
			state = "ok (CA, not renewed automatically)"
		case !now.Before(ci.RenewAt):
			state = "due for renewal"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ci.Path, strings.TrimSpace(ci.Subject), ci.KeyID, ci.SignedBy,
			ci.NotAfter.UTC().Format("2006-01-02"), ci.RenewAt.UTC().Format("2006-01-02"), state)
	}
	return tw.Flush()
}
