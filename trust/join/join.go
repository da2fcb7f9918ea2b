// Package join owns the join service that masters serve on port 9345, which hands a
// node the certificates its token (or, to renew, its current client certificate)
// allows, and the client that nodes use to fetch them.
package join

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/base/statusapi"
	"github.com/haagent/haagent/trust/pki"
)

// DefaultPort is the join service's port on masters (and the lb, which forwards it).
const DefaultPort = 9345

// Request is what a joining node asks for.
type Request struct {
	Role  string   `json:"role"`
	Name  string   `json:"name"`
	Hosts []string `json:"hosts"`
	// NodeSecret is the node's own random secret (minions and lbs): the first node to
	// join with a name binds the name to it, as k3s's node passwords do.
	NodeSecret string `json:"nodeSecret,omitempty"`
}

// Limits of a join request: a request that breaks them is refused before any
// certificate is made.
const (
	maxRequestBytes = 16 << 10
	maxHosts        = 16
	maxNameLen      = 253
	minNodeSecret   = 32
	maxNodeSecret   = 128
)

// ParseRequest decodes and checks a join request body. It is pure, so that it can be
// fuzzed; its error is the one-line reason the node is told.
func ParseRequest(body []byte) (Request, error) {
	if len(body) > maxRequestBytes {
		return Request{}, fmt.Errorf("request larger than %d bytes", maxRequestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req Request
	if err := dec.Decode(&req); err != nil {
		return Request{}, fmt.Errorf("request is not a join request: %v", err)
	}
	if dec.More() {
		return Request{}, errors.New("request has data after the JSON object")
	}
	if !slices.Contains([]string{"master", "minion", "lb"}, req.Role) {
		return Request{}, fmt.Errorf("unknown role %q: master, minion or lb", req.Role)
	}
	if !ValidDNSName(req.Name) {
		return Request{}, fmt.Errorf("name %q is not a DNS name (lower case letters, digits, '-' and '.')", req.Name)
	}
	if len(req.Hosts) > maxHosts {
		return Request{}, fmt.Errorf("%d hosts, at most %d", len(req.Hosts), maxHosts)
	}
	for _, h := range req.Hosts {
		if net.ParseIP(h) == nil && !ValidDNSName(h) {
			return Request{}, fmt.Errorf("host %q is neither an IP nor a DNS name", h)
		}
	}
	if req.NodeSecret != "" {
		if n := len(req.NodeSecret); n < minNodeSecret || n > maxNodeSecret {
			return Request{}, fmt.Errorf("node secret of %d characters, want %d-%d", n, minNodeSecret, maxNodeSecret)
		}
		for _, r := range req.NodeSecret {
			if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
				return Request{}, errors.New("node secret is not lower-case hex")
			}
		}
	}
	return req, nil
}

// ValidDNSName accepts what certificates and Node objects accept, RFC 1123 labels: the
// names the join service takes for nodes and hosts.
func ValidDNSName(s string) bool {
	if s == "" || len(s) > maxNameLen {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// HashNodeSecret is what masters store for a node name: never the secret itself.
func HashNodeSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// ErrNameTaken means another node, with another node secret, joined with this name.
var ErrNameTaken = errors.New("the name belongs to another node")

// Response carries the node's files.
type Response struct {
	Files []files.File `json:"files"`
}

// ErrForbidden means a server refused the token or what it was asked for.
var ErrForbidden = errors.New("the join service refused the token")

// Issuer signs a node's files; the master role supplies it. from is the address the
// request came from, which a minion's serving certificate may name.
type Issuer func(req Request, from string) ([]files.File, error)

// ServerConfig configures the join service.
type ServerConfig struct {
	Address string
	// Token is the server token: it obtains every role's certificates.
	Token pki.Token
	// AgentToken returns the cluster's current agent token, read again on each join so
	// that a rotation applies at once: known is false until the master has read it (from
	// etcd), and tok is nil in a legacy cluster that has none, where Token also joins
	// minions and lbs. Nil means a legacy cluster.
	AgentToken func() (tok *pki.Token, known bool)
	// LBToken returns the cluster's current lb token, read with the agent token: the
	// only token that joins an lb once the cluster has an agent token. Nil, or nil
	// returned, means none.
	LBToken func() *pki.Token
	// Bind ties name to the hash of the node secret of the first minion or lb that joins
	// with it; ErrNameTaken refuses another. Nil binds nothing.
	Bind func(ctx context.Context, name, secretHash string) error
	// MasterNames lists the names reserved for masters, which no minion or lb may take
	// (the etcd members and the masters' --peers). Nil reserves none.
	MasterNames func(ctx context.Context) ([]string, error)
	// Trust returns what the cluster trusts now (pki.Shared.Trust: the CA that signs
	// first, and the other one while the CA rotates). It is served on /v1/ca for nodes to
	// pin or compare with their own, and verifies the renewing nodes' certificates; read
	// again on each request, so that a rotation applies at once.
	Trust func() []byte
	// GetCertificate serves the TLS certificate (reloaded so renewals apply).
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	Issue          Issuer
	Logger         *slog.Logger
	// FailureBudget is how many refused requests one source address may send per
	// FailureWindow before its refusals turn into 429; a request that proves what it
	// asks for is never throttled (see guard.go).
	FailureBudget int
	FailureWindow time.Duration
	// ReadTimeout bounds the reading of a whole request; 0 is DefaultReadTimeout.
	ReadTimeout time.Duration
	// Metrics counts refusals by reason and joins by credential; nil counts into
	// metrics that nobody registered.
	Metrics *Metrics
}

// Server is the join service.
type Server struct {
	cfg      ServerConfig
	ln       net.Listener
	metrics  *Metrics
	throttle *throttle
}

// Listen binds the join port.
func Listen(cfg ServerConfig) (*Server, error) {
	if cfg.FailureBudget == 0 {
		cfg.FailureBudget = 5
	}
	if cfg.FailureWindow == 0 {
		cfg.FailureWindow = time.Minute
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	ln, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("join service: listen on %s: %w", cfg.Address, err)
	}
	return &Server{cfg: cfg, ln: ln, metrics: cfg.Metrics,
		throttle: &throttle{budget: cfg.FailureBudget, window: cfg.FailureWindow, failures: map[string][]time.Time{}}}, nil
}

// Serve blocks until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ca", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(s.cfg.Trust())
	})
	mux.HandleFunc("POST /v1/join", s.handleJoin)
	// A node that has joined renews with its client certificate instead of a token, so
	// rotating the agent token leaves it alone; it is verified against what the cluster
	// trusts at the time of the handshake.
	base := &tls.Config{GetCertificate: s.cfg.GetCertificate, MinVersion: tls.VersionTLS12, ClientAuth: tls.VerifyClientCertIfGiven}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		clientCAs := x509.NewCertPool()
		if !clientCAs.AppendCertsFromPEM(s.cfg.Trust()) {
			return nil, errors.New("join service: no CA certificate to verify renewing nodes with")
		}
		c := base.Clone()
		c.GetConfigForClient, c.ClientCAs = nil, clientCAs
		return c, nil
	}
	srv := &http.Server{
		Handler:   mux,
		TLSConfig: base,
		ErrorLog:  slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
	}
	s.guard(srv)
	if err := statusapi.ServeUntil(ctx, srv, func() error { return srv.ServeTLS(countingListener{s.ln}, "", "") }); err != nil {
		return fmt.Errorf("join service: %w", err)
	}
	return nil
}

