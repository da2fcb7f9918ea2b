package packaging

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// manDir is where both packages put the man pages.
const manDir = "/usr/share/man/man1/"

// manPages are the pages that the binary under test writes (`haagent gen-man`, which
// `make man` runs), as the packages name them: one per command, gzipped.
func manPages(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	run(t, haagentBin(t), "gen-man", dir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var pages []string
	for _, e := range entries {
		pages = append(pages, e.Name()+".gz")
	}
	if !slices.Contains(pages, "haagent.1.gz") || !slices.Contains(pages, "haagent-member-remove.1.gz") {
		t.Fatalf("haagent gen-man wrote %v", pages)
	}
	return pages
}

// TestManPages checks the man pages in the rpm and the deb: one per command, gzipped,
// written by the packaged binary (its version is in the footer), read by man without a
// warning, and haagent(1) lists the flags of every role.
func TestManPages(t *testing.T) {
	p := getPackages(t)
	want := manPages(t)
	inDir := func(paths []string) []string {
		var pages []string
		for _, path := range paths {
			if page, ok := strings.CutPrefix(path, manDir); ok && page != "" {
				pages = append(pages, page)
			}
		}
		slices.Sort(pages)
		return pages
	}
	if got := inDir(lines(rpmq(t, "-qpl", p.Old.RPM))); !slices.Equal(got, want) {
		t.Errorf("the rpm's man pages %v, want %v", got, want)
	}
	var debPaths []string
	for _, l := range lines(run(t, "dpkg-deb", "-c", p.Old.DEB)) {
		f := strings.Fields(l)
		debPaths = append(debPaths, strings.TrimPrefix(f[len(f)-1], "."))
	}
	if got := inDir(debPaths); !slices.Equal(got, want) {
		t.Errorf("the deb's man pages %v, want %v", got, want)
	}

	root := t.TempDir()
	run(t, "dpkg-deb", "-x", p.Old.DEB, root)
	_, noMan := exec.LookPath("man")
	if noMan != nil {
		t.Log("man is missing: the pages are checked without rendering them")
	}
	for _, page := range want {
		path := filepath.Join(root, manDir, page)
		text := gunzip(t, path)
		// .TH "TITLE" "SECTION" "DATE" "SOURCE" "MANUAL"; the source is the binary's version.
		if !strings.Contains(text, `.TH "`) || !strings.Contains(text, `"haagent `+p.Old.Version+`" "haagent manual"`) {
			t.Errorf("%s: no .TH line naming haagent %s:\n%.300s", page, p.Old.Version, text)
		}
		if noMan != nil {
			continue
		}
		cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", path)
		cmd.Env = append(os.Environ(), "MANWIDTH=80")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if out, err := cmd.Output(); err != nil || stderr.Len() > 0 || len(out) == 0 {
			t.Errorf("man -l %s: %v, %d bytes, warnings:\n%s", page, err, len(out), stderr.String())
		}
	}
	main := gunzip(t, filepath.Join(root, manDir, "haagent.1.gz"))
	for role, flags := range roleFlags(t) {
		for _, f := range flags {
			if !strings.Contains(main, `\fB--`+f.Name+`\fP`) {
				t.Errorf("haagent(1) lacks --%s of the %s role", f.Name, role)
			}
		}
	}
}

// gunzip reads a gzipped file whole.
func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s is not gzipped: %v", path, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return string(b)
}
