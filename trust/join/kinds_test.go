package join

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/trust/pki"
)

// names is an in-memory Bind, as the masters' etcd keys under /haagent/nodes/ are.
type names struct {
	mu sync.Mutex // guards the fields below
	m  map[string]string
}

func (n *names) bind(_ context.Context, name, hash string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if old, ok := n.m[name]; ok && old != hash {
		return ErrNameTaken
	}
	n.m[name] = hash
	return nil
}

const (
	secretA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	secretB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func TestTokenKinds(t *testing.T) {
	server, _ := pki.GenerateToken(pki.KindServer)
	agent, _ := pki.GenerateToken(pki.KindAgent)
	lb, _ := pki.GenerateToken(pki.KindLB)
	var current atomic.Pointer[pki.Token]
	current.Store(&agent)
	var log bytes.Buffer
	var logMu sync.Mutex
	addr, sh := startServerWith(t, server, func(c *ServerConfig) {
		c.AgentToken = func() (*pki.Token, bool) { return current.Load(), true }
		c.LBToken = func() *pki.Token { return &lb }
		c.Bind = (&names{m: map[string]string{}}).bind
		c.MasterNames = func(context.Context) ([]string, error) { return []string{"m1", "m2", "m3"}, nil }
		c.FailureBudget = 100
		c.Logger = slog.New(slog.NewTextHandler(lockedWriter{&logMu, &log}, nil))
	})
	ctx := context.Background()
	minion := Request{Role: "minion", Name: "minion1", Hosts: []string{"10.0.0.31"}, NodeSecret: secretA}

	var joined []files.File
	t.Run("the agent token joins a minion with its own identity only", func(t *testing.T) {
		fs, _, err := Fetch(ctx, addr, agent, nil, nil, minion)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			if f.Path == pki.CAKey || f.Path == pki.SAKey {
				t.Fatalf("a minion received %s", f.Path)
			}
		}
		joined = fs
	})
	refused := []struct {
		name   string
		tok    pki.Token
		req    Request
		reason string
	}{
		{"the agent token asking for the master bundle", agent, Request{Role: "master", Name: "m9"}, "can't obtain a master's certificates"},
		{"another node with a taken name", agent, Request{Role: "minion", Name: "minion1", NodeSecret: secretB}, "belongs to another node"},
		{"the server token for a minion once an agent token exists", server, Request{Role: "minion", Name: "minion2", NodeSecret: secretB}, "this is the server token"},
		{"an agent token without a node secret", agent, Request{Role: "minion", Name: "minion9"}, "must send its node secret"},
		{"the agent token asking for an lb's certificate", agent, Request{Role: "lb", Name: "lb9", NodeSecret: secretB}, "can't obtain an lb's certificate"},
		{"a malformed name", agent, Request{Role: "minion", Name: "../etc", NodeSecret: secretB}, "is not a DNS name"},
		{"a minion with a master's name", agent, Request{Role: "minion", Name: "m1", NodeSecret: secretB}, "is a master's; give this minion another --name"},
		{"an lb with a master's name", lb, Request{Role: "lb", Name: "m3", NodeSecret: secretB}, "is a master's; give this lb another --name"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Fetch(ctx, addr, tt.tok, nil, nil, tt.req)
			if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("err = %v, want forbidden: %s", err, tt.reason)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("reason is more than one line: %q", err)
			}
			logMu.Lock()
			defer logMu.Unlock()
			if !strings.Contains(log.String(), "join refused: ") || !strings.Contains(log.String(), tt.reason) {
				t.Fatalf("the refusal was not logged:\n%s", log.String())
			}
		})
	}
	t.Run("the server token still joins a master", func(t *testing.T) {
		fs, _, err := Fetch(ctx, addr, server, nil, nil, Request{Role: "master", Name: "m2", Hosts: []string{"127.0.0.1"}})
		if err != nil || !hasPath(fs, pki.CAKey) {
			t.Fatalf("err = %v, or no CA key in the master bundle", err)
		}
	})

	rotated, _ := pki.GenerateToken(pki.KindAgent)
	current.Store(&rotated)
	t.Run("after rotation the old agent token is refused", func(t *testing.T) {
		_, _, err := Fetch(ctx, addr, agent, nil, nil, Request{Role: "minion", Name: "minion3", NodeSecret: secretB})
		if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "wrong token") {
			t.Fatalf("err = %v, want wrong token", err)
		}
	})
	t.Run("after rotation a joined minion renews with its client certificate, without a token", func(t *testing.T) {
		cert := clientCert(t, joined, pki.KubeletClientCert, pki.KubeletClientKey)
		fs, _, err := Fetch(ctx, addr, agent, nil, &cert, Request{Role: "minion", Name: "minion1", Hosts: []string{"10.0.0.31"}})
		if err != nil || !hasPath(fs, pki.KubeletKubeconfig) {
			t.Fatalf("renewal: %v", err)
		}
		// Its certificate is its own name's only.
		_, _, err = Fetch(ctx, addr, agent, nil, &cert, Request{Role: "minion", Name: "minion2"})
		if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "can't renew minion minion2") {
			t.Fatalf("renewing another name: err = %v", err)
		}
		_, _, err = Fetch(ctx, addr, agent, nil, &cert, Request{Role: "master", Name: "minion1"})
		if !errors.Is(err, ErrForbidden) {
			t.Fatalf("renewing as a master: err = %v", err)
		}
	})
	t.Run("a certificate from another CA is refused at the handshake", func(t *testing.T) {
		other, _ := pki.NewShared(sh.CA.Cert.NotBefore)
		fs, err := pki.Issue(other, pki.Node{Role: "minion", Name: "minion1", APIServer: "https://127.0.0.1:6443"}, sh.CA.Cert.NotBefore)
		if err != nil {
			t.Fatal(err)
		}
		cert := clientCert(t, fs, pki.KubeletClientCert, pki.KubeletClientKey)
		if _, _, err := Fetch(ctx, addr, agent, nil, &cert, Request{Role: "minion", Name: "minion1"}); err == nil {
			t.Fatal("a certificate of another CA renewed")
		}
	})
}

