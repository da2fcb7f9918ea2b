package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/conformance"
)

// conformanceSubset is the part of Kubernetes' own suite that make test runs on every
// change, a few minutes' worth: cluster DNS, Services, a Deployment rollout, an
// admission webhook Service the apiservers must reach, an aggregated API, and
// NetworkPolicy (whose specs are not [Conformance] but are the suite's own). make
// conformance runs all of [Conformance].
var conformanceSubset = []string{
	"[sig-network] DNS should provide DNS for the cluster [Conformance]",
	"[sig-network] DNS should provide DNS for services [Conformance]",
	"[sig-network] Services should serve a basic endpoint from pods [Conformance]",
	"[sig-network] Services should be able to create a functioning NodePort service [Conformance]",
	"[sig-apps] Deployment RollingUpdateDeployment should delete old pods and create new ones [Conformance]",
	"[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should be able to deny pod and configmap creation [Conformance]",
	// Each of these three failed on the lab before a fix: the aggregator had no
	// front-proxy certificate, Debian's busybox sh dropped data-1 from the
	// environment, and Debian's containerd 1.6 had no image volumes.
	"[sig-api-machinery] Aggregator Should be able to support the 1.17 Sample API Server using the current Aggregator [LinuxOnly] [Conformance]",
	"[sig-node] Secrets should be consumable via the environment [Conformance] [NodeConformance]",
	"[sig-node] ImageVolume should succeed with pod and pull policy of Always [LinuxOnly] [MinimumKubeletVersion:1.35] [Conformance]",
	"[sig-network] Netpol NetworkPolicy between server and client should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]",
	"[sig-network] Netpol NetworkPolicy between server and client should allow ingress access on one named port [Feature:NetworkPolicy]",
}

// conformanceSubset runs conformanceSubset with the suite's own images, built offline
// and pushed into lb1's registry, and wants every one of them run and passed.
func (w walk) conformanceSubset(t *testing.T) {
	programs := conformance.DefaultPrograms
	if _, err := os.Stat(filepath.Join(programs, "e2e.test")); err != nil {
		t.Fatalf("the conformance suite is not built (%v): run scripts/build-kube.sh (make kube)", err)
	}
	quoted := make([]string, len(conformanceSubset))
	for i, s := range conformanceSubset {
		quoted[i] = regexp.QuoteMeta(s)
	}
	start := time.Now()
	must(t, conformance.PushImages(w.ctx, w.l, programs, t.TempDir(), t.Logf))
	t.Logf("the suite's images built and pushed in %v", time.Since(start).Round(time.Second))
	var out bytes.Buffer
	s, err := conformance.Run(w.ctx, w.l, conformance.Options{
		Programs: programs,
		Focus:    strings.Join(quoted, "|"),
		Procs:    2,
		Timeout:  15 * time.Minute,
		Out:      &out,
	})
	var summary bytes.Buffer
	s.Print(&summary)
	t.Log(summary.String())
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if s.Failed > 0 || s.Passed != len(conformanceSubset) {
		t.Errorf("%d of %d specs passed, want all\n%s", s.Passed, len(conformanceSubset), out.String())
	}
}
