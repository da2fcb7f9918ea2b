package netns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func rootLinks(t *testing.T) []string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	return names
}

func TestHostsTalkAndFaults(t *testing.T) {
	n := NewT(t)
	hs, err := n.AddHosts("a=10.77.0.31", "b=10.77.0.32")
	if err != nil {
		t.Fatal(err)
	}
	a, b := hs[0], hs[1]
	// Nothing lands in the machine's own namespace (other tests may add links of
	// their own there, so look for ours only).
	for _, name := range rootLinks(t) {
		if name == "br0" || name == a.Link || name == b.Link {
			t.Fatalf("link %s is in the machine's own namespace", name)
		}
	}

	l, err := b.Listen("tcp", b.IP+":7000")
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
		c, err := a.DialContext(ctx, "tcp", b.IP+":7000")
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

	// A process started in b is in b's namespace and dies with Kill.
	cmd := b.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	waitFor(t, func() bool { p, _ := b.Pids(); return slices.Contains(p, cmd.Process.Pid) })
	if p, _ := a.Pids(); len(p) != 0 {
		t.Fatalf("host a has processes %v", p)
	}
	if err := b.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != -1 {
			t.Fatalf("sleep ended with %v, want killed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("sleep survived Kill")
	}

	// Close removes every namespace of the net, and is safe twice.
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{a.Name, b.Name, n.Switch} {
		if _, err := os.Stat(filepath.Join(nsDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", name, err)
		}
	}
}

func TestCleanupRemovesOnlyStale(t *testing.T) {
	SkipUnlessAble(t)
	live := NewT(t)
	if _, err := live.AddHost("x", "10.77.0.33"); err != nil {
		t.Fatal(err)
	}
	// A dead owner: the pid of a process that has exited.
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("%s%d-1-sw", Prefix, c.Process.Pid)
	if err := ip("netns", "add", stale); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ip("netns", "del", stale) })
	unrelated := "hatx-test-" + fmt.Sprint(os.Getpid())
	if err := ip("netns", "add", unrelated); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ip("netns", "del", unrelated) })

	if err := Cleanup(); err != nil {
		t.Fatal(err)
	}
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(nsDir, name))
		return err == nil
	}
	if exists(stale) {
		t.Errorf("stale %s survived Cleanup", stale)
	}
	if !exists(unrelated) {
		t.Errorf("Cleanup removed %s, which is not ours", unrelated)
	}
	for _, h := range live.Hosts() {
		if !exists(h.Name) {
			t.Errorf("Cleanup removed live %s", h.Name)
		}
	}
	if !exists(live.Switch) {
		t.Errorf("Cleanup removed live %s", live.Switch)
	}
}

func TestRunOf(t *testing.T) {
	for _, tc := range []struct {
		name, run string
		ok        bool
	}{
		{"hat-123-4-sw", "hat-123-4", true},
		{"hat-123-4-m1", "hat-123-4", true},
		{"hat-123-sw", "", false},
		{"hat-x-4-sw", "", false},
		{"other-123-4-sw", "", false},
	} {
		run, ok := runOf(tc.name)
		if run != tc.run || ok != tc.ok {
			t.Errorf("runOf(%q) = %q, %v; want %q, %v", tc.name, run, ok, tc.run, tc.ok)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
