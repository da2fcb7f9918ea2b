// Command lab runs the walkthrough's lab on this machine (root, Linux), with a VIP over
// two lbs and a node-local lb on minion2 (package test/framework/sixhost):
//
//	go run ./test/tools/lab up                 # boot lb1-2, master1-3, minion1-2; install haagent from its .deb; wait for Ready minions
//	go run ./test/tools/lab kubectl get nodes  # the real kubectl 1.37.2 on master3, through the VIP
//	go run ./test/tools/lab halt master1       # the walkthrough's `vagrant halt master1` (kill: a power cut)
//
// The lab outlives the command: every later command reopens it. See `go run ./test/tools/lab help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/haagent/haagent/test/framework/conformance"
	"github.com/haagent/haagent/test/framework/hosts"
	"github.com/haagent/haagent/test/framework/sixhost"
)

const usage = `usage: go run ./test/tools/lab COMMAND

  up                 boot the seven hosts, install haagent from its .deb, wait until both minions are Ready
  down               remove everything the lab made
  status             each host's state, haagent's state, who holds the VIP, and the nodes
  kubectl ARGS...    the real kubectl on master3 with the admin kubeconfig, through the VIP
                     (a local -f FILE is copied in)
  exec HOST CMD...   run a command on a host (lb1-2, master1-3, minion1-2)
  halt HOST          shut a host down (systemctl poweroff, as vagrant halt), then take its link down
  kill HOST          stop a host at once and take its link down (a power cut: vagrant halt --force)
  start HOST         boot a halted or killed host again, with its disk
  cut HOST           blackhole a host's link (no resets)
  heal HOST          restore a host's link
  conformance [FLAGS]
                     Kubernetes' conformance suite on the lab, offline, through the VIP
                     (make conformance); -h lists its flags
`

// exitUsage is the exit code for a command line that can't be run.
const exitUsage = 2

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:])
	var ue usageError
	switch {
	case err == nil:
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "lab: %v\n", err)
		os.Exit(exitUsage)
	default:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintf(os.Stderr, "lab: %v\n", err)
		os.Exit(1)
	}
}

type usageError struct{ error }

func run(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Print(usage)
		if len(args) == 0 {
			return usageError{errors.New("a command is required")}
		}
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("the lab needs root (network namespaces, overlayfs, systemd-nspawn)")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "up":
		return up(ctx)
	case "down":
		return hosts.Remove(ctx, sixhost.ID)
	}
	l, err := open(ctx)
	if err != nil {
		return err
	}
	switch cmd {
	case "status":
		return status(ctx, l)
	case "conformance":
		return runConformance(ctx, l, rest)
	case "kubectl":
		return kubectl(ctx, l, rest)
	case "exec":
		if len(rest) < 2 {
			return usageError{errors.New("exec: want HOST CMD...")}
		}
		h, err := host(l, rest[0])
		if err != nil {
			return err
		}
		c := h.Command(ctx, rest[1:]...)
		c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
		return c.Run()
	case "halt", "kill", "start", "cut", "heal":
		if len(rest) != 1 {
			return usageError{fmt.Errorf("%s: want one HOST", cmd)}
		}
		h, err := host(l, rest[0])
		if err != nil {
			return err
		}
		switch cmd {
		case "halt":
			return h.Halt(ctx, 2*time.Minute)
		case "kill":
			return h.Kill()
		case "start":
			if err := h.Start(ctx); err != nil {
				return err
			}
			wctx, cancel := context.WithTimeout(ctx, hosts.BootTimeout)
			defer cancel()
			return h.WaitRunning(wctx)
		case "cut":
			return h.Blackhole()
		default:
			return h.Heal()
		}
	}
	return usageError{fmt.Errorf("unknown command %q; see go run ./test/tools/lab help", cmd)}
}

func open(ctx context.Context) (*sixhost.Lab, error) {
	hl, err := hosts.Open(ctx, sixhost.ID)
	if err != nil {
		return nil, fmt.Errorf("no lab is up (%v): run go run ./test/tools/lab up", err)
	}
	return sixhost.Reopen(hl)
}

