package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/procs"
	"github.com/haagent/haagent/trust/join"
	"github.com/haagent/haagent/trust/pki"
)

// identity is a certificate and key that a node holds, named for the test's messages.
type identity struct {
	name string
	cert tls.Certificate
}

// identities are every client certificate under root: each .crt in the pki dir with its
// .key, and the client credentials embedded in each kubeconfig.
func identities(t *testing.T, root string) []identity {
	t.Helper()
	var out []identity
	crts, _ := filepath.Glob(filepath.Join(root, pki.Dir, "*.crt"))
	for _, crt := range crts {
		key := strings.TrimSuffix(crt, ".crt") + ".key"
		if _, err := os.Stat(key); err != nil {
			continue // a CA certificate
		}
		kp, err := tls.LoadX509KeyPair(crt, key)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, identity{filepath.Base(crt), kp})
	}
	kcs, _ := filepath.Glob(filepath.Join(root, "etc/kubernetes/*.kubeconfig"))
	for _, kc := range kcs {
		data, err := os.ReadFile(kc)
		if err != nil {
			t.Fatal(err)
		}
		field := func(name string) []byte {
			for _, line := range strings.Split(string(data), "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
					b, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
					return b
				}
			}
			t.Fatalf("%s has no %s", kc, name)
			return nil
		}
		kp, err := tls.X509KeyPair(field("client-certificate-data"), field("client-key-data"))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, identity{filepath.Base(kc), kp})
	}
	if len(out) == 0 {
		t.Fatalf("no identities under %s", root)
	}
	return out
}

