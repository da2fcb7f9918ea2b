// Package conformance runs Kubernetes' own conformance suite (e2e.test under ginkgo,
// both built by scripts/build-kube.sh conformance) on a sixhost lab, offline: it pushes
// the suite's images into lb1's registry, runs the suite on the lab's client host through
// the VIP, and reads ginkgo's JUnit report into a Summary.
package conformance

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/haagent/haagent/test/framework/images"
	"github.com/haagent/haagent/test/framework/sixhost"
)

// DefaultPrograms is where scripts/build-kube.sh conformance puts e2e.test, ginkgo and
// the test images' programs.
const DefaultPrograms = "/var/cache/haagent/kube/" + KubeVersion + "/conformance"

// KubeVersion is the suite's version: the lab's kube binaries'.
const KubeVersion = "v1.37.2"

// Focus selects the conformance specs, as Sonobuoy's certified-conformance mode does.
const Focus = `\[Conformance\]`

// Options says what to run and where its output goes.
type Options struct {
	// Programs holds e2e.test and ginkgo.
	Programs string
	// Focus and Skip are ginkgo's regexps over spec names.
	Focus, Skip string
	// Procs is ginkgo's --procs: parallel specs run on that many processes, and the
	// Serial ones alone at the end.
	Procs int
	// Timeout bounds the whole suite (ginkgo's --timeout).
	Timeout time.Duration
	// ReportDir, on this machine, receives junit.xml.
	ReportDir string
	// Out receives ginkgo's output as it runs.
	Out io.Writer
	// During, if set, runs beside the suite (to halt a master mid-run, say); its error
	// is returned with the summary.
	During func(ctx context.Context) error
}

// remoteDir is where the suite and its report live on the client host: on its disk, not
// its /tmp, which is a tmpfs.
const remoteDir = "/var/tmp/conformance"

