// Package rootintegration runs real haagent processes (test/framework/procs) in network
// namespaces that each test makes (nodes of a test/framework/hosts lab, 10.77.0.0/24): the lb
// under kill -9 and blackhole of its primary. Every test here needs root; where it
// can't run, it skips, or fails under make test (test/framework/rootonly).
package rootintegration

import (
	"testing"

	"github.com/haagent/haagent/test/framework/procs"
)

var bin string

func TestMain(m *testing.M) { procs.Main(m, &bin) }

// testToken is the cluster secret of the secure test clusters.
const testToken = "haagent-integration-test-0123456789"

func startReady(t *testing.T, c *procs.Cluster) {
	t.Helper()
	t.Cleanup(func() {
		c.StopAll()
		if t.Failed() {
			for _, m := range c.Masters {
				t.Logf("--- log of %s ---\n%s", m.Name, m.LogTail(30))
			}
		}
	})
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(procs.ReadyTimeout); err != nil {
		t.Fatal(err)
	}
}
