// Command demo shows the master role's whole story on one machine, without root:
// three masters on 127.0.0.21-23 bootstrap, lose their leader, keep writing and heal.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/procs"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n\033[1m==> "+format+"\033[0m\n", args...)
}

func run() error {
	bin := os.Getenv("HAAGENT_BIN")
	if bin == "" {
		bin = "bin/haagent"
	}
	dir, err := os.MkdirTemp("", "haagent-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c := procs.NewCluster(bin, dir, 3)
	// Secure, as haagent is by default: mutual TLS with certificates from the cluster CA.
	c.Secure("demo-token-0123456789abcdef")
	defer c.StopAll()
	start := time.Now()

	step("starting three masters at once on 127.0.0.21, .22, .23 (logs in %s)", dir)
	for _, m := range c.Masters {
		fmt.Printf("    %s %s\n", bin, join(m.Args()))
	}
	if err := c.StartAll(); err != nil {
		return err
	}
	if err := c.WaitReady(30 * time.Second); err != nil {
		return err
	}
	fmt.Printf("    all three ready in %s\n", time.Since(start).Round(time.Millisecond))

	step("haagent status on m1")
	if err := show(bin, "status", "--status-address="+c.Masters[0].StatusAddress()); err != nil {
		return err
	}

	leader, err := c.Leader()
	if err != nil {
		return err
	}
	step("kill -9 the leader, %s", leader.Name)
	killed := time.Now()
	if err := leader.Kill(); err != nil {
		return err
	}
	var rest []*procs.Master
	for _, m := range c.Masters {
		if m != leader {
			rest = append(rest, m)
		}
	}
	var newLeader *procs.Master
	err = await.Until(context.Background(), "a new leader agreed by the two other masters", 15*time.Second, func() error {
		newLeader, err = c.Leader(rest...)
		return err
	}, await.Every(20*time.Millisecond))
	if err != nil {
		return err
	}
	fmt.Printf("    new leader %s elected %s after the kill\n", newLeader.Name, time.Since(killed).Round(time.Millisecond))

	pki := filepath.Join(rest[0].Root, "etc/kubernetes/pki")
	tlsCfg, err := (&transport.TLSInfo{CertFile: filepath.Join(pki, "etcd-client.crt"), KeyFile: filepath.Join(pki, "etcd-client.key"),
		TrustedCAFile: filepath.Join(pki, "ca.crt")}).ClientConfig()
	if err != nil {
		return err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{rest[0].ClientURL(), rest[1].ClientURL()},
		TLS: tlsCfg, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/demo/written-while-degraded", time.Now().Format(time.RFC3339)); err != nil {
		return fmt.Errorf("write with one master down: %w", err)
	}
	fmt.Println("    a write with one master down succeeded")
	if err := show(bin, "member", "list", "--endpoints="+rest[0].ClientURL(), "--root="+rest[0].Root); err != nil {
		return err
	}

	step("restart %s with its data dir", leader.Name)
	if err := leader.Start(); err != nil {
		return err
	}
	if err := leader.WaitReady(30 * time.Second); err != nil {
		return err
	}
	if err := show(bin, "member", "list", "--endpoints="+leader.ClientURL(), "--root="+leader.Root); err != nil {
		return err
	}
	got, err := cli.Get(ctx, "/demo/written-while-degraded")
	if err != nil || len(got.Kvs) != 1 {
		return fmt.Errorf("read back: %v", err)
	}

	step("stopping everything")
	c.StopAll()
	fmt.Printf("\ndemo done in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

func show(bin string, args ...string) error {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

func join(args []string) string {
	s := ""
	for i, a := range args {
		if i > 0 {
			s += " "
		}
		s += a
	}
	return s
}