// refusal is why a join is refused: the status, the one-line reason the node sees, and
// the metric's label (Reason*).
type refusal struct {
	status int
	reason string
	label  string
}

func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) {
	src, _, _ := net.SplitHostPort(r.RemoteAddr)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
		s.refuse(w, src, Request{}, refusal{http.StatusRequestEntityTooLarge, fmt.Sprintf("request larger than %d bytes", maxRequestBytes), ReasonTooLarge})
		return
	} else if err != nil {
		s.refuse(w, src, Request{}, refusal{http.StatusRequestTimeout, "the request did not arrive in time", ReasonSlowBody})
		return
	}
	req, err := ParseRequest(body)
	if err != nil {
		s.refuse(w, src, req, refusal{http.StatusBadRequest, err.Error(), ReasonMalformed})
		return
	}
	via, ref := s.authorize(r, req)
	if ref != nil {
		s.refuse(w, src, req, *ref)
		return
	}
	if ref := s.checkReserved(r.Context(), req); ref != nil {
		s.refuse(w, src, req, *ref)
		return
	}
	if via == "legacy token" && req.NodeSecret == "" {
		// A node of a haagent from before node secrets, in a cluster not yet migrated:
		// refusing it would break the cluster that the legacy token promises to keep.
		s.cfg.Logger.Warn("join: a node without a node secret joined with the legacy token; its name is not bound",
			"node", req.Name, "role", req.Role)
	} else if via != "certificate" && req.Role != "master" && s.cfg.Bind != nil {
		if req.NodeSecret == "" {
			s.refuse(w, src, req, refusal{http.StatusBadRequest, "a minion or lb must send its node secret", ReasonMalformed})
			return
		}
		if err := s.cfg.Bind(r.Context(), req.Name, HashNodeSecret(req.NodeSecret)); errors.Is(err, ErrNameTaken) {
			s.refuse(w, src, req, refusal{http.StatusForbidden, fmt.Sprintf("the name %q belongs to another node", req.Name), ReasonNameTaken})
			return
		} else if err != nil {
			s.cfg.Logger.Warn("join: could not check the node name", "node", req.Name, "err", err)
			s.refuse(w, src, req, refusal{http.StatusServiceUnavailable, "the node name can't be checked yet; try again", ReasonUnavailable})
			return
		}
	}
	fs, err := s.cfg.Issue(req, src)
	if err != nil {
		s.cfg.Logger.Error("join: issuing certificates failed", "node", req.Name, "role", req.Role, "err", err)
		s.refuse(w, src, req, refusal{http.StatusInternalServerError, "could not issue certificates", ReasonIssueFailed})
		return
	}
	s.metrics.issued.WithLabelValues(via).Inc()
	s.cfg.Logger.Info("join: issued certificates", "node", req.Name, "role", req.Role, "from", src, "via", via, "files", len(fs))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Response{Files: fs})
}

