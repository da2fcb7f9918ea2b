package hosts_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/hosts"
	"github.com/haagent/haagent/test/framework/netlab"
)

// TestNodesTalkAndFaults: two nodes of a NetworkOnly lab reach each other and nothing
// lands in the machine's own namespace; blackhole is silence (a timeout, no RST) and
// heal brings the link back; a process started in a node is in its namespace and dies
// with KillAll; Teardown removes every namespace, and is safe twice.
func TestNodesTalkAndFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lab := hosts.NewWith(t, hosts.LabOptions{NetworkOnly: true})
	ns, err := lab.AddNodes(ctx, "a=10.77.0.31", "b=10.77.0.32")
	if err != nil {
		t.Fatal(err)
	}
	a, b := ns[0], ns[1]
	if _, err := lab.Add("h1"); err == nil {
		t.Error("a NetworkOnly lab added a host")
	}
	if _, err := lab.AddNode(ctx, "a", netip.Addr{}); err == nil {
		t.Error("a duplicate node name was accepted")
	}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		// Other tests may add links of their own there, so look for ours only.
		if i.Name == "br0" || i.Name == a.Link || i.Name == b.Link {
			t.Fatalf("link %s is in the machine's own namespace", i.Name)
		}
	}

	l, err := b.Listen("tcp", netip.AddrPortFrom(b.IP, 7000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hi")
			c.Close()
		}
	}()
	dial := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err := a.DialContext(ctx, "tcp", netip.AddrPortFrom(b.IP, 7000).String())
		if err != nil {
			return err
		}
		defer c.Close()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "hi" {
			return fmt.Errorf("read %q, %v", got, err)
		}
		return nil
	}
	if err := dial(2 * time.Second); err != nil {
		t.Fatalf("a -> b: %v", err)
	}
	if err := b.Blackhole(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = dial(500 * time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("dial into a blackhole: %v after %s, want a timeout (no RST)", err, time.Since(start))
	}
	if err := b.Heal(); err != nil {
		t.Fatal(err)
	}
	if err := dial(2 * time.Second); err != nil {
		t.Fatalf("a -> b after heal: %v", err)
	}

	cmd := b.CommandContext(ctx, "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if err := await.Until(ctx, "sleep to be listed in node b", 5*time.Second, func() error {
		if p, _ := b.Pids(); !slices.Contains(p, cmd.Process.Pid) {
			return fmt.Errorf("b's processes are %v", p)
		}
		return nil
	}, await.Every(10*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if p, _ := a.Pids(); len(p) != 0 {
		t.Fatalf("node a has processes %v", p)
	}
	if err := b.KillAll(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != -1 {
			t.Fatalf("sleep ended with %v, want killed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("sleep survived KillAll")
	}

	if err := lab.Teardown(); err != nil {
		t.Fatal(err)
	}
	if err := lab.Teardown(); err != nil {
		t.Fatal(err)
	}
	requireGone(t, lab.ID, nil)
}

// TestSweepRemovesOnlyStale: a lab whose owner died is removed, nodes and all, by the
// next lab; a live lab and a namespace that is not a lab's stay.
func TestSweepRemovesOnlyStale(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	live := hosts.NewWith(t, hosts.LabOptions{NetworkOnly: true})
	if _, err := live.AddNode(ctx, "x", netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	stale, err := hosts.NewLabWith(ctx, hosts.LabOptions{NetworkOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stale.Teardown() })
	if _, err := stale.AddNode(ctx, "y", netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	// Its owner is now a process that has exited.
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hosts.DefaultRunDir, stale.ID, "owner"), fmt.Appendf(nil, "%d 1\n", c.Process.Pid), 0o644); err != nil {
		t.Fatal(err)
	}
	unrelated := fmt.Sprintf("hahx-test-%d", os.Getpid())
	if err := netlab.IP(ctx, "netns", "add", unrelated); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netlab.DeleteNetNS(unrelated) })

	hosts.NewWith(t, hosts.LabOptions{NetworkOnly: true})
	requireGone(t, stale.ID, nil)
	if !netlab.Exists(unrelated) {
		t.Errorf("the sweep removed %s, which is no lab's", unrelated)
	}
	if err := live.Healthy(); err != nil {
		t.Errorf("the sweep broke a live lab: %v", err)
	}
}
