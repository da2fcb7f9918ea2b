package pki

import (
	"crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseToken(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	tests := []struct {
		in, wantErr string
		pinned      bool
		kind        Kind
	}{
		{in: "0123456789abcdef0123"},
		{in: "K10" + hash + "::0123456789abcdef0123", pinned: true},
		{in: "K10" + hash + "::server:0123456789abcdef0123", pinned: true, kind: KindServer},
		{in: "K10" + hash + "::agent:0123456789abcdef0123", pinned: true, kind: KindAgent},
		{in: "agent:0123456789abcdef0123", kind: KindAgent},
		{in: "K10" + hash + "::lb:0123456789abcdef0123", pinned: true, kind: KindLB},
		{in: "K10" + hash + "::root:0123456789abcdef0123", wantErr: "unknown token kind"},
		{in: "K10::0123456789abcdef0123"},
		{in: "short", wantErr: "at least 16"},
		{in: "K10abc::0123456789abcdef0123", wantErr: "64 hex"},
		{in: "K10" + strings.Repeat("zz", 32) + "::0123456789abcdef0123", wantErr: "not hex"},
		{in: "has spaces in the secret!!", wantErr: "only letters"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			tok, err := ParseToken(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tok.Kind != tt.kind {
				t.Fatalf("kind = %q, want %q", tok.Kind, tt.kind)
			}
			if (tok.CAHash != "") != tt.pinned {
				t.Fatalf("pinned = %v, want %v", tok.CAHash != "", tt.pinned)
			}
			again, err := ParseToken(tok.String())
			if err != nil || again != tok {
				t.Fatalf("round trip: %v, %v", again, err)
			}
		})
	}
}

func TestPinAndSeal(t *testing.T) {
	now := time.Now()
	sh, err := NewShared(now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other", now)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := GenerateToken(KindServer)
	if err != nil {
		t.Fatal(err)
	}
	pinned := tok.Pinned(sh.CA.Cert.Raw)
	if err := pinned.CheckCA(sh.CA.Cert.Raw); err != nil {
		t.Fatalf("own CA refused: %v", err)
	}
	if err := pinned.CheckCA(other.Cert.Raw); err == nil {
		t.Fatal("a different CA was accepted by the pinned token")
	}
	if err := tok.CheckCA(other.Cert.Raw); err != nil {
		t.Fatalf("an unpinned token refused a CA: %v", err)
	}
	agent, _ := GenerateToken(KindAgent)
	lb, _ := GenerateToken(KindLB)
	sh.AgentToken, sh.LBToken = &agent, &lb
	sealed, err := SealShared(tok, sh)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), "PRIVATE KEY") || strings.Contains(string(sealed), lb.Secret) {
		t.Fatal("sealed material holds a key in the clear")
	}
	back, err := OpenShared(pinned, sealed) // the pin doesn't change the secret, so this opens
	if err != nil || !back.CA.Cert.Equal(sh.CA.Cert) || string(back.SAKeyPEM) != string(sh.SAKeyPEM) {
		t.Fatalf("open: %v", err)
	}
	if back.AgentToken == nil || *back.AgentToken != agent || back.LBToken == nil || *back.LBToken != lb {
		t.Fatalf("tokens after the round trip: agent %v, lb %v; want %v, %v", back.AgentToken, back.LBToken, agent, lb)
	}
	wrong, _ := GenerateToken(KindServer)
	if _, err := OpenShared(wrong, sealed); err == nil {
		t.Fatal("a wrong token opened the sealed CA")
	}
}