// refuse answers a refused join with its reason, counts it by reason and toward the
// source's budget, and logs it. A source over its budget gets 429 instead, logged once
// per window. A 5xx is not the node's fault: it is counted, not held against the source.
func (s *Server) refuse(w http.ResponseWriter, src string, req Request, ref refusal) {
	if ref.status < http.StatusInternalServerError {
		throttled, crossed := s.throttle.refused(src, time.Now())
		if crossed {
			s.cfg.Logger.Warn("join: a source used up its budget of refused requests; its next refusals are answered 429, not logged",
				"from", src, "budget", s.cfg.FailureBudget, "window", s.cfg.FailureWindow)
		}
		if throttled {
			ref = refusal{http.StatusTooManyRequests, "too many refused attempts from " + src + "; wait a minute", ReasonThrottled}
			s.metrics.refused.WithLabelValues(ref.label).Inc()
			http.Error(w, ref.reason, ref.status)
			return
		}
	}
	s.metrics.refused.WithLabelValues(ref.label).Inc()
	s.cfg.Logger.Warn("join refused: "+ref.reason, "from", src, "node", req.Name, "role", req.Role)
	http.Error(w, ref.reason, ref.status)
}

// authorize says how the request proves what it asks for ("certificate", "server
// token", "agent token", "lb token" or "legacy token"), or why it is refused.
func (s *Server) authorize(r *http.Request, req Request) (string, *refusal) {
	forbid := func(format string, args ...any) (string, *refusal) {
		return "", &refusal{http.StatusForbidden, fmt.Sprintf(format, args...), ReasonNotAllowed}
	}
	wrongToken := &refusal{http.StatusForbidden, "wrong token", ReasonWrongToken}
	unavailable := &refusal{http.StatusServiceUnavailable, "this master does not know the agent token yet; try again", ReasonUnavailable}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		// The TLS layer has verified the chain to the cluster CA.
		role, name := CertIdentity(r.TLS.PeerCertificates[0])
		switch {
		case role == "" || name == "":
			// An lb certificate from before lb names were bound names no lb.
			return forbid("the client certificate %q renews nothing", r.TLS.PeerCertificates[0].Subject.CommonName)
		case role != req.Role || name != req.Name:
			return forbid("the certificate of %s %s can't renew %s %s", role, name, req.Role, req.Name)
		}
		return "certificate", nil
	}
	secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return "", wrongToken
	}
	agent, known := (*pki.Token)(nil), true
	if s.cfg.AgentToken != nil {
		agent, known = s.cfg.AgentToken()
	}
	var lb *pki.Token
	if s.cfg.LBToken != nil {
		lb = s.cfg.LBToken()
	}
	switch {
	case s.cfg.Token.SecretEqual(secret):
		if req.Role == "master" {
			return "server token", nil
		}
		if !known {
			return "", unavailable
		}
		if agent != nil {
			return forbid("this is the server token; minions join with the agent token, lbs with the lb token, from 'haagent token show' on a master")
		}
		s.cfg.Logger.Warn("join: a minion or lb joined with the single legacy token; set an agent token with 'haagent token rotate --agent'",
			"node", req.Name, "role", req.Role)
		return "legacy token", nil
	case agent != nil && agent.SecretEqual(secret):
		switch req.Role {
		case "master":
			return forbid("the agent token can't obtain a master's certificates; masters join with the server token")
		case "lb":
			return forbid("the agent token can't obtain an lb's certificate; lbs join with the lb token from 'haagent token show --kind=lb' on a master")
		}
		return "agent token", nil
	case lb != nil && lb.SecretEqual(secret):
		if req.Role != "lb" {
			return forbid("the lb token obtains only an lb's certificate")
		}
		return "lb token", nil
	case !known:
		return "", unavailable
	}
	return "", wrongToken
}

