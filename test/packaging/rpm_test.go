package packaging

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestRPMMetadata checks what `rpm -qp` says about the rpm: name, version, licence,
// requirements, the config file flags, the scriptlets (exactly packaging/scripts/rpm/*)
// and the signature.
func TestRPMMetadata(t *testing.T) {
	p := getPackages(t)
	for _, b := range []build{p.Old, p.New} {
		if got := filepath.Base(b.RPM); got != "haagent-"+b.Version+".x86_64.rpm" {
			t.Errorf("rpm file name %s", got)
		}
		q := rpmq(t, "-qp", "--qf", "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{LICENSE}", b.RPM)
		if want := "haagent|" + b.Version + "|" + b.Release + "|x86_64|Apache-2.0"; q != want {
			t.Errorf("rpm header %q, want %q", q, want)
		}
	}
	rpm := p.Old.RPM

	out := rpmq(t, "-qp", "--scripts", "--configfiles", "--requires", rpm)
	t.Logf("rpm -qp --scripts --configfiles --requires:\n%s", out)

	// Scriptlets: exactly ours, nothing added.
	scripts := map[string]string{}
	var cur string
	hdr := regexp.MustCompile(`^(\w+) scriptlet \(using (\S+)\):$`)
	for _, l := range strings.Split(rpmq(t, "-qp", "--scripts", rpm), "\n") {
		if m := hdr.FindStringSubmatch(l); m != nil {
			cur = m[1]
			if m[2] != "/bin/sh" {
				t.Errorf("%s scriptlet runs %s, want /bin/sh", cur, m[2])
			}
			continue
		}
		scripts[cur] += l + "\n"
	}
	want := map[string]string{"postinstall": "post.sh", "preuninstall": "preun.sh", "postuninstall": "postun.sh"}
	if got := slices.Sorted(maps.Keys(scripts)); !slices.Equal(got, slices.Sorted(maps.Keys(want))) {
		t.Errorf("scriptlets %v, want %v", got, slices.Sorted(maps.Keys(want)))
	}
	for name, file := range want {
		if strings.TrimSpace(scripts[name]) != strings.TrimSpace(mustRead(t, filepath.Join(repoRoot, "packaging/scripts/rpm", file))) {
			t.Errorf("%s scriptlet differs from packaging/scripts/rpm/%s:\n%s", name, file, scripts[name])
		}
	}

	if got := lines(rpmq(t, "-qp", "--configfiles", rpm)); !slices.Equal(got, []string{"/etc/sysconfig/haagent"}) {
		t.Errorf("config files %v, want only /etc/sysconfig/haagent", got)
	}
	reqs := lines(rpmq(t, "-qp", "--requires", rpm))
	for _, r := range reqs {
		if r != "/bin/sh" && !strings.HasPrefix(r, "rpmlib(") {
			t.Errorf("unexpected requirement %q (requires: %v)", r, reqs)
		}
	}
	if !slices.Contains(reqs, "/bin/sh") {
		t.Errorf("requires %v lacks /bin/sh, which the scriptlets need", reqs)
	}

	// File flags: the template is %config(noreplace), the licence and README %doc.
	flags := map[string]string{}
	for _, l := range lines(rpmq(t, "-qp", "--qf", `[%{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILENAMES}\n]`, rpm)) {
		f := strings.Fields(l)
		if len(f) == 2 { // no flags: "perms path"
			f = append([]string{""}, f...)
		}
		flags[f[2]] = f[0] + " " + f[1]
	}
	wantFlags := map[string]string{
		"/etc/sysconfig/haagent":                  "cn -rw-------",
		"/usr/bin/haagent":                        " -rwxr-xr-x",
		"/usr/lib/systemd/system/haagent.service": " -rw-r--r--",
		"/usr/share/doc/haagent/LICENSE":          "d -rw-r--r--",
		"/usr/share/doc/haagent/README.md":        "d -rw-r--r--",
		"/var/lib/haagent":                        " drwxr-xr-x",
		"/etc/kubernetes":                         " drwxr-xr-x",
	}
	// The man pages are %doc, as rpmbuild marks everything under /usr/share/man.
	for _, page := range manPages(t) {
		wantFlags[manDir+page] = "d -rw-r--r--"
	}
	// So is every page of docs/, which the README links to.
	docs, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		t.Fatalf("docs/*.md: %v %v", docs, err)
	}
	for _, d := range docs {
		wantFlags["/usr/share/doc/haagent/docs/"+filepath.Base(d)] = "d -rw-r--r--"
	}
	for path, want := range wantFlags {
		if flags[path] != want {
			t.Errorf("%s: flags and mode %q, want %q", path, flags[path], want)
		}
	}
	if len(flags) != len(wantFlags) {
		t.Errorf("rpm holds %d paths, want %d: %v", len(flags), len(wantFlags), flags)
	}

	// Signed, and the signature checks out against the key.
	home := t.TempDir()
	env := []string{"HOME=" + home} // Debian's rpm keeps its db in ~/.rpmdb: not the machine's
	if _, err := runErr(env, "", "rpm", "--import", p.PubKey); err != nil {
		t.Fatal(err)
	}
	k, err := runErr(env, "", "rpm", "-K", rpm)
	if err != nil || !strings.Contains(k, "digests signatures OK") {
		t.Errorf("rpm -K: %q %v", k, err)
	}
}

