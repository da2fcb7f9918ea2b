// Command nginx stands in for the nginx image in the lab's registry, so that a pod
// manifest with `image: nginx` runs without the internet: it serves nginx's welcome page
// (naming the pod's hostname, so replicas can be told apart), answers /healthz, and logs
// one line per request to stdout for `kubectl logs`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// defaultAddr is nginx's own: a pod that expects nginx talks to port 80.
const defaultAddr = ":80"

func main() {
	addr := defaultAddr
	if a := os.Getenv("NGINX_ADDR"); a != "" {
		addr = a
	}
	flag.StringVar(&addr, "addr", addr, "listen address (env NGINX_ADDR)")
	// The image has no shell and no curl; -get lets a pod of it be the client in tests
	// (kubectl exec POD -- /nginx -get http://10.254.0.10/).
	get := flag.String("get", "", "fetch this URL, print its body and exit (non-zero on a failure or a non-2xx answer)")
	// A stream for tests of kubectl logs -f and a streaming kubectl exec: numbered
	// lines, so that a reader can tell a gap from a slow writer.
	tick := flag.Duration("tick", 0, "print a numbered line this often until killed, instead of serving")
	// The image has no nslookup either: -lookup tests the pod's cluster DNS with Go's
	// own resolver, which reads the pod's /etc/resolv.conf (search list and ndots).
	lookup := flag.String("lookup", "", "resolve this name, print its addresses and exit (non-zero when it does not resolve)")
	flag.Parse()
	if *lookup != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupHost(ctx, *lookup)
		if err != nil {
			fmt.Fprintln(os.Stderr, "nginx -lookup:", err)
			os.Exit(1)
		}
		fmt.Println(strings.Join(addrs, " "))
		return
	}
	if *tick > 0 {
		for i := 1; ; i++ {
			fmt.Printf("tick %d\n", i)
			time.Sleep(*tick)
		}
	}
	if *get != "" {
		if err := fetch(*get); err != nil {
			fmt.Fprintln(os.Stderr, "nginx -get:", err)
			os.Exit(1)
		}
		return
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, addr, log.New(os.Stdout, "", log.LstdFlags)); err != nil {
		fmt.Fprintln(os.Stderr, "nginx:", err)
		os.Exit(1)
	}
}

func fetch(url string) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

func run(ctx context.Context, addr string, logger *log.Logger) error {
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	// The real address, so that a caller that asked for port 0 learns which one it got.
	logger.Printf("listening on %s", ln.Addr())

	srv := &http.Server{
		Handler:           logRequests(logger, handler(host)),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", addr, err)
	case <-ctx.Done():
	}
	// Well inside the kubelet's default grace period of 30 s.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", addr, err)
	}
	logger.Printf("stopped")
	return nil
}

func handler(host string) http.Handler {
	page := fmt.Sprintf(welcome, html.EscapeString(host))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, page)
	})
	return mux
}

const welcome = `<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>Served by pod %s.</p>
<p>This is haagent's stand-in for the nginx image, built for a lab without the internet.</p>
</body>
</html>
`

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	n, err := s.ResponseWriter.Write(b)
	s.bytes += n
	return n, err
}

// logRequests writes an access-log line in the spirit of nginx's combined format.
func logRequests(logger *log.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		logger.Printf("%s %q %d %d %q", r.RemoteAddr, r.Method+" "+r.URL.RequestURI()+" "+r.Proto, rec.status, rec.bytes, r.UserAgent())
	})
}