// TestLBToken: lbs join with a token of their own, which obtains nothing else, and an
// lb's certificate renews that lb only; nothing a minion holds makes an lb.
func TestLBToken(t *testing.T) {
	server, _ := pki.GenerateToken(pki.KindServer)
	agent, _ := pki.GenerateToken(pki.KindAgent)
	lbTok, _ := pki.GenerateToken(pki.KindLB)
	addr, sh := startServerWith(t, server, func(c *ServerConfig) {
		c.AgentToken = func() (*pki.Token, bool) { return &agent, true }
		c.LBToken = func() *pki.Token { return &lbTok }
		c.Bind = (&names{m: map[string]string{}}).bind
		c.FailureBudget = 100
	})
	ctx := context.Background()
	lb1 := Request{Role: "lb", Name: "lb1", NodeSecret: secretA}
	fs, _, err := Fetch(ctx, addr, lbTok, nil, nil, lb1)
	if err != nil {
		t.Fatalf("the lb token joining lb1: %v", err)
	}
	lbCert := clientCert(t, fs, pki.EtcdClientCert, pki.EtcdClientKey)
	if cn := lbCert.Leaf.Subject.CommonName; cn != pki.LBNamePrefix+"lb1" {
		t.Fatalf("lb1's certificate has CN %q", cn)
	}
	minionFiles, _, err := Fetch(ctx, addr, agent, nil, nil, Request{Role: "minion", Name: "minion1", NodeSecret: secretB})
	if err != nil {
		t.Fatal(err)
	}
	kubelet := clientCert(t, minionFiles, pki.KubeletClientCert, pki.KubeletClientKey)
	// Every other certificate a minion holds is refused too: it is no node's identity.
	flannel := clientCert(t, minionFiles, pki.FlannelEtcdCert, pki.FlannelEtcdKey)
	// An lb certificate from before lb names were bound, as the agent token got one.
	legacyPEM, legacyKey, err := sh.CA.Issue(pki.LeafSpec{CommonName: pki.LBCommonName, Client: true}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := tls.X509KeyPair(legacyPEM, legacyKey)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("lb1 renews with its certificate", func(t *testing.T) {
		if _, _, err := Fetch(ctx, addr, pki.Token{}, nil, &lbCert, Request{Role: "lb", Name: "lb1"}); err != nil {
			t.Fatal(err)
		}
	})
	refused := []struct {
		name   string
		tok    pki.Token
		cert   *tls.Certificate
		req    Request
		reason string
	}{
		{"the agent token asking for an lb", agent, nil, Request{Role: "lb", Name: "lb2", NodeSecret: secretB}, "can't obtain an lb's certificate"},
		{"the lb token asking for a minion", lbTok, nil, Request{Role: "minion", Name: "minion2", NodeSecret: secretB}, "obtains only an lb's certificate"},
		{"the lb token asking for a master", lbTok, nil, Request{Role: "master", Name: "m2"}, "obtains only an lb's certificate"},
		{"the lb token with lb1's name and another node secret", lbTok, nil, Request{Role: "lb", Name: "lb1", NodeSecret: secretB}, "belongs to another node"},
		{"lb1's certificate renewing lb2", pki.Token{}, &lbCert, Request{Role: "lb", Name: "lb2"}, "can't renew lb lb2"},
		{"lb1's certificate renewing a minion", pki.Token{}, &lbCert, Request{Role: "minion", Name: "lb1"}, "can't renew minion lb1"},
		{"a kubelet's certificate renewing an lb", pki.Token{}, &kubelet, Request{Role: "lb", Name: "minion1"}, "can't renew lb minion1"},
		{"flannel's certificate renewing an lb", pki.Token{}, &flannel, Request{Role: "lb", Name: "lb1"}, "renews nothing"},
		{"an lb certificate from before names were bound", pki.Token{}, &legacy, Request{Role: "lb", Name: "lb1"}, "renews nothing"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Fetch(ctx, addr, tt.tok, nil, tt.cert, tt.req)
			if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("err = %v, want forbidden: %s", err, tt.reason)
			}
		})
	}
}