// TestRPMPayloadRelative lists the names in the rpm's cpio payload (rpm2cpio | cpio -t,
// nothing is unpacked): each must be relative, ./ and the path that the header names,
// as rpmbuild writes them. With absolute names (/usr/bin/haagent, as nfpm wrote them
// before v2.48.0: goreleaser/nfpm#1122) the usual `rpm2cpio haagent.rpm | cpio -idmv`
// run as root writes into the machine's /, and so does rpmlint's own cpio. rpm2cpio
// must also exit 0 (with nfpm's older rpm writer it exited 1 on every haagent rpm).
func TestRPMPayloadRelative(t *testing.T) {
	p := getPackages(t)
	for _, b := range []build{p.Old, p.New} {
		// An error still comes with the names that cpio listed: check those too.
		names, err := rpmPayloadNames(b.RPM)
		if err != nil {
			t.Error(err)
		}
		for _, n := range names {
			if strings.HasPrefix(n, "/") {
				t.Errorf("%s: payload name %q is absolute", filepath.Base(b.RPM), n)
			}
		}
		var want []string
		for _, f := range lines(rpmq(t, "-qp", "--qf", `[%{FILENAMES}\n]`, b.RPM)) {
			want = append(want, "."+f)
		}
		if !slices.Equal(slices.Sorted(slices.Values(names)), slices.Sorted(slices.Values(want))) {
			t.Errorf("%s: payload names %q, want %q (the header's paths with a leading .)", filepath.Base(b.RPM), names, want)
		}
	}
}

// rpmPayloadNames lists the names in an rpm's cpio payload: rpm2cpio piped into
// `cpio -t`, which only reads. On an error it still returns what cpio listed.
func rpmPayloadNames(rpm string) ([]string, error) {
	r2c := exec.Command("rpm2cpio", rpm)
	list := exec.Command("cpio", "-t", "--quiet")
	pipe, err := r2c.StdoutPipe()
	if err != nil {
		return nil, err
	}
	list.Stdin = pipe
	var out, r2cErr, listErr bytes.Buffer
	r2c.Stderr, list.Stdout, list.Stderr = &r2cErr, &out, &listErr
	if err := r2c.Start(); err != nil {
		return nil, fmt.Errorf("rpm2cpio %s: %v", rpm, err)
	}
	listRun := list.Run()
	r2cRun := r2c.Wait()
	names := lines(out.String())
	switch {
	case r2cRun != nil:
		return names, fmt.Errorf("rpm2cpio %s: %v\n%s", rpm, r2cRun, r2cErr.String())
	case listRun != nil:
		return names, fmt.Errorf("rpm2cpio %s | cpio -t: %v\n%s", rpm, listRun, listErr.String())
	case len(names) == 0:
		return nil, fmt.Errorf("rpm2cpio %s | cpio -t listed nothing", rpm)
	}
	return names, nil
}

