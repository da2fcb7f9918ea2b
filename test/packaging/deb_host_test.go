package packaging

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/hosts"
)

// TestDebInHost installs the deb into a test host with a real systemd: the install
// starts nothing; a single-member master enabled by hand becomes active (ready through
// sd_notify); an upgrade rolls it onto the new binary in place (package roll: the same
// PID, no restart by systemd, ready again) and does not touch the edited config;
// removal stops and disables it and keeps its data.
func TestDebInHost(t *testing.T) {
	requireRoot(t)
	p := getPackages(t)
	lab := hosts.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	hs, err := lab.Boot(ctx, "pkg")
	if err != nil {
		t.Fatal(err)
	}
	h := hs[0]
	sh := func(script string) string {
		t.Helper()
		out, err := h.Shell(ctx, script)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	// A command whose non-zero exit is an answer, not a failure (systemctl is-active ...).
	answer := func(script string) string {
		out, _ := h.Shell(ctx, script)
		return strings.TrimSpace(out)
	}
	show := func(prop string) string { return sh("systemctl show -P " + prop + " haagent.service") }
	for _, b := range []build{p.Old, p.New} {
		if err := h.CopyIn(b.DEB, "/var/tmp/"+filepath.Base(b.DEB)); err != nil {
			t.Fatal(err)
		}
	}

	// Install: the unit is known to systemd, but neither enabled nor started.
	t.Log(sh("dpkg -i /var/tmp/" + filepath.Base(p.Old.DEB)))
	if got := answer("systemctl is-enabled haagent.service"); got != "disabled" {
		t.Errorf("after install: is-enabled %q, want disabled", got)
	}
	if got := answer("systemctl is-active haagent.service"); got != "inactive" {
		t.Errorf("after install: is-active %q, want inactive", got)
	}
	if got := show("LoadState") + " " + show("NeedDaemonReload"); got != "loaded no" {
		t.Errorf("after install: LoadState NeedDaemonReload = %q, want the unit loaded and systemd reloaded", got)
	}
	if v := binVersion(t, sh("haagent version")); v != p.Old.Version {
		t.Errorf("haagent version %s, package %s", v, p.Old.Version)
	}
	if v := sh("dpkg-query -W -f '${Version}' haagent"); v != p.Old.Version+"-"+p.Old.Release {
		t.Errorf("dpkg-query version %s", v)
	}
	if out, err := h.Exec(ctx, "systemd-analyze", "verify", "/usr/lib/systemd/system/haagent.service"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify: %q %v", out, err)
	}
	sec := answer("systemd-analyze security --no-pager haagent.service")
	t.Logf("systemd-analyze security haagent.service:\n%s", sec)
	if m := regexp.MustCompile(`Overall exposure level for haagent.service: ([0-9.]+) (\S+)`).FindStringSubmatch(sec); m == nil {
		t.Errorf("no exposure level in systemd-analyze security output")
	} else {
		t.Logf("exposure %s %s", m[1], m[2])
	}

	// A role, written the way an operator would: appended to the template. With the
	// default HAAGENT_SYSTEMD=auto the master also renders and starts the kube and
	// flannel units, which are ordered after haagent.service: it must send READY=1
	// before it waits for them, or this start deadlocks until TimeoutStartSec. Their
	// binaries are not in this host, so those units fail; that is not this test's matter.
	cfg := "HAAGENT_ROLE=master\nHAAGENT_DATA_DIR=/var/lib/haagent/etcd\nHAAGENT_STATUS_ADDRESS=127.0.0.1:9110\n"
	sh("printf '" + cfg + "' >> /etc/sysconfig/haagent")
	edited := sh("cat /etc/sysconfig/haagent")

	// enable --now returns once the start job is done: for Type=notify, after READY=1.
	start := time.Now()
	startCtx, cancelStart := context.WithTimeout(ctx, 90*time.Second)
	out, err := h.Exec(startCtx, "systemctl", "enable", "--now", "haagent.service")
	cancelStart()
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, answer("systemctl status --no-pager haagent"), answer("journalctl -u haagent --no-pager -n 60"))
	}
	t.Logf("systemctl enable --now took %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	if got := answer("systemctl is-active haagent.service"); got != "active" {
		t.Fatalf("is-active %q after enable --now\n%s", got, answer("journalctl -u haagent --no-pager -n 50"))
	}
	if got := show("Type") + " " + show("SubState"); got != "notify running" {
		t.Errorf("Type SubState %q", got)
	}
	ready := answer("curl -fsS http://127.0.0.1:9110/readyz")
	t.Logf("/readyz: %s", ready)
	if _, err := h.Exec(ctx, "curl", "-fsS", "http://127.0.0.1:9110/readyz"); err != nil {
		t.Errorf("/readyz: %v", err)
	}
	pid := show("MainPID")
	if pid == "0" || pid == "" {
		t.Fatalf("MainPID %q", pid)
	}

	// Upgrade: the agent rolls itself onto the new binary, an exec in place (the same
	// PID, no restart by systemd), the edited config is untouched, and systemd has read
	// the (new) unit.
	t.Log(sh("dpkg -i /var/tmp/" + filepath.Base(p.New.DEB)))
	rolled := time.Now()
	if err := await.Until(ctx, "the master to roll onto "+p.New.Version, 3*time.Minute, func() error {
		var st struct {
			Roll struct {
				Running struct{ Version string } `json:"running"`
				State   string                   `json:"state"`
			} `json:"roll"`
		}
		out := answer("haagent status -o json --status-address=127.0.0.1:9110")
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return fmt.Errorf("status: %v: %q", err, out)
		}
		if st.Roll.Running.Version != p.New.Version || st.Roll.State != "idle" {
			return fmt.Errorf("runs %s: %s", st.Roll.Running.Version, st.Roll.State)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, answer("journalctl -u haagent --no-pager -n 40"))
	}
	t.Logf("rolled onto %s in %v", p.New.Version, time.Since(rolled).Round(100*time.Millisecond))
	if got := show("MainPID"); got != pid {
		t.Errorf("MainPID %s -> %s: the upgrade restarted haagent", pid, got)
	}
	if got := show("NRestarts"); got != "0" {
		t.Errorf("NRestarts %s", got)
	}
	if got := answer("systemctl is-active haagent.service"); got != "active" {
		t.Errorf("is-active %q after upgrade", got)
	}
	if got := show("NeedDaemonReload"); got != "no" {
		t.Errorf("NeedDaemonReload %q after upgrade", got)
	}
	if got := sh("cat /etc/sysconfig/haagent"); got != edited {
		t.Errorf("the config changed on upgrade:\n%s", got)
	}
	if v := binVersion(t, sh("haagent version")); v != p.New.Version {
		t.Errorf("haagent version %s after upgrade, want %s", v, p.New.Version)
	}
	if exe := sh("readlink /proc/" + pid + "/exe"); exe != "/usr/bin/haagent (deleted)" {
		t.Logf("the running agent's binary: %s", exe)
	}
	if _, err := h.Exec(ctx, "curl", "-fsS", "http://127.0.0.1:9110/readyz"); err != nil {
		t.Errorf("/readyz after upgrade: %v", err)
	}

	// Remove: stopped (cleanly: SIGTERM, exit 0) and disabled; config and data kept.
	t.Log(sh("dpkg -r haagent"))
	if got := answer("systemctl is-active haagent.service"); got != "inactive" {
		t.Errorf("is-active %q after dpkg -r, want inactive", got)
	}
	if got := answer("ls /etc/systemd/system/multi-user.target.wants/"); strings.Contains(got, "haagent") {
		t.Errorf("still enabled after dpkg -r: %s", got)
	}
	if answer("ps -C haagent -o pid=") != "" {
		t.Errorf("haagent still runs after dpkg -r")
	}
	if log := answer("journalctl -u haagent --no-pager -o cat"); strings.Contains(log, "Failed with result") || strings.Contains(log, "status=1/FAILURE") {
		t.Errorf("haagent did not stop cleanly:\n%s", log)
	}
	for _, kept := range []string{"/var/lib/haagent/etcd/member", "/etc/sysconfig/haagent"} {
		if _, err := h.Exec(ctx, "test", "-e", kept); err != nil {
			t.Errorf("%s is gone after dpkg -r", kept)
		}
	}
	if _, err := h.Exec(ctx, "test", "-e", "/usr/bin/haagent"); err == nil {
		t.Error("/usr/bin/haagent is still there after dpkg -r")
	}
	// Purge removes the config, never the data.
	t.Log(sh("dpkg -P haagent"))
	if _, err := h.Exec(ctx, "test", "-e", "/etc/sysconfig/haagent"); err == nil {
		t.Error("/etc/sysconfig/haagent is still there after dpkg -P")
	}
	if _, err := h.Exec(ctx, "test", "-d", "/var/lib/haagent/etcd/member"); err != nil {
		t.Errorf("the etcd data is gone after dpkg -P: %v", err)
	}
}