func TestIssueGivesEachRoleItsCertificates(t *testing.T) {
	now := time.Now()
	sh, err := NewShared(now)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(sh.CA.Cert)
	byPath := func(role string) map[string][]byte {
		fs, err := Issue(sh, Node{Role: role, Name: "node1", Hosts: []string{"10.0.0.21"}, LB: "10.0.0.10",
			ServiceIP: "10.254.0.1", APIServer: "https://10.0.0.10:6443"}, now)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string][]byte{}
		for _, f := range fs {
			m[f.Path] = f.Data
			wantMode := uint32(0o644)
			if IsKey(f.Path) {
				wantMode = 0o600
			}
			if uint32(f.Mode) != wantMode {
				t.Errorf("%s: mode %o, want %o", f.Path, f.Mode, wantMode)
			}
		}
		return m
	}
	master := byPath("master")
	api, err := ParseCert(master[APIServerCert])
	if err != nil {
		t.Fatal(err)
	}
	for _, dns := range []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"} {
		if !slices.Contains(api.DNSNames, dns) {
			t.Errorf("apiserver cert lacks DNS SAN %s: %v", dns, api.DNSNames)
		}
	}
	for _, ip := range []string{"10.0.0.21", "10.0.0.10", "10.254.0.1", "127.0.0.1"} {
		if !slices.ContainsFunc(api.IPAddresses, func(a net.IP) bool { return a.Equal(net.ParseIP(ip)) }) {
			t.Errorf("apiserver cert lacks IP SAN %s: %v", ip, api.IPAddresses)
		}
	}
	if _, err := api.Verify(x509.VerifyOptions{Roots: roots, DNSName: "kubernetes.default.svc"}); err != nil {
		t.Errorf("apiserver cert does not verify against the CA: %v", err)
	}
	for _, p := range []string{CAKey, SAKey, SAPub, EtcdPeerCert, EtcdServerCrt, APIServerEtcdCert, AdminKubeconfig,
		ControllerManagerKubeconfig, SchedulerKubeconfig} {
		if master[p] == nil {
			t.Errorf("master bundle lacks %s", p)
		}
	}
	minion := byPath("minion")
	if minion[CAKey] != nil || minion[SAKey] != nil {
		t.Fatal("a minion was given the CA or service-account key")
	}
	kubelet, err := ParseCert(minion[KubeletClientCert])
	if err != nil {
		t.Fatal(err)
	}
	if kubelet.Subject.CommonName != "system:node:node1" || !slices.Equal(kubelet.Subject.Organization, []string{"system:nodes"}) {
		t.Fatalf("kubelet subject = %v", kubelet.Subject)
	}
	if _, err := kubelet.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("kubelet client cert: %v", err)
	}
	for _, p := range []string{KubeProxyCert, FlannelEtcdCert, KubeletKubeconfig, ProxyKubeconfig} {
		if minion[p] == nil {
			t.Errorf("minion bundle lacks %s", p)
		}
	}
	if !strings.Contains(string(minion[KubeletKubeconfig]), "server: https://10.0.0.10:6443") {
		t.Error("the kubelet kubeconfig does not point at the lb")
	}
	// A minion with its own lb points it at 127.0.0.1; the credentials stay.
	local, err := WithServer(minion[KubeletKubeconfig], "https://127.0.0.1:6443")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(local), "\n    server: https://127.0.0.1:6443\n") || strings.Contains(string(local), "10.0.0.10") ||
		len(local) != len(minion[KubeletKubeconfig])-len("10.0.0.10")+len("127.0.0.1") {
		t.Errorf("WithServer:\n%s", local)
	}
	if c, err := kubeconfigCert(local); err != nil || c == nil {
		t.Errorf("WithServer lost the client certificate: %v", err)
	}
	if _, err := WithServer([]byte("apiVersion: v1\n"), "https://127.0.0.1:6443"); err == nil {
		t.Error("WithServer accepted a kubeconfig without a server")
	}
	// An lb gets one client certificate, in its own name: its etcd user.
	lb := byPath("lb")
	lbCert, err := ParseCert(lb[EtcdClientCert])
	if err != nil {
		t.Fatal(err)
	}
	if lbCert.Subject.CommonName != "haagent-lb:node1" || lbCert.IsCA || len(lb) != 3 {
		t.Errorf("lb bundle: CN %q, %d files; want CN haagent-lb:node1, the CA, its certificate and key", lbCert.Subject.CommonName, len(lb))
	}
}

func TestRenewAtTwoThirds(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("ca", now)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.Issue(LeafSpec{CommonName: "x", Client: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := ParseCert(certPEM)
	got := RenewAt(c).Sub(c.NotBefore)
	want := c.NotAfter.Sub(c.NotBefore) * 2 / 3
	if got != want {
		t.Fatalf("renew after %s, want %s", got, want)
	}
	if c.NotAfter.Sub(now) < 364*24*time.Hour {
		t.Fatalf("leaf valid until %s, want about a year", c.NotAfter)
	}
	if ca.Cert.NotAfter.Sub(now) < 9*365*24*time.Hour {
		t.Fatalf("CA valid until %s, want 10 years", ca.Cert.NotAfter)
	}
}

func TestSecretBits(t *testing.T) {
	gen, _ := GenerateToken(KindServer)
	for _, tt := range []struct {
		secret string
		want   int
	}{
		{gen.Secret, 256},                                 // 64 hex digits
		{"0123456789abcdef0123456789abcdef", 128},         // 32 hex digits: just enough
		{"0123456789abcdef0123", 80},                      // 20 hex digits
		{"0123456789012345678901234567890123456789", 132}, // 40 decimal digits
		{"haagent-integration-test-0123456789", 184},      // lower, digits, '-'
		{strings.Repeat("a", 64), 0},                      // one character
		{strings.Repeat("ab", 40), 80},                    // two characters
		{"Correct-Horse-Battery-Staple-9", 180},           // every class
	} {
		if got := SecretBits(tt.secret); got != tt.want {
			t.Errorf("SecretBits(%q) = %d, want %d", tt.secret, got, tt.want)
		}
	}
}

func TestNonMasterName(t *testing.T) {
	for name, want := range map[string]bool{
		"m1": false, "centos-master-1": false, "master.example": false,
		FlannelCommonName: true, LBCommonName: true, LBNamePrefix + "lb1": true, "system:node:minion1": true, "system:kube-proxy": true,
	} {
		if got := NonMasterName(name); got != want {
			t.Errorf("NonMasterName(%q) = %v, want %v", name, got, want)
		}
	}
}