// CertIdentity is whose a client certificate is, and so what it may renew: a
// kubelet's client certificate its minion, an lb's certificate that lb; role is "" for
// anything else. An lb certificate from before lb names were bound (pki.LBCommonName)
// is an lb's with name "", and renews nothing.
func CertIdentity(c *x509.Certificate) (role, name string) {
	if n, ok := strings.CutPrefix(c.Subject.CommonName, "system:node:"); ok && slices.Equal(c.Subject.Organization, []string{"system:nodes"}) {
		return "minion", n
	}
	if n, ok := strings.CutPrefix(c.Subject.CommonName, pki.LBNamePrefix); ok {
		return "lb", n
	}
	if c.Subject.CommonName == pki.LBCommonName {
		return "lb", ""
	}
	return "", ""
}

// Fetch asks one server (host:port) for the node's files. A node that holds no CA
// yet (trusted is nil) first fetches the cluster's CAs without trusting them and keeps
// those that match the token's pin; a node that has joined trusts the CAs it holds
// (trusted: its ca.crt), so that a rotated CA, which its token may not pin, leaves it
// alone. Only then does it send the secret, over a connection verified against those
// CAs, to a server that proves it is a master (masterServer). With cert, a node that
// has joined proves who it is with its client certificate instead, and the secret is
// not sent. It checks what it gets (checkBundle) and gives each file the mode the node
// chooses (pki.FileMode). It returns the CAs it verified the server with.
func Fetch(ctx context.Context, server string, token pki.Token, trusted []byte, cert *tls.Certificate, req Request) ([]files.File, []byte, error) {
	host, _, err := net.SplitHostPort(server)
	if err != nil {
		return nil, nil, err
	}
	anchors, err := anchorsFor(ctx, server, token, trusted)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	var anchorPEM []byte
	for _, c := range anchors {
		pool.AddCert(c)
		anchorPEM = append(anchorPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	var verifiedBy *x509.Certificate
	tlsc := &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || len(cs.VerifiedChains) == 0 {
				return errors.New("the server sent no certificate")
			}
			chain := cs.VerifiedChains[0]
			verifiedBy = chain[len(chain)-1]
			return masterServer(cs.PeerCertificates[0])
		}}
	if cert != nil {
		tlsc.Certificates = []tls.Certificate{*cert}
	}
	verified := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsc},
		// The secret goes to the server that was verified, and nowhere it points.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+server+"/v1/join", bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if cert == nil {
		hreq.Header.Set("Authorization", "Bearer "+token.Secret)
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := verified.Do(hreq)
	if err != nil {
		return nil, nil, fmt.Errorf("join via %s: %w", server, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusForbidden, http.StatusTooManyRequests, http.StatusBadRequest:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, nil, fmt.Errorf("%s: %w: %s (%s)", server, ErrForbidden, firstLine(b), resp.Status)
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, nil, fmt.Errorf("join via %s: %s: %s", server, resp.Status, strings.TrimSpace(string(b)))
	}
	var out Response
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, nil, fmt.Errorf("join via %s: %w", server, err)
	}
	if err := checkBundle(out.Files, verifiedBy); err != nil {
		return nil, nil, fmt.Errorf("join via %s: refusing the files: %w", server, err)
	}
	return out.Files, anchorPEM, nil
}

// CA fetches what a join service says the cluster trusts (/v1/ca), without trusting
// it: a node compares it with its own ca.crt to learn that the CA rotates, and then
// renews over a verified connection.
func CA(ctx context.Context, server string) ([]byte, error) {
	return get(ctx, insecureClient(), "https://"+server+"/v1/ca")
}

func insecureClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // what it fetches is checked, or only compared
		// One request per client: a node asks every TrustCheckEvery, and an idle
		// connection per ask would wait for the join service's idle timeout to close.
		DisableKeepAlives: true,
	}}
}

// anchorsFor are the CAs the join server must prove itself with: trusted, or else
// those of the server's CAs that the token pins (all of them, with an unpinned token).
func anchorsFor(ctx context.Context, server string, token pki.Token, trusted []byte) ([]*x509.Certificate, error) {
	if trusted != nil {
		cas, err := pki.ParseCerts(trusted)
		if err != nil {
			return nil, fmt.Errorf("the node's own CA: %w", err)
		}
		return cas, nil
	}
	caPEM, err := CA(ctx, server)
	if err != nil {
		return nil, err
	}
	served, err := pki.ParseCerts(caPEM)
	if err != nil {
		return nil, fmt.Errorf("CA from %s: %w", server, err)
	}
	var anchors []*x509.Certificate
	var mismatch error
	for _, c := range served {
		if err := token.CheckCA(c.Raw); err != nil {
			mismatch = err
			continue
		}
		anchors = append(anchors, c)
	}
	if len(anchors) == 0 {
		return nil, fmt.Errorf("%s: %w; if the cluster's CA was rotated, take the new token from 'haagent token show' on a master", server, mismatch)
	}
	return anchors, nil
}

// masterServer refuses a server certificate that a non-master holds: the CA has
// verified the chain and the name, but before the kubelet-serving CA a minion's
// kubelet serving certificate came from the cluster CA too, with the names its join
// asked for, and such a certificate may still be valid.
func masterServer(leaf *x509.Certificate) error {
	if role, _ := CertIdentity(leaf); role != "" || strings.HasPrefix(leaf.Subject.CommonName, "system:") ||
		slices.Contains(leaf.Subject.Organization, "system:nodes") {
		return fmt.Errorf("the server's certificate %q belongs to a node, not a master", leaf.Subject.CommonName)
	}
	return nil
}

// checkBundle checks the files a join service sent, and sets their modes: only paths
// under etc/kubernetes/, a ca.crt that holds the CA the connection was verified with
// (the pinned one, or one the node trusts), and kubeconfigs that trust what ca.crt
// holds and nothing else.
func checkBundle(fs []files.File, ca *x509.Certificate) error {
	var trust []*x509.Certificate
	for i, f := range fs {
		if strings.Contains(f.Path, "..") || strings.HasPrefix(f.Path, "/") || !strings.HasPrefix(f.Path, "etc/kubernetes/") {
			return fmt.Errorf("file path %q", f.Path)
		}
		fs[i].Mode = pki.FileMode(f.Path)
		if f.Path == pki.CACert {
			var err error
			if trust, err = onlyCerts(f.Data); err != nil {
				return fmt.Errorf("%s: %w", f.Path, err)
			}
		}
	}
	if trust == nil {
		return fmt.Errorf("no %s", pki.CACert)
	}
	if ca == nil || !slices.ContainsFunc(trust, ca.Equal) {
		return fmt.Errorf("%s does not hold the CA the server proved itself with", pki.CACert)
	}
	for _, f := range fs {
		if !strings.HasSuffix(f.Path, ".kubeconfig") {
			continue
		}
		data, err := pki.KubeconfigCA(f.Data)
		if err != nil {
			return fmt.Errorf("%s: %w", f.Path, err)
		}
		got, err := onlyCerts(data)
		if err != nil || !slices.EqualFunc(got, trust, (*x509.Certificate).Equal) {
			return fmt.Errorf("%s trusts other CAs than %s", f.Path, pki.CACert)
		}
	}
	return nil
}

// onlyCerts parses PEM data that holds certificates and nothing else.
func onlyCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		b, rest := pem.Decode(data)
		if b == nil {
			if len(out) == 0 || len(bytes.TrimSpace(data)) != 0 {
				return nil, errors.New("not only PEM certificates")
			}
			return out, nil
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if b.Type != "CERTIFICATE" || err != nil {
			return nil, errors.New("not only PEM certificates")
		}
		out, data = append(out, c), rest
	}
}

// firstLine keeps a server's reason to one line, whatever it sent.
func firstLine(b []byte) string {
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return line
}

func get(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}