// TestDebMetadata checks the deb's control data: version, conffiles and maintainer
// scripts (exactly packaging/scripts/deb/*).
func TestDebMetadata(t *testing.T) {
	p := getPackages(t)
	deb := p.Old.DEB
	if v := run(t, "dpkg-deb", "-f", deb, "Version"); strings.TrimSpace(v) != p.Old.Version+"-"+p.Old.Release {
		t.Errorf("deb Version %q, want %s-%s", v, p.Old.Version, p.Old.Release)
	}
	ctl := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, ctl)
	if got := lines(mustRead(t, filepath.Join(ctl, "conffiles"))); !slices.Equal(got, []string{"/etc/sysconfig/haagent"}) {
		t.Errorf("conffiles %v, want /etc/sysconfig/haagent", got)
	}
	for script, file := range map[string]string{"postinst": "postinst.sh", "prerm": "prerm.sh", "postrm": "postrm.sh"} {
		if mustRead(t, filepath.Join(ctl, script)) != mustRead(t, filepath.Join(repoRoot, "packaging/scripts/deb", file)) {
			t.Errorf("deb %s differs from packaging/scripts/deb/%s", script, file)
		}
	}
	for _, absent := range []string{"preinst"} {
		if _, err := os.Stat(filepath.Join(ctl, absent)); err == nil {
			t.Errorf("deb has a %s", absent)
		}
	}
}

// rpmlintWarnings are the warnings that rpmlint still gives, each explained in
// packaging/README.md. A new one fails the test: fix it, or explain it there and here.
var rpmlintWarnings = []string{
	"invalid-license", // Debian's rpmlint ships an empty list of valid licences
	// Given although /usr/share/man/man1/haagent.1.gz is there (TestManPages): rpmlint
	// 2.4.0 records each page's section ("1") where it means the page's name.
	"no-manual-page-for-binary",
	"non-coherent-filename",                     // the file is haagent-VERSION.x86_64.rpm, without the release, by design
	"only-non-binary-in-usr-lib",                // the systemd unit lives in /usr/lib/systemd/system
	"position-independent-executable-suggested", // a static Go binary, built without -buildmode=pie
}

// TestRPMLint runs rpmlint, which must report no errors. The errors that are design
// choices (a static binary, a secret config file) are filtered, with the reason, in
// packaging/haagent.rpmlintrc.
func TestRPMLint(t *testing.T) {
	if _, err := exec.LookPath("rpmlint"); err != nil {
		t.Fatal("rpmlint is missing: run scripts/deps.sh (make test does)")
	}
	p := getPackages(t)
	// rpmlint unpacks the payload with a bare `cpio -id` in a temp dir. The payload's
	// names are relative (TestRPMPayloadRelative); should they ever be absolute again
	// (goreleaser/nfpm#1122, nfpm before v2.48.0), that cpio would write into /, so
	// when we are root rpmlint runs as nobody, who cannot write outside its dirs.
	dir, err := os.MkdirTemp("", "haagent-rpmlint-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	rpm := filepath.Join(dir, filepath.Base(p.Old.RPM))
	writeFile(t, rpm, mustRead(t, p.Old.RPM))
	writeFile(t, filepath.Join(dir, "haagent.rpmlintrc"), mustRead(t, filepath.Join(repoRoot, "packaging", "haagent.rpmlintrc")))
	home := filepath.Join(dir, "home")
	env := []string{"HOME=" + home, "TMPDIR=" + dir}
	// rpmlint checks the signature against the keys in ~/.rpmdb.
	if _, err := runErr(env, dir, "rpm", "--import", p.PubKey); err != nil {
		t.Fatal(err)
	}
	// Man pages are gzipped on Fedora, RHEL and openSUSE; Debian's rpmlint expects bz2
	// unless told otherwise, as Fedora's rpmlint config tells it.
	writeFile(t, filepath.Join(dir, "gz.toml"), "CompressExtension = \"gz\"\n")
	args := []string{"rpmlint", "-c", filepath.Join(dir, "gz.toml"), "-r", filepath.Join(dir, "haagent.rpmlintrc"), rpm}
	if os.Geteuid() == 0 {
		run(t, "chown", "-R", "65534:65534", dir)
		os.Chmod(dir, 0o755)
		args = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}, args...)
	}
	_, before := os.Stat("/usr/bin/haagent")
	out, err := runErr(env, dir, args[0], args[1:]...)
	t.Logf("rpmlint:\n%s", out)
	if _, after := os.Stat("/usr/bin/haagent"); before != nil && after == nil {
		os.Remove("/usr/bin/haagent")
		t.Fatal("rpmlint unpacked the rpm into the machine's /")
	}
	if err != nil {
		t.Errorf("rpmlint failed: %v", err)
	}
	if !regexp.MustCompile(`\b0 errors\b`).MatchString(out) {
		t.Errorf("rpmlint reports errors")
	}
	for _, m := range regexp.MustCompile(`(?m)^haagent\.x86_64: ([EW]): (\S+)`).FindAllStringSubmatch(out, -1) {
		if m[1] == "E" {
			t.Errorf("rpmlint error %s", m[2])
		} else if !slices.Contains(rpmlintWarnings, m[2]) {
			t.Errorf("new rpmlint warning %s: fix it, or explain it in packaging/README.md and rpmlintWarnings", m[2])
		}
	}
	if !strings.Contains(out, "1 packages") {
		t.Errorf("rpmlint checked no package")
	}
}

