package hosts_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/hosts"
	"github.com/haagent/haagent/test/framework/rootonly"
)

// createLabEnv, when set, makes TestPersistentLabCreator create the persistent lab it
// names; TestPersistentLab runs it in a process of its own. leftoverEnv names the file
// where the creator writes the ID of the test lab that it leaves behind.
const (
	createLabEnv = "HAH_TEST_CREATE_LAB"
	leftoverEnv  = "HAH_TEST_LEFTOVER_ID_FILE"
)

// TestPersistentLab has another process create a persistent lab and exit, then reopens
// the lab by its ID: the hosts outlive their creator and a test lab's sweep (which does
// remove the test lab that the creator left behind), Exec works,
// a host that the other process started is killed and booted again on its disk, a host
// that dies behind the lab's back makes it unhealthy, and Teardown from a reopened lab
// leaves nothing behind.
func TestPersistentLab(t *testing.T) {
	rootonly.Require(t, "a persistent lab")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	b := make([]byte, 3)
	rand.Read(b)
	id := hosts.PersistentPrefix + "t" + hex.EncodeToString(b)
	t.Cleanup(func() {
		if err := hosts.Remove(context.Background(), id); err != nil {
			t.Errorf("remove lab %s: %v", id, err)
		}
	})

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPersistentLabCreator$", "-test.v")
	leftoverFile := filepath.Join(t.TempDir(), "leftover")
	cmd.Env = append(os.Environ(), createLabEnv+"="+id, leftoverEnv+"="+leftoverFile)
	out, err := cmd.CombinedOutput()
	t.Logf("creator process:\n%s", out)
	if err != nil {
		t.Fatalf("creator process: %v", err)
	}

	// Making a test lab sweeps the leftovers of dead processes; a persistent lab is not one.
	leftover, err := os.ReadFile(leftoverFile)
	if err != nil {
		t.Fatal(err)
	}
	hosts.New(t)
	requireGone(t, string(leftover), nil)

	lab, err := hosts.Open(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Healthy(); err != nil {
		t.Fatalf("reopened lab: %v", err)
	}
	a1, a2 := lab.Host("a1"), lab.Host("a2")
	if a1 == nil || a2 == nil || len(lab.Hosts()) != 2 {
		t.Fatalf("reopened lab has hosts %v, want a1 and a2", lab.Hosts())
	}
	if ns := lab.Nodes(); len(ns) != 1 || ns[0].Name != "n1" || ns[0].IP.String() != "10.79.0.31" {
		t.Errorf("reopened lab has nodes %v, want n1 at 10.79.0.31", ns)
	}
	if !lab.Persistent || lab.Subnet.String() != "10.79.0.0/24" || a1.IP.String() != "10.79.0.21" || a2.IP.String() != "10.79.0.22" || !a1.Containers || a2.Containers {
		t.Errorf("reopened lab: persistent %v, subnet %s, a1 %s containers %v, a2 %s containers %v", lab.Persistent, lab.Subnet, a1.IP, a1.Containers, a2.IP, a2.Containers)
	}
	for _, h := range []*hosts.Host{a1, a2} {
		if out, err := h.Exec(ctx, "cat", "/var/tmp/made-by"); err != nil || strings.TrimSpace(out) != "creator" {
			t.Errorf("%s: marker %q, %v", h.Name, out, err)
		}
	}
	if _, err := a1.Exec(ctx, "ping", "-c", "1", "-W", "2", "a2"); err != nil {
		t.Errorf("ping a1 -> a2: %v", err)
	}

	// Kill and Start a host whose nspawn this process did not start.
	old := a2.Leader()
	if err := a2.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(old)); err == nil {
		t.Errorf("PID 1 %d of the killed host still exists", old)
	}
	if a2.Running() {
		t.Error("a killed host says it runs")
	}
	if err := lab.Healthy(); err != nil {
		t.Errorf("a lab with a killed host is healthy, got: %v", err)
	}
	start := time.Now()
	if err := a2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a2.WaitRunning(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed host of a reopened lab rebooted to running in %v", time.Since(start).Round(time.Millisecond))
	if out, err := a2.Exec(ctx, "cat", "/var/tmp/made-by"); err != nil || strings.TrimSpace(out) != "creator" {
		t.Errorf("a2's disk after the reboot: %q, %v", out, err)
	}

	// A host that dies behind the lab's back is reported, here and in a later Open.
	if err := syscall.Kill(a1.Leader(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := await.Until(ctx, "Healthy to report the death of a1", time.Minute, func() error {
		if err := lab.Healthy(); err == nil || !strings.Contains(err.Error(), "host a1") {
			return errors.New("Healthy does not report a1 dead")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	again, err := hosts.Open(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Healthy(); err == nil || !strings.Contains(err.Error(), "host a1") {
		t.Errorf("reopened after a1 died: Healthy = %v, want a1 reported", err)
	}
	if !again.Host("a2").Running() {
		t.Error("reopened again: a2, started by this process, does not run")
	}

	leaders := []int{again.Host("a2").Leader(), old}
	if err := again.Teardown(); err != nil {
		t.Fatal(err)
	}
	requireGone(t, id, leaders)
	if _, err := hosts.Open(ctx, id); err == nil {
		t.Error("a torn-down lab opens")
	}
}

// TestPersistentLabCreator is TestPersistentLab's other process: it creates the lab,
// boots a containers host and a plain one with explicit addresses, and exits.
func TestPersistentLabCreator(t *testing.T) {
	id := os.Getenv(createLabEnv)
	if id == "" {
		t.Skip("run by TestPersistentLab, in a process of its own")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lab, err := hosts.Create(ctx, id, hosts.LabOptions{Subnet: netip.MustParsePrefix("10.79.0.0/24"), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hosts.Create(ctx, id, hosts.LabOptions{}); err == nil {
		t.Error("a second Create with the same ID succeeded")
	}
	start := time.Now()
	hs, err := lab.BootWith(ctx,
		hosts.HostSpec{Name: "a1", HostOptions: hosts.HostOptions{IP: netip.MustParseAddr("10.79.0.21"), Containers: true}},
		hosts.HostSpec{Name: "a2", HostOptions: hosts.HostOptions{IP: netip.MustParseAddr("10.79.0.22")}},
	)
	if err != nil {
		t.Fatal(errors.Join(err, lab.Teardown()))
	}
	t.Logf("persistent lab %s booted in %v", id, time.Since(start).Round(time.Millisecond))
	if _, err := lab.AddNode(ctx, "n1", netip.MustParseAddr("10.79.0.31")); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if err := h.WriteFile("/var/tmp/made-by", []byte("creator\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A test lab with a running containers host that this process never tears down,
	// as if it were killed: the next test lab removes it.
	left, err := hosts.NewLabWith(ctx, hosts.LabOptions{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := left.BootWith(ctx, hosts.HostSpec{Name: "gone", HostOptions: hosts.HostOptions{Containers: true}}); err != nil {
		t.Fatal(errors.Join(err, left.Teardown()))
	}
	if _, err := left.AddNode(ctx, "gonenode", netip.Addr{}); err != nil {
		t.Fatal(errors.Join(err, left.Teardown()))
	}
	if err := os.WriteFile(os.Getenv(leftoverEnv), []byte(left.ID), 0o644); err != nil {
		t.Fatal(errors.Join(err, left.Teardown()))
	}
}
