package etcdmember

import (
	"strings"
	"testing"
)

// TestMismatchNamesTheSideLeftBehind: the cluster that still lists this host's peer
// URL under another member is the old one; the fix is for the host on it.
func TestMismatchNamesTheSideLeftBehind(t *testing.T) {
	peers, err := ParsePeers("m1=http://10.0.0.21:2380,m2=http://10.0.0.22:2380,m3=http://10.0.0.23:2380", "http", 2380)
	if err != nil {
		t.Fatal(err)
	}
	restored, err := New(Config{Name: "m1", Peers: peers})
	if err != nil {
		t.Fatal(err)
	}
	old := []Member{started(1, "m1", "http://10.0.0.21:2380"), started(2, "m2", "http://10.0.0.22:2380"), started(3, "m3", "http://10.0.0.23:2380")}
	msg := restored.mismatch(peers[2], "bbbb", "aaaa", old)
	for _, want := range []string{"peer m3", "still in etcd cluster aaaa", "this master in cluster bbbb", "on m3:", "haagent reset --yes", "joins cluster bbbb"} {
		if !strings.Contains(msg, want) {
			t.Errorf("from the restored side: %q lacks %q", msg, want)
		}
	}
	leftBehind, err := New(Config{Name: "m3", Peers: peers})
	if err != nil {
		t.Fatal(err)
	}
	msg = leftBehind.mismatch(peers[0], "aaaa", "bbbb", []Member{started(9, "m1", "http://10.0.0.21:2380")})
	for _, want := range []string{"this master is in etcd cluster aaaa", "peer m1", "cluster bbbb, which does not list this master", "stop haagent here", "haagent reset --yes"} {
		if !strings.Contains(msg, want) {
			t.Errorf("from the side left behind: %q lacks %q", msg, want)
		}
	}
}
