package conformance

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// The fixture keeps the shape of a real ginkgo v2.32.0 report from e2e.test v1.37.2 on
// the lab: setup nodes, a spec that -focus left out, one passed, one failed, one that
// skipped itself, one cut by the suite's timeout.
func TestParseJUnit(t *testing.T) {
	b, err := os.ReadFile("testdata/junit.xml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseJUnit(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Run != 3 || s.Passed != 1 || s.Failed != 2 || s.Skipped != 1 {
		t.Errorf("run %d passed %d failed %d skipped %d, want 3 1 2 1", s.Run, s.Passed, s.Failed, s.Skipped)
	}
	wantFailed := []string{
		"[sig-network] DNS should provide DNS for the cluster [Conformance]",
		"[sig-apps] Deployment deployment should support rollover [Conformance]",
	}
	if len(s.Failures) != len(wantFailed) {
		t.Fatalf("failures %+v, want %q", s.Failures, wantFailed)
	}
	for i, f := range s.Failures {
		if f.Name != wantFailed[i] {
			t.Errorf("failure %d is %q, want %q", i, f.Name, wantFailed[i])
		}
	}
	if m := s.Failures[0].Message; m != "[FAILED] Unable to read agnhost_udp@kubernetes.default.svc.cluster.local from pod dns-1/dns-test" {
		t.Errorf("first failure's message %q, want its first line", m)
	}
	if len(s.SkippedSpecs) != 1 || !strings.Contains(s.SkippedSpecs[0].Message, "node OS distro") {
		t.Errorf("skipped specs %+v, want the one that said why", s.SkippedSpecs)
	}
	var out bytes.Buffer
	s.Print(&out)
	for _, want := range []string{"3 specs run", "1 passed, 2 failed; 1 skipped", "FAILED [sig-apps] Deployment deployment should support rollover [Conformance]"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestParseJUnitRefusesEmptyAndBroken(t *testing.T) {
	for name, in := range map[string]string{
		"nothing selected": `<testsuites><testsuite><testcase name="[It] a [Conformance]" status="skipped"><skipped message="skipped"></skipped></testcase></testsuite></testsuites>`,
		"not xml":          `{"specs": []}`,
	} {
		if _, err := ParseJUnit([]byte(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