// entry is a path of a package with its mode string and size.
type entry struct{ perms, size string }

// TestContentsMatch checks that the rpm and the deb hold the same files with the same
// modes and bytes, by their listings (rpm -qpl, dpkg-deb -c) and by unpacking both
// (rpm2cpio, dpkg-deb -x).
func TestContentsMatch(t *testing.T) {
	p := getPackages(t)
	rpmEntries := map[string]entry{}
	for _, l := range lines(rpmq(t, "-qp", "--qf", `[%{FILEMODES:perms} %{FILESIZES} %{FILENAMES}\n]`, p.Old.RPM)) {
		f := strings.Fields(l)
		rpmEntries[f[2]] = entry{f[0], f[1]}
	}
	if got, want := slices.Sorted(maps.Keys(rpmEntries)), lines(rpmq(t, "-qpl", p.Old.RPM)); !slices.Equal(got, want) {
		t.Errorf("rpm --qf paths %v differ from rpm -qpl %v", got, want)
	}
	debEntries := map[string]entry{}
	for _, l := range lines(run(t, "dpkg-deb", "-c", p.Old.DEB)) {
		f := strings.Fields(l) // perms owner size date time path
		path := "/" + strings.TrimSuffix(strings.TrimPrefix(f[5], "./"), "/")
		debEntries[path] = entry{f[0], f[2]}
	}
	// The deb lists every parent dir; rpm only the dirs it owns. changelog.Debian.gz is
	// the deb's copy of the changelog that rpm keeps in its header.
	for path, e := range debEntries {
		if _, ok := rpmEntries[path]; !ok && !strings.HasPrefix(e.perms, "d") && path != "/usr/share/doc/haagent/changelog.Debian.gz" {
			t.Errorf("the deb has %s, the rpm does not", path)
		}
	}
	for path, re := range rpmEntries {
		de, ok := debEntries[path]
		switch {
		case !ok:
			t.Errorf("the rpm has %s, the deb does not", path)
		case re.perms != de.perms:
			t.Errorf("%s: rpm mode %s, deb mode %s", path, re.perms, de.perms)
		case !strings.HasPrefix(re.perms, "d") && re.size != de.size:
			t.Errorf("%s: rpm size %s, deb size %s", path, re.size, de.size)
		}
	}

	// Unpacked, byte for byte. The payload's names are relative (TestRPMPayloadRelative);
	// --no-absolute-filenames keeps this test out of / even if they were not.
	rpmDir, debDir := t.TempDir(), t.TempDir()
	cmd := exec.Command("sh", "-c", `rpm2cpio "$1" | cpio -idm --no-absolute-filenames --quiet`, "sh", p.Old.RPM)
	cmd.Dir = rpmDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rpm2cpio | cpio: %v\n%s", err, out)
	}
	run(t, "dpkg-deb", "-x", p.Old.DEB, debDir)
	for path, e := range rpmEntries {
		if strings.HasPrefix(e.perms, "d") {
			continue
		}
		a, err1 := os.ReadFile(filepath.Join(rpmDir, path))
		b, err2 := os.ReadFile(filepath.Join(debDir, path))
		if err1 != nil || err2 != nil || string(a) != string(b) {
			t.Errorf("%s differs between the unpacked rpm and deb (%v, %v)", path, err1, err2)
		}
	}
	if v := binVersion(t, run(t, filepath.Join(rpmDir, "usr/bin/haagent"), "version")); v != p.Old.Version {
		t.Errorf("the rpm's haagent says version %s, the package is %s", v, p.Old.Version)
	}
	if out, err := exec.Command("file", filepath.Join(debDir, "usr/bin/haagent")).Output(); err == nil && !strings.Contains(string(out), "statically linked") {
		t.Errorf("/usr/bin/haagent is not static: %s", out)
	}
}

