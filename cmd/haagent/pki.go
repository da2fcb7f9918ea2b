package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/haagent/haagent/pki"
	"github.com/haagent/haagent/roles/master"
)

// tokenCmd is `haagent token generate|show`.
type tokenCmd struct {
	root string
}

func (t *tokenCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&t.root, "root", master.DefaultRoot, "the master's --root")
}

func (t *tokenCmd) generate(ctx context.Context, w io.Writer, _ []string) error {
	tok, err := pki.GenerateToken()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, tok)
	return err
}

func (t *tokenCmd) show(ctx context.Context, w io.Writer, _ []string) error {
	secret, err := os.ReadFile(filepath.Join(t.root, master.TokenFile))
	if err != nil {
		return fmt.Errorf("token show: %w; run it on a master (or pass that master's --root)", err)
	}
	tok, err := pki.ParseToken(string(secret))
	if err != nil {
		return fmt.Errorf("token show: %s: %w", master.TokenFile, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(t.root, pki.CACert))
	if err != nil {
		return fmt.Errorf("token show: the cluster CA is not here yet (%w); start the master first", err)
	}
	ca, err := pki.ParseCert(caPEM)
	if err != nil {
		return fmt.Errorf("token show: %s: %w", pki.CACert, err)
	}
	_, err = fmt.Fprintln(w, tok.Pinned(ca.Raw))
	return err
}

// certsCmd is `haagent certs check|renew`.
type certsCmd struct {
	root string         // check's --root
	mc   *master.Config // renew's flags
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
	fmt.Fprintln(tw, "PATH\tSUBJECT\tEXPIRES\tRENEW AT\tSTATE")
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ci.Path, strings.TrimSpace(ci.Subject),
			ci.NotAfter.UTC().Format("2006-01-02"), ci.RenewAt.UTC().Format("2006-01-02"), state)
	}
	return tw.Flush()
}
