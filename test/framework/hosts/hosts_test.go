package hosts_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/hosts"
)

// TestTwoHosts boots two hosts in parallel, checks that they reach each other by ICMP and
// TCP, that blackhole and heal work, that a killed host comes back, and that teardown
// leaves nothing behind.
func TestTwoHosts(t *testing.T) {
	lab := hosts.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	start := time.Now()
	hs, err := lab.Boot(ctx, "h1", "h2")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("2 hosts booted in parallel to running in %v", time.Since(start).Round(time.Millisecond))
	h1, h2 := hs[0], hs[1]

	for _, h := range hs {
		out, err := h.Exec(ctx, "hostname")
		if err != nil || strings.TrimSpace(out) != h.Name {
			t.Errorf("%s: hostname = %q, %v", h.Name, out, err)
		}
		if out, _ := h.Exec(ctx, "systemctl", "is-system-running"); strings.TrimSpace(out) == "degraded" {
			failed, _ := h.Exec(ctx, "systemctl", "--failed", "--no-legend")
			t.Logf("%s is degraded: %s", h.Name, failed)
		}
	}
	id1, _ := h1.ReadFile("/etc/machine-id")
	id2, _ := h2.ReadFile("/etc/machine-id")
	if len(id1) == 0 || string(id1) == string(id2) {
		t.Errorf("machine-ids not unique: %q %q", id1, id2)
	}

	// ICMP by name (each host's /etc/hosts names every host), and TCP with netcat.
	if out, err := h1.Exec(ctx, "ping", "-c", "1", "-W", "2", "h2"); err != nil {
		t.Fatalf("ping h1 -> h2: %v", err)
	} else if !strings.Contains(out, h2.IP.String()) {
		t.Errorf("ping h2 did not resolve to %s: %s", h2.IP, out)
	}
	if _, err := h2.Exec(ctx, "systemd-run", "--unit=hah-listen", "--", "/bin/sh", "-c", "nc -l 7777 > /var/tmp/got"); err != nil {
		t.Fatal(err)
	}
	sent := "hello from h1"
	if err := await.Until(ctx, "h1 to connect to h2:7777", time.Minute, func() error {
		_, err := h1.Shell(ctx, "echo '"+sent+"' | nc -N -w 2 "+h2.IP.String()+" 7777")
		return err
	}); err != nil {
		t.Fatalf("tcp h1 -> h2:7777: %v", err)
	}
	if err := await.Until(ctx, "h2 to write the line it got", time.Minute, func() error {
		b, err := h2.ReadFile("/var/tmp/got")
		if err == nil && strings.TrimSpace(string(b)) != sent {
			err = fmt.Errorf("got %q", b)
		}
		return err
	}); err != nil {
		t.Errorf("h2 did not receive the line: %v", err)
	}

	// CopyIn onto the host's disk, and a refusal for its tmpfs.
	src := filepath.Join(t.TempDir(), "tool")
	os.WriteFile(src, []byte("#!/bin/sh\necho copied-in\n"), 0o755)
	if err := h1.CopyIn(src, "/usr/local/bin/tool"); err != nil {
		t.Fatal(err)
	}
	if out, err := h1.Exec(ctx, "tool"); err != nil || strings.TrimSpace(out) != "copied-in" {
		t.Errorf("copied tool: %q, %v", out, err)
	}
	if err := h1.CopyIn(src, "/tmp/tool"); err == nil {
		t.Error("CopyIn to /tmp (a tmpfs inside the host) was not refused")
	}

	// Blackhole: silence. Heal: back.
	if err := h2.Blackhole(); err != nil {
		t.Fatal(err)
	}
	if _, err := h1.Exec(ctx, "ping", "-c", "1", "-W", "1", h2.IP.String()); err == nil {
		t.Error("ping reached a blackholed host")
	}
	if err := h2.Heal(); err != nil {
		t.Fatal(err)
	}
	if err := await.Until(ctx, "a ping from h1 to the healed h2", time.Minute, func() error { _, err := h1.Exec(ctx, "ping", "-c", "1", "-W", "1", h2.IP.String()); return err }, await.Every(100*time.Millisecond)); err != nil {
		t.Errorf("ping after heal: %v", err)
	}

	// Kill crashes the whole host; Start boots it again on the same disk.
	leader := h2.Leader()
	if err := h2.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("kill", "-0", strconv.Itoa(leader)).Run(); err == nil {
		t.Errorf("PID 1 %d of the killed host still exists", leader)
	}
	if _, err := h2.Exec(ctx, "true"); err == nil {
		t.Error("Exec in a killed host succeeded")
	}
	start = time.Now()
	if err := h2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h2.WaitRunning(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed host rebooted to running in %v", time.Since(start).Round(time.Millisecond))
	if b, err := h2.ReadFile("/var/tmp/got"); err != nil || strings.TrimSpace(string(b)) != sent {
		t.Errorf("disk did not survive the crash: %q, %v", b, err)
	}
	if err := await.Until(ctx, "a ping from h1 to the rebooted h2", time.Minute, func() error { _, err := h1.Exec(ctx, "ping", "-c", "1", "-W", "1", "h2"); return err }, await.Every(100*time.Millisecond)); err != nil {
		t.Errorf("ping the rebooted host: %v", err)
	}

	// Teardown leaves nothing behind.
	leaders := []int{h1.Leader(), h2.Leader()}
	if err := lab.Teardown(); err != nil {
		t.Fatal(err)
	}
	requireGone(t, lab.ID, leaders)
}

// requireGone checks that nothing named after the lab is left on the machine.
func requireGone(t *testing.T, id string, pids []int) {
	t.Helper()
	var left []string
	globs := []string{
		"/run/netns/" + id + "*",
		"/sys/fs/cgroup/*/" + id + "*",
		"/sys/fs/cgroup/" + id + "*",
		"/run/systemd/nspawn/propagate/" + id + "*",
		filepath.Join(hosts.DefaultRunDir, id),
	}
	for _, g := range globs {
		m, _ := filepath.Glob(g)
		left = append(left, m...)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, id) {
			left = append(left, "mount: "+line)
		}
	}
	for _, p := range pids {
		if _, err := os.Stat("/proc/" + strconv.Itoa(p)); err == nil {
			left = append(left, "process "+strconv.Itoa(p))
		}
	}
	out, _ := exec.Command("pgrep", "-af", "systemd-nspawn.*"+id).Output()
	if s := strings.TrimSpace(string(out)); s != "" {
		left = append(left, "nspawn: "+s)
	}
	if len(left) > 0 {
		t.Errorf("teardown left behind:\n%s", strings.Join(left, "\n"))
	}
}

// TestNames checks that bad or duplicate host names are refused before anything is made.
func TestNames(t *testing.T) {
	lab := hosts.New(t)
	for _, bad := range []string{"", "H1", "1h", "name-too-long-x", "a_b"} {
		if _, err := lab.Add(bad); err == nil {
			t.Errorf("Add(%q) accepted", bad)
		}
	}
	if _, err := lab.Add("ok"); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Add("ok"); err == nil {
		t.Error("a duplicate name was accepted")
	}
}