// newRoot makes a scratch root for rpm --root with a static busybox as /bin/sh, so that
// the scriptlets run (chrooted) without anything of an rpm distro.
func newRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal("/bin/busybox (Debian package busybox-static) is missing: run scripts/deps.sh")
	}
	writeFile(t, filepath.Join(root, "bin", "sh"), string(busybox))
	os.Chmod(filepath.Join(root, "bin", "sh"), 0o755)
	mkDevNull(t, root)
	return root
}

// mkDevNull gives a scratch root the /dev/null that every chroot has; without it the
// scriptlets' `>/dev/null` redirections fail.
func mkDevNull(t *testing.T, root string) {
	t.Helper()
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	if err := syscall.Mknod(filepath.Join(root, "dev", "null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Fatal(err)
	}
}

// TestRPMInstallRoot installs the rpm with rpm -i --nodeps into a scratch root and checks
// what landed there.
func TestRPMInstallRoot(t *testing.T) {
	requireRoot(t)
	p := getPackages(t)
	root := newRoot(t)
	run(t, "rpm", "--root", root, "--import", p.PubKey)
	out := run(t, "rpm", "--root", root, "-i", "--nodeps", p.Old.RPM)
	if strings.TrimSpace(out) != "" {
		t.Errorf("rpm -i printed %q", out)
	}
	if q := strings.TrimSpace(run(t, "rpm", "--root", root, "-q", "haagent")); q != "haagent-"+p.Old.Version+"-1.x86_64" {
		t.Errorf("rpm -q: %s", q)
	}
	run(t, "rpm", "--root", root, "-V", "--nodeps", "haagent") // every file as packaged
	for path, mode := range map[string]os.FileMode{"etc/sysconfig/haagent": 0o600, "usr/bin/haagent": 0o755, "usr/lib/systemd/system/haagent.service": 0o644, "var/lib/haagent": 0o755} {
		st, err := os.Stat(filepath.Join(root, path))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("/%s: %v, want mode %s", path, err, octal(mode))
		}
	}
	if v := binVersion(t, run(t, filepath.Join(root, "usr/bin/haagent"), "version")); v != p.Old.Version {
		t.Errorf("installed haagent says version %s, the package is %s", v, p.Old.Version)
	}
}

// testBase is an rpm that provides /bin/sh (busybox) and the repository holding it, so
// that dnf can resolve the haagent rpm's one requirement in an otherwise empty root.
var testBase struct {
	once      sync.Once
	rpm, repo string
	err       error
}