// PushImages builds the suite's images and pushes them into lb1's registry from lb1's
// own netns, where the minions' containerd mirror for registry.k8s.io fetches them.
func PushImages(ctx context.Context, l *sixhost.Lab, programs, workDir string, logf func(string, ...any)) error {
	set, err := images.Build(ctx, filepath.Join(workDir, "images"))
	if err != nil {
		return err
	}
	imgs, err := images.Conformance(ctx, images.ConformanceParts{Programs: programs, KubeVersion: KubeVersion, Set: set, Logf: logf})
	if err != nil {
		return err
	}
	refs := make([]string, 0, len(imgs))
	for ref := range imgs {
		refs = append(refs, ref)
	}
	sort.Strings(refs)
	for _, ref := range refs {
		start := time.Now()
		if err := l.Push(ctx, ref, imgs[ref]); err != nil {
			return err
		}
		logf("conformance: pushed %s in %v", ref, time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// Run copies the suite to the lab's client host and runs it there with the admin
// kubeconfig, whose server is the VIP. The Summary is read from the JUnit report even
// when the suite fails; the error says why there is no report, or what During returned.
func Run(ctx context.Context, l *sixhost.Lab, o Options) (Summary, error) {
	client := l.Host(sixhost.Client)
	for _, b := range []string{"e2e.test", "ginkgo"} {
		if err := client.CopyIn(filepath.Join(o.Programs, b), remoteDir+"/"+b); err != nil {
			return Summary{}, fmt.Errorf("copy %s to %s: %w (scripts/build-kube.sh conformance builds it)", b, sixhost.Client, err)
		}
	}
	report := remoteDir + "/report"
	if _, err := client.Exec(ctx, "sh", "-c", "rm -rf "+report+" && mkdir -p "+report); err != nil {
		return Summary{}, err
	}
	args := []string{remoteDir + "/ginkgo",
		"--procs=" + strconv.Itoa(max(o.Procs, 1)),
		"--timeout=" + o.Timeout.String(),
		"--focus=" + o.Focus,
		"--no-color",
		// Skipped here means not selected: thousands of specs, one letter each.
		"--silence-skips",
		"--junit-report=junit.xml",
		"--output-dir=" + report,
	}
	if o.Skip != "" {
		args = append(args, "--skip="+o.Skip)
	}
	args = append(args, remoteDir+"/e2e.test", "--",
		"--kubeconfig="+sixhost.AdminKubeconfig,
		"--provider=skeleton",
		"--kubectl-path=/usr/bin/kubectl",
		"--report-dir="+report,
	)
	cmd := client.Command(ctx, args...)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = o.Out, o.Out
	var during chan error
	if o.During != nil {
		dctx, cancel := context.WithCancel(ctx)
		defer cancel()
		during = make(chan error, 1)
		go func() { during <- o.During(dctx) }()
	}
	start := time.Now()
	runErr := cmd.Run()
	elapsed := time.Since(start)
	junit, err := client.ReadFile(report + "/junit.xml")
	if err != nil {
		return Summary{}, fmt.Errorf("ginkgo wrote no JUnit report (%v): %w", runErr, err)
	}
	if o.ReportDir != "" {
		if err := os.MkdirAll(o.ReportDir, 0o755); err != nil {
			return Summary{}, err
		}
		if err := os.WriteFile(filepath.Join(o.ReportDir, "junit.xml"), junit, 0o644); err != nil {
			return Summary{}, err
		}
	}
	s, err := ParseJUnit(junit)
	if err != nil {
		return Summary{}, err
	}
	s.Elapsed = elapsed
	if during != nil {
		select {
		case err := <-during:
			if err != nil {
				return s, fmt.Errorf("beside the suite: %w", err)
			}
		default: // still waiting for its moment: the suite ended first
		}
	}
	return s, nil
}

// Summary is what a run of the suite came to.
type Summary struct {
	Run, Passed, Failed, Skipped int
	// Failures are the failed specs' names and first message lines, in report order.
	Failures []Failure
	// SkippedSpecs are the selected specs that skipped themselves, with their reasons.
	SkippedSpecs []Failure
	Elapsed      time.Duration
}

// Failure is one failed spec.
type Failure struct{ Name, Message string }

// junitSuites is the part of ginkgo's JUnit report a Summary needs.
type junitSuites struct {
	Suites []struct {
		Cases []struct {
			Name    string `xml:"name,attr"`
			Status  string `xml:"status,attr"`
			Skipped *struct {
				Message string `xml:"message,attr"`
			} `xml:"skipped"`
			Failure *struct {
				Message string `xml:"message,attr"`
				Body    string `xml:",chardata"`
			} `xml:"failure"`
			Error *struct {
				Message string `xml:"message,attr"`
			} `xml:"error"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// ParseJUnit reads ginkgo's JUnit report. Only specs count as run (names that start
// with "[It]"); a failed setup or teardown node of the suite fails the run as a spec
// would, so it is listed among the failures under its own name.
func ParseJUnit(b []byte) (Summary, error) {
	var js junitSuites
	if err := xml.Unmarshal(b, &js); err != nil {
		return Summary{}, fmt.Errorf("parse JUnit report: %w", err)
	}
	var s Summary
	for _, suite := range js.Suites {
		for _, c := range suite.Cases {
			isSpec := strings.HasPrefix(c.Name, "[It]")
			switch c.Status {
			case "passed":
				if isSpec {
					s.Run++
					s.Passed++
				}
			case "skipped", "pending":
				// Specs that -focus and -skip left out have the bare message
				// "skipped"; a spec that ran and skipped itself says why.
				if isSpec && c.Skipped != nil && c.Skipped.Message != "skipped" {
					s.Skipped++
					s.SkippedSpecs = append(s.SkippedSpecs, Failure{Name: specName(c.Name), Message: firstLine(c.Skipped.Message)})
				}
			default: // failed, panicked, interrupted, timedout, aborted
				msg := c.Status
				if c.Failure != nil {
					msg = c.Failure.Message
				} else if c.Error != nil {
					msg = c.Error.Message
				}
				if isSpec {
					s.Run++
				}
				s.Failed++
				s.Failures = append(s.Failures, Failure{Name: specName(c.Name), Message: firstLine(msg)})
			}
		}
	}
	if s.Run == 0 && s.Failed == 0 && s.Skipped == 0 {
		return s, fmt.Errorf("no spec ran: check -focus and -skip")
	}
	return s, nil
}

// specName drops ginkgo's node type and the label list it appends to the name.
func specName(junitName string) string {
	n := strings.TrimSpace(strings.TrimPrefix(junitName, "[It]"))
	if i := strings.LastIndex(n, " ["); i >= 0 && strings.HasSuffix(n, "]") && strings.Contains(n[i:], ",") {
		n = n[:i]
	}
	return n
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	const max = 200
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}

// Print writes the summary as the lines an operator reads first.
func (s Summary) Print(w io.Writer) {
	fmt.Fprintf(w, "conformance: %d specs run in %s: %d passed, %d failed; %d skipped\n",
		s.Run, s.Elapsed.Round(time.Second), s.Passed, s.Failed, s.Skipped)
	for _, f := range s.SkippedSpecs {
		fmt.Fprintf(w, "  skipped %s\n          %s\n", f.Name, f.Message)
	}
	for _, f := range s.Failures {
		fmt.Fprintf(w, "  FAILED %s\n         %s\n", f.Name, f.Message)
	}
}