func TestLegacyTokenJoinsEveryRole(t *testing.T) {
	legacy := pki.Token{Secret: "a-legacy-cluster-token-0123456789"}
	addr, _ := startServerWith(t, legacy, func(c *ServerConfig) {
		c.AgentToken = func() (*pki.Token, bool) { return nil, true }
		c.Bind = (&names{m: map[string]string{}}).bind
	})
	for _, req := range []Request{
		{Role: "minion", Name: "minion1", NodeSecret: secretA},
		{Role: "lb", Name: "lb1", NodeSecret: secretA},
		{Role: "master", Name: "m2"},
		{Role: "minion", Name: "old-minion"}, // a haagent from before node secrets
	} {
		if _, _, err := Fetch(context.Background(), addr, legacy, nil, nil, req); err != nil {
			t.Errorf("%s with the legacy token: %v", req.Role, err)
		}
	}
}

func TestParseRequest(t *testing.T) {
	for _, tt := range []struct {
		body string
		ok   bool
	}{
		{`{"role":"minion","name":"minion1","hosts":["10.0.0.1","n1.example"],"nodeSecret":"` + secretA + `"}`, true},
		{`{"role":"master","name":"m1"}`, true},
		{`{"role":"root","name":"m1"}`, false},
		{`{"role":"minion","name":"Minion1"}`, false},
		{`{"role":"minion","name":"m1","hosts":["bad host"]}`, false},
		{`{"role":"minion","name":"m1","nodeSecret":"short"}`, false},
		{`{"role":"minion","name":"m1","extra":1}`, false},
		{`{"role":"minion","name":"m1"}{}`, false},
		{`[]`, false},
		{``, false},
	} {
		_, err := ParseRequest([]byte(tt.body))
		if (err == nil) != tt.ok {
			t.Errorf("ParseRequest(%s) = %v, want ok=%v", tt.body, err, tt.ok)
		}
	}
}

// FuzzJoinRequest: whatever a client sends, parsing neither panics nor accepts a
// request that could put a path or a bad name into a certificate.
func FuzzJoinRequest(f *testing.F) {
	f.Add([]byte(`{"role":"minion","name":"minion1","hosts":["10.0.0.1"],"nodeSecret":"` + secretA + `"}`))
	f.Add([]byte(`{"role":"lb","name":"lb1"}`))
	f.Add([]byte(`{"role":"master","name":"m1","hosts":["::1","a.b"]}`))
	f.Add([]byte(`{"role":"minion","name":"a\u0000b"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := ParseRequest(body)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("a reason of more than one line: %q", err)
			}
			return
		}
		if !ValidDNSName(req.Name) || strings.ContainsAny(req.Name, "/:\x00") || len(req.Hosts) > maxHosts {
			t.Fatalf("accepted %+v", req)
		}
	})
}

func hasPath(fs []files.File, p string) bool {
	for _, f := range fs {
		if f.Path == p {
			return true
		}
	}
	return false
}

func clientCert(t *testing.T, fs []files.File, certPath, keyPath string) tls.Certificate {
	t.Helper()
	var c, k []byte
	for _, f := range fs {
		switch f.Path {
		case certPath:
			c = f.Data
		case keyPath:
			k = f.Data
		}
	}
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