func baseRPM(t *testing.T, p *packages) (rpm, repo string) {
	t.Helper()
	testBase.once.Do(func() {
		dir := filepath.Join(shared.dir, "testbase")
		testBase.repo = filepath.Join(dir, "repo")
		testBase.rpm = filepath.Join(testBase.repo, "haagent-test-base-1.0-1.x86_64.rpm")
		os.MkdirAll(testBase.repo, 0o755)
		cfg := filepath.Join(dir, "nfpm.yaml")
		writeFile(t, cfg, `name: haagent-test-base
arch: amd64
platform: linux
version: "1.0"
release: "1"
version_schema: none
maintainer: haagent tests <test@haagent.invalid>
description: busybox as /bin/sh, so that haagent's scriptlets run in a scratch root
license: GPL-2.0-only
contents:
  - src: /bin/busybox
    dst: /usr/bin/busybox
    file_info:
      mode: 0755
  - src: /usr/bin/busybox
    dst: /bin/sh
    type: symlink
`)
		if _, err := runErr(nil, "", p.NFPM, "pkg", "--config", cfg, "--packager", "rpm", "--target", testBase.rpm); err != nil {
			testBase.err = err
			return
		}
		_, testBase.err = runErr(nil, "", "createrepo_c", "--quiet", testBase.repo)
	})
	if testBase.err != nil {
		t.Fatal(testBase.err)
	}
	return testBase.rpm, testBase.repo
}

// TestDNFRepoInstallUpgradeErase is `yum install haagent` for real: dnf installs the
// package from the repository that `make repo` made, into a scratch root with no
// systemd (and no systemctl), then upgrades it to the newer build, then removes it. An
// edited config survives the upgrade, the data dir survives the removal, and no
// scriptlet fails.
func TestDNFRepoInstallUpgradeErase(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("dnf"); err != nil {
		t.Fatal("dnf is missing: run scripts/deps.sh (make test does)")
	}
	p := getPackages(t)
	_, baseRepo := baseRPM(t, p)
	root := t.TempDir()
	mkDevNull(t, root)
	work := t.TempDir()
	conf := filepath.Join(work, "dnf.conf")
	writeFile(t, conf, "[main]\ngpgcheck=1\ninstallonly_limit=3\nclean_requirements_on_remove=False\nbest=True\n")
	dnf := func(args ...string) string {
		t.Helper()
		base := []string{"-y", "--installroot=" + root, "--config=" + conf, "--releasever=test",
			"--setopt=reposdir=" + filepath.Join(work, "repos.d"), "--setopt=cachedir=" + filepath.Join(work, "cache"),
			"--setopt=install_weak_deps=False", "--setopt=metadata_expire=0",
			"--disablerepo=*",
			"--repofrompath=haagent," + p.Repo, "--enablerepo=haagent",
			"--setopt=haagent.gpgcheck=1", "--setopt=haagent.gpgkey=file://" + p.PubKey,
			"--repofrompath=testbase," + baseRepo, "--enablerepo=testbase", "--setopt=testbase.gpgcheck=0",
		}
		out, err := runErr(nil, "", "dnf", append(base, args...)...)
		t.Logf("dnf %s:\n%s", strings.Join(args, " "), out)
		if err != nil {
			t.Fatal(err)
		}
		if regexp.MustCompile(`(?i)scriptlet failed|error in \w+ scriptlet|warning: %`).MatchString(out) {
			t.Errorf("a scriptlet failed:\n%s", out)
		}
		return out
	}
	rpmQ := func() string {
		return strings.TrimSpace(run(t, "rpm", "--root", root, "-q", "haagent"))
	}
	cfg := filepath.Join(root, "etc/sysconfig/haagent")

	// Install the older build by its full name; the repo holds both.
	dnf("install", "haagent-"+p.Old.Version+"-1")
	if q := rpmQ(); q != "haagent-"+p.Old.Version+"-1.x86_64" {
		t.Fatalf("installed %s", q)
	}
	if _, err := os.Stat(filepath.Join(root, "usr/bin/systemctl")); err == nil {
		t.Fatal("the scratch root has a systemctl; this test is about roots without one")
	}
	edited := mustRead(t, cfg) + "HAAGENT_ROLE=master\nHAAGENT_PEERS=m1,m2,m3\n"
	writeFile(t, cfg, edited)

	dnf("upgrade", "haagent")
	if q := rpmQ(); q != "haagent-"+p.New.Version+"-1.x86_64" {
		t.Fatalf("after dnf upgrade: %s", q)
	}
	if got := mustRead(t, cfg); got != edited {
		t.Errorf("the edited config did not survive the upgrade:\n%s", got)
	}
	if v := binVersion(t, run(t, filepath.Join(root, "usr/bin/haagent"), "version")); v != p.New.Version {
		t.Errorf("upgraded haagent says version %s, want %s", v, p.New.Version)
	}

	// Data in /var/lib/haagent must outlive the package.
	writeFile(t, filepath.Join(root, "var/lib/haagent/etcd/member/snap/db"), "etcd data")
	dnf("remove", "haagent")
	if q, err := runErr(nil, "", "rpm", "--root", root, "-q", "haagent"); err == nil {
		t.Errorf("still installed after dnf remove: %s", q)
	}
	for _, gone := range []string{"usr/bin/haagent", "usr/lib/systemd/system/haagent.service", "etc/sysconfig/haagent"} {
		if _, err := os.Stat(filepath.Join(root, gone)); err == nil {
			t.Errorf("/%s is still there after removal", gone)
		}
	}
	if got, err := os.ReadFile(filepath.Join(root, "var/lib/haagent/etcd/member/snap/db")); err != nil || string(got) != "etcd data" {
		t.Errorf("the data dir did not survive removal: %v", err)
	}
	// rpm keeps an edited config as .rpmsave.
	if got, err := os.ReadFile(cfg + ".rpmsave"); err != nil || string(got) != edited {
		t.Errorf("the edited config was not kept as .rpmsave: %v", err)
	}
}

