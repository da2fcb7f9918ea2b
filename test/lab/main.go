// Command lab runs the walkthrough's lab on this machine (root, Linux), with a VIP over
// two lbs and a node-local lb on minion2 (package test/sixhost):
//
//	go run ./test/lab up                 # boot lb1-2, master1-3, minion1-2; install haagent from its .deb; wait for Ready minions
//	go run ./test/lab kubectl get nodes  # the real kubectl 1.37.2 on master3, through the VIP
//	go run ./test/lab kill master1       # the walkthrough's `vagrant halt master1`
//
// The lab outlives the command: every later command reopens it. See `go run ./test/lab help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/haagent/haagent/test/hosts"
	"github.com/haagent/haagent/test/sixhost"
)

const usage = `usage: go run ./test/lab COMMAND

  up                 boot the seven hosts, install haagent from its .deb, wait until both minions are Ready
  down               remove everything the lab made
  status             each host's state, haagent's state, who holds the VIP, and the nodes
  kubectl ARGS...    the real kubectl on master3 with the admin kubeconfig, through the VIP
                     (a local -f FILE is copied in)
  exec HOST CMD...   run a command on a host (lb1-2, master1-3, minion1-2)
  kill HOST          stop a host at once and take its link down (vagrant halt)
  start HOST         boot a killed host again, with its disk
  cut HOST           blackhole a host's link (no resets)
  heal HOST          restore a host's link
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
	case "kill", "start", "cut", "heal":
		if len(rest) != 1 {
			return usageError{fmt.Errorf("%s: want one HOST", cmd)}
		}
		h, err := host(l, rest[0])
		if err != nil {
			return err
		}
		switch cmd {
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
	return usageError{fmt.Errorf("unknown command %q; see go run ./test/lab help", cmd)}
}

func open(ctx context.Context) (*sixhost.Lab, error) {
	hl, err := hosts.Open(ctx, sixhost.ID)
	if err != nil {
		return nil, fmt.Errorf("no lab is up (%v): run go run ./test/lab up", err)
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
		return fmt.Errorf("%w\n(the lab is left as it is, to look at: go run ./test/lab status; go run ./test/lab down removes it)", err)
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

  go run ./test/lab kubectl get nodes -o wide
  go run ./test/lab kill master1
  go run ./test/lab kubectl create -f nginx-pod.yaml     # image: nginx, from lb1's registry
  go run ./test/lab kubectl get pods -o wide              # Running, with a 172.30.x.y address
  go run ./test/lab exec lb1 haagent status               # who holds the VIP
  go run ./test/lab kill lb1                              # lb2 takes the VIP
  go run ./test/lab exec minion2 haagent status           # its node-local lb and master list
  go run ./test/lab start master1
  go run ./test/lab down
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
