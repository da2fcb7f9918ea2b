package lb

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haagent/haagent/base/statusapi"
	"github.com/haagent/haagent/embed/loadbalancer"
	"github.com/haagent/haagent/embed/vip"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/test/framework/syncbuf"
)

func TestPrintStatus(t *testing.T) {
	var b bytes.Buffer
	PrintStatus(&b, StatusDoc{Role: "lb", Backends: []loadbalancer.BackendStatus{
		{Port: 6443, Address: "10.0.0.11:6443", State: loadbalancer.StateHealthy, Active: 12, Total: 3456},
		{Port: 6443, Address: "10.0.0.12:6443", State: loadbalancer.StateDown, LastError: "unreachable: dial tcp 10.0.0.12:6443: i/o timeout"},
	}})
	want := `PORT  BACKEND         STATE    ACTIVE  TOTAL  LAST ERROR
6443  10.0.0.11:6443  healthy  12      3456   -
6443  10.0.0.12:6443  down     0       0      unreachable: dial tcp 10.0.0.12:6443: i/o timeout
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestPrintStatusWithVIP(t *testing.T) {
	var b bytes.Buffer
	since := time.Date(2026, 12, 1, 18, 34, 21, 0, time.UTC)
	PrintStatus(&b, StatusDoc{Role: "lb", VIP: &vip.Status{Address: "10.0.0.10/24", Interface: "eth0",
		Holder: "lb1", Holding: true, Since: &since, Takeovers: 2}})
	PrintStatus(&b, StatusDoc{Role: "lb", VIP: &vip.Status{Address: "10.0.0.10/24", Interface: "eth0", LastError: "etcd session: context deadline exceeded"}})
	want := `VIP 10.0.0.10/24 on eth0: holder lb1 (this host: true) since 2026-12-01T18:34:21Z, takeovers by this host 2
PORT  BACKEND  STATE  ACTIVE  TOTAL  LAST ERROR
VIP 10.0.0.10/24 on eth0: holder none (this host: false) since -, takeovers by this host 0
VIP last error: etcd session: context deadline exceeded
PORT  BACKEND  STATE  ACTIVE  TOTAL  LAST ERROR
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestRunBuiltin runs the role in front of two fake masters on 127.0.0.2 and
// 127.0.0.3, which share a port as real masters do.
func TestRunBuiltin(t *testing.T) {
	m1, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on loopback: %v", err)
	}
	defer m1.Close()
	port := m1.Addr().(*net.TCPAddr).Port
	if loadbalancer.DefaultCheckKind(port) != loadbalancer.CheckTCP {
		t.Skipf("port %d has a special check", port)
	}
	m2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.3", strconv.Itoa(port)))
	if err != nil {
		t.Skipf("port %d taken on 127.0.0.3: %v", port, err)
	}
	defer m2.Close()
	for name, ln := range map[string]net.Listener{"m1": m1, "m2": m2} {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				io.WriteString(c, name+"\n")
				c.Close()
			}
		}()
	}

	c := NewConfig()
	c.Name = "lb1"
	c.Masters = []string{"127.0.0.2", "127.0.0.3"}
	c.Ports = []int{port}
	c.ListenAddress = "127.0.0.1"
	c.StatusAddress = "127.0.0.1:0"
	c.Insecure = true
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	reg := prometheus.NewRegistry()
	l, err := New(c, node.Deps{Logger: slog.New(slog.NewTextHandler(logs, nil)), Registerer: reg, Gatherer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	statusRE := regexp.MustCompile(`msg="\[ready\] lb ready".* status=(\S+)`)
	var statusAddr string
	deadline := time.Now().Add(10 * time.Second)
	for statusAddr == "" {
		if m := statusRE.FindStringSubmatch(logs.String()); m != nil {
			statusAddr = m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 10s:\n%s", logs)
		}
		time.Sleep(5 * time.Millisecond)
	}

	conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	name, err := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if name != "m1\n" {
		t.Fatalf("served by %q, %v; want m1", name, err)
	}

	var doc StatusDoc
	if err := statusapi.Fetch(ctx, statusAddr, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Role != "lb" || doc.Name != "lb1" || len(doc.Backends) != 2 || doc.Backends[0].State != loadbalancer.StateHealthy {
		t.Errorf("status %+v", doc)
	}
	resp, err := http.Get("http://" + statusAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz: %s", resp.Status)
	}
	resp, err = http.Get("http://" + statusAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `haagent_lb_backend_up{backend="127.0.0.2:`+strconv.Itoa(port)+`",port="`+strconv.Itoa(port)+`"} 1`) {
		t.Errorf("/metrics lacks the up gauge:\n%s", body)
	}
}

// TestNginxAcceptsConfig runs nginx -t on the rendered config where nginx and its
// stream module are installed (Debian's layout).
func TestNginxAcceptsConfig(t *testing.T) {
	nginx, err := exec.LookPath("nginx")
	const module = "/usr/lib/nginx/modules/ngx_stream_module.so"
	if err != nil {
		t.Skip("no nginx")
	}
	dir := t.TempDir()
	for _, policy := range []string{"failover", "least-conn"} {
		c := validConfig()
		c.Policy = policy
		c.ListenAddress = "127.0.0.1"
		c.Ports = []int{freePort(t), freePort(t)}
		stream := filepath.Join(dir, policy+".conf")
		if err := os.WriteFile(stream, RenderNginx(c), 0o644); err != nil {
			t.Fatal(err)
		}
		main := "pid " + dir + "/nginx.pid;\nerror_log " + dir + "/error.log;\nevents {}\ninclude " + stream + ";\n"
		if _, err := os.Stat(module); err == nil {
			main = "load_module " + module + ";\n" + main
		}
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(main), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(nginx, "-t", "-q", "-p", dir, "-c", conf).CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "unknown directive \"stream\"") {
				t.Skip("nginx lacks the stream module")
			}
			t.Errorf("%s: nginx -t: %v\n%s", policy, err, out)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
