package packaging

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// flag is one flag of a role, from `haagent --role=ROLE --help`.
type flag struct {
	Name string
	// Default is pflag's "(default ...)" as an environment value; HasDefault is false
	// for flags whose help says what the default depends on instead.
	Default    string
	HasDefault bool
}

var roles = []string{"lb", "master", "minion"}

// pflag prints "  -h, --name type   usage (default x)"; bools print "--name[=true|false]".
var flagLineRE = regexp.MustCompile(`^\s+(?:-\w, )?--([a-z0-9-]+)(\[=[^\]]*\])?(?: \S+)?\s+(.*)$`)
var defaultRE = regexp.MustCompile(`\(default (.*)\)$`)

// roleFlags returns every role's flags, leaving out roles this build does not have yet.
func roleFlags(t *testing.T) map[string][]flag {
	t.Helper()
	bin := haagentBin(t)
	all := map[string][]flag{}
	for _, role := range roles {
		cmd := exec.Command(bin, "--role="+role, "--help")
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			if strings.Contains(stderr, "not available") {
				t.Logf("role %s is not in this build yet: %s", role, strings.TrimSpace(stderr))
				continue
			}
			t.Fatalf("haagent --role=%s --help: %v\n%s", role, err, stderr)
		}
		for _, line := range strings.Split(string(out), "\n") {
			m := flagLineRE.FindStringSubmatch(line)
			if m == nil || m[1] == "help" {
				continue
			}
			f := flag{Name: m[1]}
			if d := defaultRE.FindStringSubmatch(m[3]); d != nil {
				f.HasDefault = true
				f.Default = d[1]
				if u, err := strconv.Unquote(f.Default); err == nil {
					f.Default = u
				}
				f.Default = strings.TrimSuffix(strings.TrimPrefix(f.Default, "["), "]") // slices: [a,b]
			}
			all[role] = append(all[role], f)
		}
		if len(all[role]) == 0 {
			t.Fatalf("no flags parsed from haagent --role=%s --help:\n%s", role, out)
		}
	}
	return all
}

func envName(flag string) string {
	return "HAAGENT_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// assignments finds every HAAGENT_X=value in text, commented out or not.
var assignmentRE = regexp.MustCompile(`(?m)^\s*#?\s*(HAAGENT_[A-Z0-9_]+)=(.*)$`)

// anyAssignmentRE also finds HAAGENT_X= inside shell lines (echo "HAAGENT_X=...").
var anyAssignmentRE = regexp.MustCompile(`(HAAGENT_[A-Z0-9_]+)=`)

// TestSysconfigListsEveryFlag checks that /etc/sysconfig/haagent's template names every
// flag of every role as its HAAGENT_ variable, with the binary's default, and nothing
// that is not a flag.
func TestSysconfigListsEveryFlag(t *testing.T) {
	flags := roleFlags(t)
	text := mustRead(t, filepath.Join(repoRoot, "packaging", "sysconfig-haagent"))
	values := map[string][]string{}
	for _, m := range assignmentRE.FindAllStringSubmatch(text, -1) {
		values[m[1]] = append(values[m[1]], strings.TrimSpace(m[2]))
	}
	known := map[string]bool{}
	for _, role := range roles {
		for _, f := range flags[role] {
			env := envName(f.Name)
			known[env] = true
			vs, ok := values[env]
			if !ok {
				t.Errorf("packaging/sysconfig-haagent lacks %s (--%s of the %s role)", env, f.Name, role)
				continue
			}
			// --role's "default" is the role asked for.
			if f.HasDefault && f.Name != "role" && !slices.Contains(vs, f.Default) {
				t.Errorf("packaging/sysconfig-haagent: %s=%v, but the %s role's default is %q", env, vs, role, f.Default)
			}
		}
	}
	for env := range values {
		if known[env] {
			continue
		}
		if len(flags) == len(roles) {
			t.Errorf("packaging/sysconfig-haagent names %s, which no role has as a flag", env)
		} else {
			t.Logf("packaging/sysconfig-haagent names %s, which no role in this build has as a flag (yet)", env)
		}
	}
	// systemd's EnvironmentFile takes KEY=VALUE lines and comments; nothing else.
	for i, line := range strings.Split(text, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") && !regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`).MatchString(line) {
			t.Errorf("packaging/sysconfig-haagent:%d is neither a comment nor KEY=VALUE: %q", i+1, line)
		}
	}
}

// TestCloudInitExamples checks every user-data example with cloud-init's own schema, and
// that the variables it writes are flags of the role it sets up.
func TestCloudInitExamples(t *testing.T) {
	if _, err := exec.LookPath("cloud-init"); err != nil {
		t.Fatal("cloud-init is missing: run scripts/deps.sh (make test does)")
	}
	// The schema check must be able to fail: a broken document is refused.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	writeFile(t, bad, "#cloud-config\nruncmd: 5\nwrite_files:\n  - path: /x\n    defer: maybe\n")
	if _, err := runErr(nil, "", "cloud-init", "schema", "--config-file", bad); err == nil {
		t.Fatal("cloud-init schema accepted a broken document; the check proves nothing")
	}

	flags := roleFlags(t)
	files, _ := filepath.Glob(filepath.Join(repoRoot, "packaging", "cloud-init", "*.yaml"))
	var names []string
	for _, f := range files {
		names = append(names, strings.TrimSuffix(filepath.Base(f), ".yaml"))
	}
	if !slices.Equal(names, roles) {
		t.Errorf("packaging/cloud-init has %v, want one example per role %v", names, roles)
	}
	for _, f := range files {
		role := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(role, func(t *testing.T) {
			out, err := runErr(nil, "", "cloud-init", "schema", "--config-file", f)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(strings.TrimSpace(out))
			text := mustRead(t, f)
			for _, want := range []string{"HAAGENT_ROLE=" + role + "\n", "- haagent\n", "[systemctl, enable, --now, haagent.service]", "path: /etc/sysconfig/haagent"} {
				if !strings.Contains(text, want) {
					t.Errorf("%s lacks %q", filepath.Base(f), want)
				}
			}
			rf, ok := flags[role]
			if !ok {
				t.Logf("role %s is not in this build: its variables are not checked", role)
				return
			}
			for _, m := range anyAssignmentRE.FindAllStringSubmatch(text, -1) {
				if !slices.ContainsFunc(rf, func(fl flag) bool { return envName(fl.Name) == m[1] }) {
					t.Errorf("%s sets %s, which is not a flag of the %s role", filepath.Base(f), m[1], role)
				}
			}
			// Nothing instance-specific may be hard-coded that the instance knows itself.
			if !strings.Contains(text, "hostname -s") {
				t.Errorf("%s does not take the node's name from the instance (hostname -s)", filepath.Base(f))
			}
		})
	}
}