func host(l *sixhost.Lab, name string) (*hosts.Host, error) {
	h := l.Host(name)
	if h == nil {
		var names []string
		for _, s := range sixhost.Specs {
			names = append(names, s.Name)
		}
		return nil, usageError{fmt.Errorf("no host %q; the hosts are %s", name, strings.Join(names, ", "))}
	}
	return h, nil
}

// up makes the lab, or does nothing if a complete one runs; a lab that a killed run
// left half made, or whose hosts died, is removed first.
func up(ctx context.Context) error {
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	if hl, err := hosts.Open(ctx, sixhost.ID); err == nil {
		l, rerr := sixhost.Reopen(hl)
		if herr := hl.Healthy(); herr == nil && rerr == nil && l.Complete() {
			fmt.Println("lab: already up")
			printHowTo()
			return nil
		} else {
			logf("lab: removing a lab that is not whole (%v)", errors.Join(herr, rerr))
		}
	}
	if err := hosts.Remove(ctx, sixhost.ID); err != nil {
		return err
	}
	start := time.Now()
	work, err := os.MkdirTemp("", "haagent-lab-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	logf("lab: building the haagent .deb")
	deb, err := sixhost.BuildDeb(ctx, filepath.Join(work, "dist"))
	if err != nil {
		return err
	}
	cfg := sixhost.DefaultConfig()
	cfg.Deb, cfg.WorkDir, cfg.Logf = deb, work, logf
	if err := cfg.Check(); err != nil {
		return err
	}
	hl, err := hosts.Create(ctx, sixhost.ID, hosts.LabOptions{Subnet: sixhost.Subnet, Logf: logf})
	if err != nil {
		return err
	}
	l, err := sixhost.Boot(ctx, hl)
	if err != nil {
		return errors.Join(err, hl.Teardown())
	}
	logf("lab: %d hosts booted; installing", len(sixhost.Specs))
	if err := l.Install(ctx, cfg); err != nil {
		return fmt.Errorf("%w\n(the lab is left as it is, to look at: go run ./test/tools/lab status; go run ./test/tools/lab down removes it)", err)
	}
	fmt.Printf("lab: up in %s\n", time.Since(start).Round(time.Second))
	printHowTo()
	return nil
}

func printHowTo() {
	fmt.Print(`
The walkthrough, with no single point of failure in front of the masters: lb1 10.78.0.11
and lb2 .12 share the VIP .10; master1-3 .21-.23; minion1 .31 uses the VIP, minion2 .32
runs its own node-local lb.

  go run ./test/tools/lab kubectl get nodes -o wide
  go run ./test/tools/lab kill master1
  go run ./test/tools/lab kubectl create -f nginx-pod.yaml     # image: nginx, from lb1's registry
  go run ./test/tools/lab kubectl get pods -o wide              # Running, with a 172.30.x.y address
  go run ./test/tools/lab exec lb1 haagent status               # who holds the VIP
  go run ./test/tools/lab kill lb1                              # lb2 takes the VIP
  go run ./test/tools/lab exec minion2 haagent status           # its node-local lb and master list
  go run ./test/tools/lab start master1
  go run ./test/tools/lab down
`)
}

func status(ctx context.Context, l *sixhost.Lab) error {
	for _, s := range sixhost.Specs {
		h := l.Host(s.Name)
		state := "killed"
		if h.Running() {
			out, _ := h.Exec(ctx, "systemctl", "is-active", "haagent")
			state = "running, haagent " + strings.TrimSpace(out)
		}
		fmt.Printf("%-8s %-7s %-12s %s\n", s.Name, s.Role, s.IP, state)
	}
	holders, err := l.VIPHolders(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("\nVIP %s held by: %s\n\n", sixhost.VIP, orNobody(holders))
	out, err := l.Kubectl(ctx, "get", "nodes", "-o", "wide")
	fmt.Print(out)
	return err
}

// kubectl runs kubectl on the lab's client host; a -f FILE that exists here is copied
// into it first, and stdin is passed through (for -f -).
func kubectl(ctx context.Context, l *sixhost.Lab, args []string) error {
	client := l.Host(sixhost.Client)
	args = append([]string(nil), args...)
	for i := 0; i < len(args); i++ {
		a := args[i]
		var file string
		switch {
		case (a == "-f" || a == "--filename") && i+1 < len(args):
			i++
			file = args[i]
		case strings.HasPrefix(a, "--filename="), strings.HasPrefix(a, "-f="):
			file = a[strings.IndexByte(a, '=')+1:]
		default:
			continue
		}
		if file == "-" || strings.Contains(file, "://") {
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return usageError{fmt.Errorf("kubectl -f %s: %w", file, err)}
		}
		dest := "/var/tmp/lab-kubectl/" + filepath.Base(file)
		if err := client.WriteFile(dest, b, 0o644); err != nil {
			return err
		}
		if strings.Contains(a, "=") {
			args[i] = a[:strings.IndexByte(a, '=')+1] + dest
		} else {
			args[i] = dest
		}
	}
	c := l.KubectlCommand(ctx, args...)
	c.Stdin, c.Stdout, c.Stderr = stdinOrNothing(), os.Stdout, os.Stderr
	return c.Run()
}

func orNobody(names []string) string {
	if len(names) == 0 {
		return "nobody"
	}
	return strings.Join(names, ", ")
}

func stdinOrNothing() io.Reader {
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice == 0 {
		return os.Stdin
	}
	return nil
}

// runConformance pushes the suite's images, runs the suite on the lab and prints its
// summary; it fails when a spec failed.
func runConformance(ctx context.Context, l *sixhost.Lab, args []string) error {
	fs := flag.NewFlagSet("conformance", flag.ContinueOnError)
	o := conformance.Options{Out: os.Stdout}
	fs.StringVar(&o.Programs, "programs", conformance.DefaultPrograms, "dir of e2e.test, ginkgo and the test programs (scripts/build-kube.sh conformance)")
	fs.StringVar(&o.Focus, "focus", conformance.Focus, "ginkgo's --focus: the specs to run")
	fs.StringVar(&o.Skip, "skip", "", "ginkgo's --skip: specs not to run")
	fs.IntVar(&o.Procs, "procs", 4, "ginkgo's --procs: parallel processes (Serial specs run alone at the end)")
	fs.DurationVar(&o.Timeout, "timeout", 3*time.Hour, "bound on the whole suite")
	fs.StringVar(&o.ReportDir, "report", "dist/conformance", "where junit.xml is kept, on this machine")
	halt := fs.String("halt", "", "a host to halt during the run (vagrant halt), such as master1")
	haltAfter := fs.Duration("halt-after", 5*time.Minute, "how long into the run -halt halts its host")
	kill := fs.Bool("kill", false, "with -halt: cut the host's power (lab kill) instead of shutting it down as vagrant halt does")
	noPush := fs.Bool("no-push", false, "skip building and pushing the images (they are in lb1's registry already)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{fmt.Errorf("conformance: %w", err)}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("conformance: unexpected argument %q; flags only (-h lists them)", fs.Arg(0))}
	}
	if o.Procs < 1 {
		return usageError{fmt.Errorf("conformance: -procs=%d: want 1 or more", o.Procs)}
	}
	if *halt != "" {
		h, err := host(l, *halt)
		if err != nil {
			return err
		}
		after := *haltAfter
		o.During = func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(after):
			}
			if *kill {
				fmt.Fprintf(os.Stderr, "conformance: killing %s (a power cut), %s into the run\n", *halt, after)
				return h.Kill()
			}
			fmt.Fprintf(os.Stderr, "conformance: halting %s (systemctl poweroff), %s into the run\n", *halt, after)
			start := time.Now()
			err := h.Halt(ctx, 2*time.Minute)
			fmt.Fprintf(os.Stderr, "conformance: %s halted in %s\n", *halt, time.Since(start).Round(100*time.Millisecond))
			return err
		}
	}
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	if !*noPush {
		work, err := os.MkdirTemp("", "haagent-conformance-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(work)
		if err := conformance.PushImages(ctx, l, o.Programs, work, logf); err != nil {
			return err
		}
	}
	s, err := conformance.Run(ctx, l, o)
	s.Print(os.Stdout)
	if o.ReportDir != "" {
		fmt.Printf("conformance: JUnit report in %s\n", filepath.Join(o.ReportDir, "junit.xml"))
	}
	if err != nil {
		return err
	}
	if s.Failed > 0 {
		return fmt.Errorf("conformance: %d of %d specs failed", s.Failed, s.Run)
	}
	return nil
}
