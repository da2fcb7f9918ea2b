package main

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

	"github.com/haagent/haagent/roles/master"
)

// secretsCmd is `haagent secrets rotate-key`, run on a master.
type secretsCmd struct {
	etcd       etcdClientFlags
	kubeconfig string
	timeout    time.Duration
}

func (s *secretsCmd) rotateFlags(fs *pflag.FlagSet) {
	s.etcd.add(fs)
	fs.StringVar(&s.kubeconfig, "kubeconfig", "", "the admin kubeconfig the Secrets are rewritten with (default: etc/kubernetes/admin.kubeconfig under --root)")
	fs.DurationVar(&s.timeout, "timeout", 5*time.Minute, "how long each step waits for every master's apiserver to run with the new keys")
}

const rotateLong = `Rotate-key replaces the key that encrypts Secrets in etcd, in four steps, each logged:
[add] a new key that every apiserver can read; [promote] the new key becomes the one
every apiserver writes with; [rewrite] every Secret is read and written back through the
apiserver, so that it is stored with the new key; [remove] the old key is dropped.
Before each step it waits until every master's apiserver has been restarted with the
keys of the step before, so every master must be up (or removed with 'haagent member
remove'). Run it on any master; run it again after an interruption and it carries on.`

func (s *secretsCmd) rotate(ctx context.Context, w io.Writer, _ []string) error {
	cli, err := s.etcd.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	return master.RotateEncryptionKey(ctx, cli, s.etcd.root, s.kubeconfig, s.timeout, commandLogger(w))
}

// commandLogger is how a long command (secrets rotate-key, certs rotate-ca) reports its
// steps: one line each, with the time of day.
func commandLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				a.Value = slog.StringValue(a.Value.Time().Format(time.TimeOnly))
			}
			return a
		},
	}))
}