// TestRPMScriptlets checks which systemctl commands the scriptlets run, in a scratch root
// whose systemctl records its arguments: with systemd running (/run/systemd/system
// exists) and offline (an image build). Install and upgrade only reload; erase stops
// and disables; nothing ever starts, enables or restarts haagent.
func TestRPMScriptlets(t *testing.T) {
	requireRoot(t)
	p := getPackages(t)
	base, _ := baseRPM(t, p)
	for _, tc := range []struct {
		name                    string
		online                  bool
		install, upgrade, erase []string
	}{
		{"systemd running", true, []string{"daemon-reload"}, []string{"daemon-reload"}, []string{"disable --now haagent.service", "daemon-reload"}},
		{"systemd offline", false, nil, nil, []string{"--no-reload disable haagent.service"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			mkDevNull(t, root)
			run(t, "rpm", "--root", root, "--import", p.PubKey)
			run(t, "rpm", "--root", root, "-i", base)
			log := filepath.Join(root, "var/log/systemctl.calls")
			os.MkdirAll(filepath.Dir(log), 0o755)
			writeFile(t, filepath.Join(root, "usr/bin/systemctl"), "#!/bin/sh\necho \"$*\" >> /var/log/systemctl.calls\n")
			os.Chmod(filepath.Join(root, "usr/bin/systemctl"), 0o755)
			if tc.online {
				os.MkdirAll(filepath.Join(root, "run/systemd/system"), 0o755)
			}
			calls := func() []string {
				b, _ := os.ReadFile(log)
				os.Remove(log)
				return lines(string(b))
			}
			for _, step := range []struct {
				name string
				args []string
				want []string
			}{
				{"install", []string{"-i", p.Old.RPM}, tc.install},
				{"upgrade", []string{"-U", p.New.RPM}, tc.upgrade},
				{"erase", []string{"-e", "haagent"}, tc.erase},
			} {
				out, err := runErr(nil, "", "rpm", append([]string{"--root", root}, step.args...)...)
				if err != nil || strings.TrimSpace(out) != "" {
					t.Fatalf("%s: %q %v", step.name, out, err)
				}
				if got := calls(); !slices.Equal(got, step.want) {
					t.Errorf("%s ran systemctl %q, want %q", step.name, got, step.want)
				}
			}
		})
	}
}

// rpmq queries a package file. Debian's rpm keeps its database in ~/.rpmdb and creates
// it on a query; a scratch --dbpath keeps the machine's home out of it.
func rpmq(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, "rpm", append([]string{"--dbpath", filepath.Join(shared.dir, "rpmdb")}, args...)...)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	mode := os.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}
