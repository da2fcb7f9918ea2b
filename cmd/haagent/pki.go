package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/haagent/haagent/pki"
	"github.com/haagent/haagent/roles/master"
)

func runToken(ctx context.Context, args []string) error {
	fs := newFlagSet("haagent token")
	root := fs.String("root", master.DefaultRoot, "the master's --root")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) != 1 || (rest[0] != "generate" && rest[0] != "show") {
		return usagef("token: use 'haagent token generate' or 'haagent token show'")
	}
	if rest[0] == "generate" {
		t, err := pki.GenerateToken()
		if err != nil {
			return err
		}
		fmt.Println(t)
		return nil
	}
	secret, err := os.ReadFile(filepath.Join(*root, master.TokenFile))
	if err != nil {
		return fmt.Errorf("token show: %w; run it on a master (or pass that master's --root)", err)
	}
	t, err := pki.ParseToken(string(secret))
	if err != nil {
		return fmt.Errorf("token show: %s: %w", master.TokenFile, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(*root, pki.CACert))
	if err != nil {
		return fmt.Errorf("token show: the cluster CA is not here yet (%w); start the master first", err)
	}
	ca, err := pki.ParseCert(caPEM)
	if err != nil {
		return err
	}
	fmt.Println(t.Pinned(ca.Raw))
	return nil
}

func runCerts(ctx context.Context, args []string) error {
	fs := newFlagSet("haagent certs")
	mc := master.NewConfig()
	mc.AddFlags(fs) // renew reissues with this master's identity, from the same flags and HAAGENT_* variables
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) != 1 || (rest[0] != "check" && rest[0] != "renew") {
		return usagef("certs: use 'haagent certs check' or 'haagent certs renew'")
	}
	if rest[0] == "renew" {
		sh, err := pki.LoadShared(mc.Root)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("certs renew: no CA key under %s: renew runs on a master; a minion renews by rejoining (restart haagent)", mc.Root)
		} else if err != nil {
			return fmt.Errorf("certs renew: %w", err)
		}
		if err := mc.Complete(); err != nil {
			return usageError{err}
		}
		if _, err := master.RenewIfDue(mc.Root, sh, mc.Node(), time.Now(), true); err != nil {
			return fmt.Errorf("certs renew: %w", err)
		}
		fmt.Println("renewed every certificate of this master; etcd and the join service pick them up at their next handshake")
	}
	infos, err := pki.Inspect(mc.Root)
	if err != nil {
		return fmt.Errorf("certs check: %w", err)
	}
	if len(infos) == 0 {
		return fmt.Errorf("certs check: no certificates under %s", filepath.Join(mc.Root, pki.Dir))
	}
	now := time.Now()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
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