// raftPost sends one raft message to a member's peer port as rafthttp's pipeline does.
func raftPost(id identity, peer string, clusterID string, m *raftpb.Message) (int, error) {
	body, err := proto.Marshal(m)
	if err != nil {
		return 0, err
	}
	req, _ := http.NewRequest(http.MethodPost, "https://"+peer+"/raft/message", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/protobuf")
	req.Header.Set("X-Etcd-Cluster-ID", clusterID)
	req.Header.Set("X-Server-From", fmt.Sprintf("%x", m.GetFrom()))
	req.Header.Set("X-Server-Version", "3.7.3")
	req.Header.Set("X-Min-Cluster-Version", "3.0.0")
	return peerDo(id, req)
}

func peerDo(id identity, req *http.Request) (int, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		// The attacker does not care who the server is; the server must care who the client is.
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{id.cert}, InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, nil
}

// handshake dials the peer port with id and makes the server read the client's
// certificate: with TLS 1.3 the server's refusal arrives on the first read.
func handshake(id identity, peer string) error {
	conn, err := tls.Dial("tcp", peer, &tls.Config{Certificates: []tls.Certificate{id.cert}, InsecureSkipVerify: true})
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Write([]byte("GET /members HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 64)
	_, err = conn.Read(buf)
	return err
}

func mustIssue(t *testing.T, ca *pki.CA, spec pki.LeafSpec) identity {
	t.Helper()
	c, k, err := ca.Issue(spec, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return identity{spec.CommonName + " from the cluster CA", kp}
}

// A stolen minion must not own the cluster: nothing a minion or an lb holds speaks raft,
// and a join can't name a master.
func TestNonMastersCantSpeakRaftOrNameAMaster(t *testing.T) {
	c := newCluster(t)
	c.Secure(serverToken)
	for _, m := range c.Masters {
		m.Extra = []string{"--lb=127.0.0.10", "--systemd=off"}
	}
	startReady(t, c)
	m1, m2 := c.Masters[0], c.Masters[1]
	_, agent, lbToken := tokenShow(t, m1)
	members := requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
	id1 := memberID(t, members, "m1")
	peer1 := m1.IP + ":2380"

	minionRoot := t.TempDir()
	if code, log := runNamedMinion(t, "minion1", minionRoot, m2.IP, agent); code != 0 {
		t.Fatalf("minion exit %d:\n%s", code, log)
	}
	lb := procs.NewLB(bin, procs.LBConfig{Name: "lb1", IP: "127.0.0.10", Masters: []string{"127.0.0.21", "127.0.0.22", "127.0.0.23"},
		Token: lbToken, Dir: t.TempDir()})
	if err := lb.Start(); err != nil {
		t.Fatal(err)
	}
	// No apiserver runs here, so the lb is never ready: its certificates are what counts.
	err := await.Until(context.Background(), "the lb's certificates", 30*time.Second, func() error {
		_, err := os.Stat(filepath.Join(lb.Root(), pki.EtcdClientKey))
		return err
	})
	lb.StopOrKill()
	if err != nil {
		t.Fatalf("%v\n%s", err, lb.LogTail(20))
	}
	nonMasters := append(identities(t, minionRoot), identities(t, lb.Root())...)

	// The controls: a master's own peer certificate is let in, so a refusal below is the
	// peer port's doing; a certificate from the cluster CA with a master's name, which
	// only the cluster CA's holders (masters) can make, is not, as the cluster is new.
	masterPeer, err := tls.LoadX509KeyPair(filepath.Join(m2.Root, pki.EtcdPeerCert), filepath.Join(m2.Root, pki.EtcdPeerKey))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+peer1+"/members", nil)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{masterPeer}, InsecureSkipVerify: true}}}
	resp, err := hc.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("m2's peer certificate on m1's peer port: %v %v", resp, err)
	}
	clusterID := resp.Header.Get("X-Etcd-Cluster-ID")
	resp.Body.Close()
	sh, err := pki.LoadShared(m1.Root)
	if err != nil {
		t.Fatal(err)
	}
	nonMasters = append(nonMasters, mustIssue(t, sh.CA, pki.LeafSpec{CommonName: "m2", Hosts: []string{"127.0.0.1", "127.0.0.22"}, Server: true, Client: true}))

	fake, u := uint64(0x5eed), proto.Uint64
	// The heartbeat's commit index crashed a master before (tocommit out of range); the
	// append is a fake leader's at a higher term.
	heartbeat := &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), To: u(id1), From: u(fake), Term: u(1 << 20), Commit: u(1e9)}
	app := &raftpb.Message{Type: raftpb.MsgApp.Enum(), To: u(id1), From: u(fake), Term: u(1 << 20), LogTerm: u(1 << 20),
		Index: u(1 << 20), Commit: u(1 << 20),
		Entries: []*raftpb.Entry{{Term: u(1 << 20), Index: u(1<<20 + 1), Type: raftpb.EntryNormal.Enum(), Data: []byte("forged")}}}
	for _, id := range nonMasters {
		t.Run(id.name+" is refused on the peer port", func(t *testing.T) {
			if err := handshake(id, peer1); err == nil {
				t.Error("the TLS handshake on the peer port completed")
			}
			for _, m := range []*raftpb.Message{heartbeat, app} {
				if code, err := raftPost(id, peer1, clusterID, m); err == nil {
					t.Errorf("a forged %s got an answer: %d", m.GetType(), code)
				}
			}
			stream, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("https://%s/raft/stream/msgappv2/%x", peer1, fake), nil)
			if code, err := peerDo(id, stream); err == nil {
				t.Errorf("a raft stream got an answer: %d", code)
			}
		})
	}
	t.Run("the masters are up and healthy afterwards", func(t *testing.T) {
		if err := c.WaitReady(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		after := requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
		if memberID(t, after, "m1") != id1 {
			t.Fatal("m1's member ID changed")
		}
		for _, m := range c.Masters {
			if strings.Contains(m.Logs(), "panic") {
				t.Fatalf("%s panicked", m.Name)
			}
		}
	})

	// A join (or a renewal) that asks for the masters' names gets none of them: no
	// certificate it gets verifies as a server for a master, the lb or the apiserver.
	controlPlane := []string{"127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.10", "10.254.0.1", "m1",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}
	kubeletCA, err := sh.CA.Derive(pki.KubeletCAName)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(sh.CA.Cert)
	roots.AddCert(kubeletCA.Cert)
	tok, err := pki.ParseToken(agent)
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	renew, err := tls.LoadX509KeyPair(filepath.Join(minionRoot, pki.KubeletClientCert), filepath.Join(minionRoot, pki.KubeletClientKey))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what string
		cert *tls.Certificate
		req  join.Request
	}{
		{"a join with the agent token", nil, join.Request{Role: "minion", Name: "evil", Hosts: controlPlane[:5], NodeSecret: hex.EncodeToString(secret)}},
		{"a renewal with a minion's certificate", &renew, join.Request{Role: "minion", Name: "minion1", Hosts: controlPlane[:5]}},
	} {
		t.Run(tc.what+" naming the masters gets no such name", func(t *testing.T) {
			fs, _, err := join.Fetch(context.Background(), m1.IP+":9345", tok, nil, tc.cert, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, f := range fs {
				if !strings.HasSuffix(f.Path, ".crt") || f.Path == pki.CACert {
					continue
				}
				cert, err := pki.ParseCert(f.Data)
				if err != nil {
					t.Fatal(err)
				}
				n++
				for _, name := range controlPlane {
					if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err == nil {
						t.Errorf("%s verifies as a server for %s (SANs %v %v)", f.Path, name, cert.DNSNames, cert.IPAddresses)
					}
				}
			}
			if n == 0 {
				t.Fatal("no certificates to check")
			}
			if !strings.Contains(m1.Logs(), "left out of the node's serving certificate") {
				t.Error("m1 did not log the hosts it left out")
			}
		})
	}
}
