// Command pause is the lab's pod sandbox image (registry.k8s.io/pause): PID 1 of every
// pod, it holds the pod's namespaces open, reaps the orphans that the kernel hands it, and
// exits 0 on SIGTERM or SIGINT.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	// A child that died before Notify took effect sent its SIGCHLD while the signal was
	// still ignored, so reap once now or its zombie would stay for the pod's lifetime.
	reap()
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "pause: got %v, exiting\n", sig)
		os.Exit(0)
	}
}

// reap collects every exited child; SIGCHLDs coalesce, so one signal may stand for many.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
