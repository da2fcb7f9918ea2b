package join

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/haagent/haagent/files"
	"github.com/haagent/haagent/pki"
)

// ObtainTimeout bounds the wait for a join service at start.
const ObtainTimeout = 5 * time.Minute

// Obtain fetches a node's files from the first of servers that answers, retrying until
// ObtainTimeout, and writes them under root (keys 0600). A refused token or a CA that
// fails the pin is final: waiting will not fix it.
func Obtain(ctx context.Context, lg *slog.Logger, root string, servers []string, token pki.Token, req Request) error {
	deadline := time.Now().Add(ObtainTimeout)
	lastLog := time.Time{}
	for {
		var err error
		for _, server := range servers {
			var fs []files.File
			fs, _, err = Fetch(ctx, server, token, req)
			if err == nil {
				for i := range fs {
					if pki.IsKey(fs[i].Path) {
						fs[i].Mode = 0o600
					}
				}
				if _, err := files.Apply(root, fs); err != nil {
					return fmt.Errorf("write certificates: %w", err)
				}
				lg.Info("joined the cluster: wrote certificates", "via", server, "files", len(fs))
				return nil
			}
			if errors.Is(err, ErrForbidden) || errors.Is(err, pki.ErrCAMismatch) {
				return err
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("join via %v: no answer within %s: %w", servers, ObtainTimeout, err)
		}
		if time.Since(lastLog) > 10*time.Second {
			lg.Warn("waiting for a join service", "servers", servers, "err", err)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
