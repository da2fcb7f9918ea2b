package master

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/trust/atrest"
	"github.com/haagent/haagent/trust/carotate"
	"github.com/haagent/haagent/trust/pki"
	"github.com/haagent/haagent/trust/shareddoc"
)

// ServerToken reads the server token a master under root runs with; its error says
// where to run the command that needs it.
func ServerToken(root string) (pki.Token, error) {
	t, err := pki.ReadTokenFile(filepath.Join(root, TokenFile))
	if err != nil {
		return pki.Token{}, fmt.Errorf("%w; run it on a master (or pass that master's --root)", err)
	}
	return t, nil
}

// RotateToken stores a new agent or lb token (kind) in the sealed shared document,
// opened with the server token under root, only if the document is still the one it
// read, so that two rotations at once can't lose the other's fields. A cluster built
// with one token gets its lb token with its first agent token. It returns the new
// token pinned to the cluster CA, as nodes join with it.
func RotateToken(ctx context.Context, kv clientv3.KV, root string, kind pki.Kind) (pki.Token, error) {
	server, err := ServerToken(root)
	if err != nil {
		return pki.Token{}, err
	}
	doc, err := shareddoc.Load(ctx, kv, server)
	if errors.Is(err, shareddoc.ErrMissing) {
		return pki.Token{}, fmt.Errorf("%w; start the masters first", err)
	}
	if err != nil {
		return pki.Token{}, err
	}
	sh := doc.Shared
	if kind == pki.KindLB && sh.AgentToken == nil {
		return pki.Token{}, errors.New("this cluster was built with one token and has no lb token yet; 'haagent token rotate --agent' makes the agent and the lb token")
	}
	tok, err := pki.GenerateToken(kind)
	if err != nil {
		return pki.Token{}, err
	}
	file := AgentTokenFile
	if kind == pki.KindAgent {
		sh.AgentToken = &tok
	} else {
		sh.LBToken, file = &tok, LBTokenFile
	}
	if sh.LBToken == nil {
		lb, err := pki.GenerateToken(pki.KindLB)
		if err != nil {
			return pki.Token{}, err
		}
		sh.LBToken = &lb
	}
	switch err := shareddoc.Store(ctx, kv, server, sh, doc.Rev); {
	case errors.Is(err, shareddoc.ErrConflict):
		return pki.Token{}, fmt.Errorf("%s changed while rotating; run it again", pki.SharedKey)
	case err != nil:
		return pki.Token{}, fmt.Errorf("store the new %s token: %w", kind, err)
	}
	// The masters' watches write them too; writing them here makes 'token show' right at once.
	for path, kept := range map[string]*pki.Token{file: &tok, LBTokenFile: sh.LBToken} {
		if err := pki.WriteTokenFile(filepath.Join(root, path), *kept); err != nil {
			return pki.Token{}, fmt.Errorf("the new %s token is in etcd, but: %w", kind, err)
		}
	}
	return tok.Pinned(sh.CA.Cert.Raw), nil
}

// RotateCA runs a CA rotation (package carotate) to its end, or carries one on, with
// the server token under root; every master and bound node but those in skip must
// apply each phase within timeout.
func RotateCA(ctx context.Context, cli *clientv3.Client, root string, skip []string, timeout time.Duration, lg *slog.Logger) error {
	server, err := ServerToken(root)
	if err != nil {
		return err
	}
	return carotate.Rotate(ctx, carotate.RotateConfig{
		Client: cli, Token: server, NodesPrefix: NodesPrefix, Skip: skip,
		Check:   func(ctx context.Context) error { return PeerMoveDone(ctx, cli) },
		Timeout: timeout, Poll: time.Second, Logger: lg,
	})
}

// RotateEncryptionKey replaces the key that encrypts Secrets at rest (package atrest),
// with the server token under root, rewriting the Secrets through the apiserver with
// kubeconfig (default: the admin kubeconfig under root); every master's apiserver must
// apply each step within timeout.
func RotateEncryptionKey(ctx context.Context, cli *clientv3.Client, root, kubeconfig string, timeout time.Duration, lg *slog.Logger) error {
	token, err := ServerToken(root)
	if err != nil {
		return err
	}
	if kubeconfig == "" {
		kubeconfig = filepath.Join(root, pki.AdminKubeconfig)
	}
	api, err := atrest.NewAPI(kubeconfig)
	if err != nil {
		return err
	}
	return atrest.Rotate(ctx, atrest.RotateConfig{
		Client: cli, Token: token, RewriteSecrets: api.RewriteSecrets,
		Timeout: timeout, Poll: time.Second, Logger: lg,
	})
}
